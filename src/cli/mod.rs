//! What each CLI command does: loads what it needs, calls into the library
//! and prints the result for people (tables, progress bars, summaries) or
//! scripts (`--json`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytesize::ByteSize;

use crate::cli::args::{Command, GetArgs, Interrupted, UsageError};

#[cfg(target_os = "linux")]
mod agent;
pub mod args;
pub mod generate;
mod identities;
mod output;
mod send;

use identities::connect;
use output::{Bar, plural, print_json, print_table};

/// Runs one command to completion.
pub fn run(command: Command, logging: &crate::logging::Logging) -> Result<()> {
    let serve = matches!(command, Command::Serve(_));
    // The agent serves many connections at once. Any other command is one
    // operation on one connection: a worker pool would only make its
    // wake-ups hop between threads (file reading runs on a blocking thread
    // of its own either way).
    let mut builder = if serve {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Where a send is, for what an interruption leaves behind.
    let sending = Sending::default();
    if serve {
        // The agent handles SIGINT itself, as a graceful shutdown.
        return runtime.block_on(dispatch(command, logging, &sending));
    }
    // Elsewhere Ctrl-C drops the running operation, which removes its
    // partial files, instead of killing the process in the middle.
    runtime.block_on(async {
        // Registered before any work starts, so no early Ctrl-C is missed.
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot watch for Ctrl-C")?;
        tokio::select! {
            result = dispatch(command, logging, &sending) => result,
            _ = interrupt.recv() => Err(Interrupted {
                sending: sending.active.load(Ordering::SeqCst),
                resumable: sending.resumable.load(Ordering::SeqCst),
                committing: sending.committing.load(Ordering::SeqCst),
            }
            .into()),
        }
    })
}

/// The agent's commands in a build for another system than Linux.
#[cfg(not(target_os = "linux"))]
fn agent_only(command: &str) -> anyhow::Error {
    UsageError(format!(
        "`fileagent {command}` belongs to the agent, which runs on Linux beside the printer; \
         this build is the workstation's (pair with an agent there: `fileagent pair HOST CODE`)"
    ))
    .into()
}

/// What to do after an upload stopped that the agent can resume.
const RESUME_HINT: &str =
    "the agent keeps what it received: send the same file again to resume where it stopped";

/// Where a running send is, at every moment.
#[derive(Debug, Default)]
pub struct Sending {
    /// A send runs.
    pub active: AtomicBool,
    /// The agent keeps what it received if the send stops now.
    pub resumable: AtomicBool,
    /// The agent verified the whole file and was told to store it.
    pub committing: AtomicBool,
}

async fn dispatch(
    command: Command,
    logging: &crate::logging::Logging,
    sending: &Sending,
) -> Result<()> {
    match command {
        #[cfg(target_os = "linux")]
        Command::Serve(args) => agent::serve(args.config.as_deref(), logging).await,
        #[cfg(target_os = "linux")]
        Command::Init(args) => agent::init(args.config.as_deref()),
        #[cfg(target_os = "linux")]
        Command::Client(command) => agent::client(command),
        Command::Pair(args) => match (&args.agent, &args.code) {
            (Some(agent), Some(code)) => identities::pair(agent, code, &args).await,
            #[cfg(target_os = "linux")]
            _ => agent::pair(args).await,
            #[cfg(not(target_os = "linux"))]
            _ => Err(agent_only("pair")),
        },
        #[cfg(not(target_os = "linux"))]
        Command::Serve(_) => Err(agent_only("serve")),
        #[cfg(not(target_os = "linux"))]
        Command::Init(_) => Err(agent_only("init")),
        #[cfg(not(target_os = "linux"))]
        Command::Client(_) => Err(agent_only("client")),
        Command::Send(args) => send::send(args, sending).await,
        Command::Print(args) => {
            let mut client = connect(&args.target).await?;
            let name = args.name.as_deref().filter(|_| !args.next);
            let started = client.print(name).await?;
            client.close().await;
            println!("printing {started}");
            Ok(())
        }
        Command::List(args) => {
            let mut client = connect(&args.target).await?;
            let files = client.list().await?;
            client.close().await;
            if args.json {
                print_json(&files)
            } else {
                Ok(print_table(&files)?)
            }
        }
        Command::Get(args) => get(args).await,
        Command::Delete(args) => {
            let mut client = connect(&args.target).await?;
            let forwarded = client.delete(&args.name).await?;
            client.close().await;
            if forwarded {
                println!(
                    "deleted {} from the agent (it was forwarded: OctoPrint keeps its copy)",
                    args.name
                );
            } else {
                println!("deleted {}", args.name);
            }
            Ok(())
        }
        Command::Status(args) => {
            let mut client = connect(&args.target).await?;
            let status = client.status().await?;
            let addr = client.addr().to_string();
            let suite = client.cipher_suite();
            client.close().await;
            if args.json {
                let mut json = serde_json::to_value(&status)?;
                json["tls_cipher_suite"] = suite.into();
                return print_json(&json);
            }
            println!("agent       {addr} (fileagent {})", status.version);
            println!(
                "uptime      {}",
                humantime::format_duration(Duration::from_secs(status.uptime_secs))
            );
            println!(
                "ready       {}, {}",
                plural(status.ready, "file"),
                ByteSize(status.ready_bytes).display().iec()
            );
            println!("receiving   {}", status.incoming);
            println!(
                "free space  {}",
                ByteSize(status.free_bytes).display().iec()
            );
            println!(
                "max file    {}",
                ByteSize(status.max_file_size).display().iec()
            );
            println!("printer     {}", status.printer);
            println!("queued      {}", status.queued);
            if let Some(bed) = &status.bed {
                println!("bed         {bed}");
            }
            println!("you are     {}", status.client);
            println!(
                "tls         {suite} (this host {})",
                crate::wire::tls::Preference::detect().describe()
            );
            Ok(())
        }
        Command::Generate(what) => crate::cli::generate::run(what),
        Command::Ping(target) => {
            let mut client = connect(&target).await?;
            let rtt = client.ping().await?;
            let addr = client.addr().to_string();
            client.close().await;
            println!("{addr} answered in {:.1} ms", rtt.as_secs_f64() * 1000.0);
            Ok(())
        }
    }
}

async fn get(args: GetArgs) -> Result<()> {
    let dest = match &args.output {
        Some(path) if path.is_dir() => path.join(&args.name),
        // "-o plates/" means a folder, which must exist.
        Some(path) if path.as_os_str().to_string_lossy().ends_with('/') => {
            return Err(UsageError(format!("no folder {}", path.display())).into());
        }
        Some(path) => path.clone(),
        None => PathBuf::from(&args.name),
    };
    crate::workstation::check_destination(&dest)?;
    if dest.is_dir() || (dest.symlink_metadata().is_ok() && !dest.is_file()) {
        return Err(UsageError(format!("{} is not a regular file", dest.display())).into());
    }
    let mut client = connect(&args.target).await?;
    let mut bar = Bar::new(std::io::stderr().is_terminal(), &args.name);
    let fetched = client
        .get(&args.name, &dest, args.overwrite, &mut bar)
        .await;
    bar.finish();
    let fetched = fetched?;
    client.close().await;
    let what = if fetched.unchanged {
        "unchanged"
    } else {
        "got"
    };
    println!(
        "{what} {} -> {}  {}  sha256 {}",
        args.name,
        dest.display(),
        ByteSize(fetched.size).display().iec(),
        fetched.sha256
    );
    Ok(())
}
