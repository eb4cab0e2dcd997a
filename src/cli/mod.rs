//! What each CLI command does: loads what it needs, calls into the library
//! and prints the result for people (tables, progress bars, summaries) or
//! scripts (`--json`).

use std::sync::atomic::{AtomicBool, Ordering};

use std::io::Write as _;

use anyhow::{Context, Result};

use crate::cli::args::{Command, Interrupted};

/// Prints one line of a command's output. Unlike `println!`, which panics,
/// a write that fails returns its error from the command: a reader that
/// went away (`fileagent send a b | head -1`) is a broken pipe, which `main`
/// takes for success.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

#[cfg(target_os = "linux")]
mod agent;
pub mod args;
#[cfg(feature = "bridge")]
mod bridge;
mod files;
mod fleet;
mod follow;
pub(crate) mod generate;
mod identities;
mod output;
mod report;
mod send;

use identities::connect;
use output::{Bar, plural, print_json};

/// Runs one command to completion.
pub fn run(command: Command, logging: &crate::logging::Logging) -> Result<()> {
    // The agent and the bridge serve until told to stop, and stop
    // gracefully on Ctrl-C (SIGINT) themselves.
    let serve = matches!(
        command,
        Command::Serve(_) | Command::Bridge(_) | Command::Ui(_)
    );
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
        return runtime.block_on(dispatch(command, logging, &sending));
    }
    // Elsewhere Ctrl-C drops the running operation, which removes its
    // partial files, instead of killing the process in the middle.
    runtime.block_on(async {
        // Registered before any work starts, so no early Ctrl-C is missed.
        let mut interrupt = ctrl_c().context("cannot watch for Ctrl-C")?;
        tokio::select! {
            result = dispatch(command, logging, &sending) => result,
            _ = interrupt.recv() => Err({
                // A live line (status --watch) ends before the message.
                if sending.following.load(Ordering::SeqCst) && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    let _ = writeln!(std::io::stdout());
                }
                Interrupted {
                sending: sending.active.load(Ordering::SeqCst),
                resumable: sending.resumable.load(Ordering::SeqCst),
                committing: sending.committing.load(Ordering::SeqCst),
                following: sending.following.load(Ordering::SeqCst),
            }}
            .into()),
        }
    })
}

/// The agent's commands in a build for another system than Linux.
#[cfg(not(target_os = "linux"))]
fn agent_only(command: &str) -> anyhow::Error {
    crate::cli::args::UsageError(format!(
        "`fileagent {command}` belongs to the agent, which runs on Linux beside the printer; \
         this build is the workstation's (pair with an agent there: `fileagent pair HOST CODE`)"
    ))
    .into()
}

/// The workstation's commands in a build that leaves them out (the
/// Raspberry Pi packages: no slicer or browser runs there).
#[cfg(not(feature = "bridge"))]
fn left_out(command: &str) -> anyhow::Error {
    crate::cli::args::UsageError(format!(
        "`fileagent {command}` is left out of this build (the Raspberry Pi package, kept small for the \
         printer's host): run it on the computer you slice on, which reaches this agent over the network"
    ))
    .into()
}

/// Ctrl-C: SIGINT on Unix.
#[cfg(unix)]
fn ctrl_c() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
}

/// Ctrl-C: the console's control handler on Windows.
#[cfg(windows)]
fn ctrl_c() -> std::io::Result<tokio::signal::windows::CtrlC> {
    tokio::signal::windows::ctrl_c()
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
    /// The command follows a printer (its sends are over).
    pub following: AtomicBool,
}

async fn dispatch(
    command: Command,
    logging: &crate::logging::Logging,
    sending: &Sending,
) -> Result<()> {
    // Only the agent changes the log level (on a reload).
    #[cfg(not(target_os = "linux"))]
    let _ = logging;
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
        Command::Print(args) => files::print(args).await,
        Command::List(args) => files::list(args).await,
        Command::Get(args) => files::get(args).await,
        Command::Delete(args) => files::delete(args).await,
        Command::Status(args) => files::status(args, sending).await,
        Command::Generate(what) => crate::cli::generate::run(what),
        Command::Ping(target) => files::ping(target).await,
        #[cfg(feature = "bridge")]
        Command::Bridge(args) => bridge::bridge(args).await,
        #[cfg(feature = "bridge")]
        Command::Ui(args) => bridge::ui(args).await,
        #[cfg(not(feature = "bridge"))]
        Command::Bridge(_) => Err(left_out("bridge")),
        #[cfg(not(feature = "bridge"))]
        Command::Ui(_) => Err(left_out("ui")),
    }
}
