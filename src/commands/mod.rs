//! What each CLI command does: loads what it needs, calls into the library
//! and prints the result for people (tables, progress bars, summaries) or
//! scripts (`--json`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{ClientCommand, Command, GetArgs, SendArgs, UsageError};
use crate::client::{ClientError, Observer, Phase, Sent};
use crate::config::Config;

mod identities;

use identities::connect;

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
    if serve {
        // The agent handles SIGINT itself, as a graceful shutdown.
        return runtime.block_on(dispatch(command, logging));
    }
    // Elsewhere Ctrl-C drops the running operation, which removes its
    // partial files, instead of killing the process in the middle.
    runtime.block_on(async {
        // Registered before any work starts, so no early Ctrl-C is missed.
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot watch for Ctrl-C")?;
        tokio::select! {
            result = dispatch(command, logging) => result,
            _ = interrupt.recv() => Err(Interrupted.into()),
        }
    })
}

/// The user pressed Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; nothing partial was kept")]
pub struct Interrupted;

async fn dispatch(command: Command, logging: &crate::logging::Logging) -> Result<()> {
    match command {
        Command::Serve(args) => {
            let (config, source) = Config::load(args.config.as_deref())?;
            crate::daemon::serve(config, source, logging).await
        }
        Command::Init(args) => init(args.config.as_deref()),
        Command::Client(ClientCommand::Issue { name, out, agent }) => {
            identities::issue(&name, &out, agent.config.as_deref())
        }
        Command::Client(ClientCommand::List { json, agent }) => {
            identities::list(json, agent.config.as_deref())
        }
        Command::Client(ClientCommand::Revoke { who, agent }) => {
            identities::revoke(&who, agent.config.as_deref())
        }
        Command::Pair(args) => identities::pair(args).await,
        Command::Send(args) => send(args).await,
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
            client.delete(&args.name).await?;
            client.close().await;
            println!("deleted {}", args.name);
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
                "ready       {} files, {}",
                status.ready,
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
            println!("you are     {}", status.client);
            println!(
                "tls         {suite} (this host {})",
                crate::tls::Preference::detect().describe()
            );
            Ok(())
        }
        Command::Generate(what) => crate::generate::run(what),
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

fn init(config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    let prepared = crate::daemon::prepare(&config, false)?;
    give_back(&config)?;
    let report = &prepared.report;
    println!("config          {source}");
    println!("state dir       {}", config.state_dir.display());
    println!("spool dir       {}", config.spool_dir.display());
    println!(
        "CA              {} (SHA-256 {})",
        if report.created_ca { "created" } else { "kept" },
        report.ca_fingerprint
    );
    println!(
        "server cert     {:?} for {}",
        report.server_cert,
        report.names.join(", ")
    );
    println!("next: fileagent pair   (prints a one-time code for the workstation)");
    Ok(())
}

/// After root worked on the packaged agent's directories: hands what it
/// created to the service user (see [`crate::durable::adopt_owner`]).
pub(crate) fn give_back(config: &Config) -> Result<()> {
    for dir in [&config.state_dir, &config.spool_dir] {
        crate::durable::adopt_owner(dir)
            .with_context(|| format!("cannot give {} back to its owner", dir.display()))?;
    }
    Ok(())
}

/// Expands folders into their files; returns (path, name) pairs.
fn expand(args: &SendArgs) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for path in &args.files {
        let meta = std::fs::metadata(path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            entries.sort();
            for entry in entries {
                out.push((entry.clone(), file_name(&entry)?));
            }
        } else {
            out.push((path.clone(), file_name(path)?));
        }
    }
    if let Some(name) = &args.as_name {
        if out.len() != 1 {
            return Err(UsageError("--as needs exactly one file".into()).into());
        }
        out[0].1 = name.clone();
    }
    if out.is_empty() {
        return Err(UsageError("nothing to send: the folders are empty".into()).into());
    }
    Ok(out)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            UsageError(format!(
                "{} has no usable UTF-8 file name; use --as NAME",
                path.display()
            ))
            .into()
        })
}

