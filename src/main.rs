//! The `fileagent` binary: parses the command line, sets up logging and
//! hands over to [`fileagent::cli::run`].

use std::process::ExitCode;

use clap::Parser;
use fileagent::cli::args::{Cli, exit, exit_code};
use fileagent::logging::Logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if cli.command.is_agent_side() {
        "info"
    } else {
        "warn"
    };
    let logging = Logging::init(default_level);

    match fileagent::cli::run(cli.command, &logging) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("fileagent: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Our own output piped into `head` and the like: not an error. Only the
/// outermost error counts, so a broken connection to the agent is not
/// mistaken for it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        io.kind() == std::io::ErrorKind::BrokenPipe || io.raw_os_error() == PIPE_NOT_CONNECTED
    })
}

/// Windows' ERROR_PIPE_NOT_CONNECTED: a pipe whose reader is gone, as wine
/// reports it (std maps only ERROR_BROKEN_PIPE and ERROR_NO_DATA to
/// `BrokenPipe`).
#[cfg(windows)]
const PIPE_NOT_CONNECTED: Option<i32> = Some(233);
/// No such code elsewhere.
#[cfg(not(windows))]
const PIPE_NOT_CONNECTED: Option<i32> = None;