async fn send(args: SendArgs) -> Result<()> {
    let files = expand(&args)?;
    let retries = if args.no_retry { 0 } else { args.retries };
    let mut attempts = 0;
    let mut client = loop {
        match connect(&args.target).await {
            Ok(client) => break client,
            Err(e) if attempts < retries && is_transient(&e) => {
                attempts += 1;
                wait_to_retry(&e, attempts, retries).await;
            }
            Err(e) => return Err(e),
        }
    };
    client.set_compression(args.compress);
    let interactive = std::io::stderr().is_terminal() && !args.json;
    let mut results: Vec<Sent> = Vec::new();
    let mut first_error: Option<anyhow::Error> = None;
    for (path, name) in &files {
        let mut bar = Bar::new(interactive, name);
        let mut attempts = 0;
        let outcome = loop {
            let result = client.send_file(path, name, args.overwrite, &mut bar).await;
            match result {
                Err(e) if attempts < retries && e.is_transient() => {
                    attempts += 1;
                    bar.abandon();
                    wait_to_retry(&e.into(), attempts, retries).await;
                    // The new connection may fail too: that is a retry as well.
                    while let Err(e) = client.reconnect().await {
                        if attempts >= retries || !e.is_transient() {
                            break;
                        }
                        attempts += 1;
                        wait_to_retry(&e.into(), attempts, retries).await;
                    }
                    bar = Bar::new(interactive, name);
                }
                other => break other,
            }
        };
        match outcome {
            Ok(sent) => {
                bar.finish();
                if !args.json {
                    println!("{}", summary(&sent));
                }
                results.push(sent);
            }
            Err(e) => {
                bar.abandon();
                let fatal = !matches!(e, ClientError::Refused { .. } | ClientError::Local { .. });
                let e = anyhow::Error::new(e).context(format!("sending {} failed", path.display()));
                if fatal {
                    return Err(e);
                }
                if files.len() > 1 {
                    // One file's error is the command's error, printed once by main.
                    eprintln!("fileagent: {e:#}");
                }
                first_error.get_or_insert(e);
            }
        }
    }
    client.close().await;
    if args.json {
        print_json(&results)?;
    }
    match first_error {
        Some(e) if files.len() == 1 => Err(e),
        Some(e) => Err(e.context(format!(
            "{} of {} files were not sent",
            files.len() - results.len(),
            files.len()
        ))),
        None => Ok(()),
    }
}

fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<ClientError>()
            .is_some_and(ClientError::is_transient)
    })
}

/// Says why and how long, then waits before retry `attempt` of `retries`.
async fn wait_to_retry(e: &anyhow::Error, attempt: u32, retries: u32) {
    let wait = crate::client::retry_wait(attempt);
    eprintln!(
        "fileagent: {e:#}\nfileagent: retrying in {}s (retry {attempt} of {retries}; --no-retry to stop at the first failure)",
        wait.as_secs()
    );
    tokio::time::sleep(wait).await;
}

fn summary(sent: &Sent) -> String {
    let rate = if sent.seconds > 0.0 {
        sent.size as f64 / sent.seconds / 1e6
    } else {
        0.0
    };
    let what = match (sent.unchanged, sent.replaced) {
        (true, _) => "unchanged",
        (_, true) => "replaced",
        _ => "sent",
    };
    let resumed = if sent.resumed_from > 0 {
        format!(
            "  resumed after {}",
            ByteSize(sent.resumed_from).display().iec()
        )
    } else {
        String::new()
    };
    let wire = match sent.encoding {
        Some(_) if sent.wire_bytes > 0 => format!(
            "  zstd {:.1}x ({} on the wire)",
            sent.size as f64 / sent.wire_bytes as f64,
            ByteSize(sent.wire_bytes).display().iec()
        ),
        _ => String::new(),
    };
    format!(
        "{what} {}  {}  {:.2}s  {rate:.1} MB/s{wire}{resumed}  sha256 {}",
        sent.name,
        ByteSize(sent.size).display().iec(),
        sent.seconds,
        sent.sha256
    )
}

async fn get(args: GetArgs) -> Result<()> {
    let dest = match &args.output {
        Some(path) if path.is_dir() => path.join(&args.name),
        Some(path) => path.clone(),
        None => PathBuf::from(&args.name),
    };
    let mut client = connect(&args.target).await?;
    let mut bar = Bar::new(std::io::stderr().is_terminal(), &args.name);
    let fetched = client.get(&args.name, &dest, &mut bar).await;
    bar.finish();
    let fetched = fetched?;
    client.close().await;
    println!(
        "got {} -> {}  {}  sha256 {}",
        args.name,
        dest.display(),
        ByteSize(fetched.size).display().iec(),
        fetched.sha256
    );
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_table(files: &[crate::protocol::FileEntry]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if files.is_empty() {
        return writeln!(out, "the spool is empty");
    }
    let width = files
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:>10}  {:<20}  {:<9}  NOTE",
        "NAME", "SIZE", "CHANGED (UTC)", "STATE"
    )?;
    for file in files {
        let modified = std::time::UNIX_EPOCH + Duration::from_secs(file.modified);
        writeln!(
            out,
            "{:<width$}  {:>10}  {:<20}  {:<9}  {}",
            file.name,
            ByteSize(file.size).display().iec().to_string(),
            humantime::format_rfc3339_seconds(modified).to_string(),
            file.state.as_deref().unwrap_or("-"),
            file.reason.as_deref().unwrap_or(""),
        )?;
    }
    Ok(())
}

/// A progress bar on stderr (bytes, rate, ETA), or nothing when stderr is
/// not a terminal.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(interactive: bool, name: &str) -> Bar {
        if !interactive {
            return Bar(None);
        }
        let bar = ProgressBar::new(0);
        bar.set_message(name.to_string());
        Bar(Some(bar))
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }

    fn abandon(&mut self) {
        if let Some(bar) = &self.0 {
            bar.abandon();
        }
    }
}

impl Observer for Bar {
    fn phase(&mut self, phase: Phase, total: u64) {
        let Some(bar) = &self.0 else { return };
        let verb = match phase {
            Phase::Hashing => "hashing",
            Phase::Sending => "sending",
            Phase::Receiving => "receiving",
        };
        let template = format!(
            "{verb:>9} {{msg}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_length(total);
        bar.set_position(0);
        bar.reset_eta();
    }

    fn progress(&mut self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }
}
