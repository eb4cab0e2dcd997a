//! The command line: clap definitions (their doc comments are the help
//! text) and the exit-code scheme.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::workstation::ClientError;

/// Exit codes, as documented in `--help`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The agent refused the operation, or the agent could not start.
    pub(crate) const REFUSED: u8 = 1;
    /// Usage or configuration error (flags, config, identity, local file).
    pub(crate) const USAGE: u8 = 2;
    /// Network, TLS or transfer failure.
    pub(crate) const NETWORK: u8 = 3;
    /// Interrupted by Ctrl-C (128 + SIGINT, as shells do).
    pub(crate) const INTERRUPTED: u8 = 130;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the agent refused the operation (file exists, too large, no space, not found),
     or the agent could not start
  2  usage or configuration error (flags, config file, identity file, local file)
  3  network, TLS or transfer failure (agent unreachable, certificate refused,
     connection lost, corrupt data)
  130 interrupted by Ctrl-C (nothing is stored or printed from an interrupted
      send; a partial download is removed; an upload the agent can resume is
      kept there: the same send again continues it)

Quick start on the agent host:  sudo fileagent pair          (prints a one-time code)
On the workstation:             fileagent pair pi.local CODE
                                fileagent send part.gcode --agent pi
Once the bed is clear:          fileagent print part.gcode";

/// Send print files to a 3D printer's Raspberry Pi over mutually authenticated TLS
///
/// The same binary is the agent on the Pi (`serve`, started by systemd when
/// installed from the .deb) and the workstation client (`send`, `list`,
/// `get`, ...).
#[derive(Debug, Parser)]
#[command(
    name = "fileagent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FILEAGENT_TARGET"), ")"),
    after_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: listen for workstations and keep the spool.
    ///
    /// Initialises keys and spool on first start (like `init`). Without a
    /// config file it runs on built-in defaults: data under ./fileagent-data,
    /// listening on 127.0.0.1:7341 only. SIGHUP reloads the config and
    /// certificates; SIGINT or SIGTERM stop it gracefully.
    // The agent runs on Linux: a workstation build for another system
    // leaves its commands out of the help (and says so if asked).
    #[command(hide = cfg!(not(target_os = "linux")))]
    Serve(AgentArgs),
    /// Create the agent's state directory, CA and server certificate (never
    /// overwrites existing keys) and its spool directories.
    #[command(hide = cfg!(not(target_os = "linux")))]
    Init(AgentArgs),
    /// Pair a workstation with the agent by a one-time code.
    ///
    /// On the agent host, without arguments: prints a one-time code and waits
    /// until a workstation uses it, it expires, or Ctrl-C cancels it. On the
    /// workstation, with HOST and CODE: makes a key pair here, checks the
    /// agent against the code, proves the code (SPAKE2, never sent), gets a
    /// certificate and saves the identity and the agent in client.toml.
    Pair(PairArgs),
    /// Manage client identities (on the agent host).
    #[command(subcommand)]
    #[command(hide = cfg!(not(target_os = "linux")))]
    Client(ClientCommand),
    /// Send print files (or every file in a folder) to the agent.
    ///
    /// The agent stores a file only once it has all of it, verified, and the
    /// client says so: Ctrl-C (or a failure) never leaves a file stored or
    /// printed, and the same send again resumes what the agent kept. The
    /// progress bar shows what the agent has received. Whether a file then
    /// prints is the agent's print policy, or what --print / --no-print ask
    /// within its rules (`fileagent list` says why one waits; `fileagent
    /// print` starts it).
    Send(SendArgs),
    /// List the files in the agent's spool with their state on the way to the printer.
    List(ListArgs),
    /// Fetch a file back from the agent's spool (verified by SHA-256).
    Get(GetArgs),
    /// Start printing a file that was sent to the agent (a person's act:
    /// run it once the bed is clear).
    ///
    /// Without `queue = true`, nothing starts by itself after a print has
    /// ended: the bed may still hold it. `fileagent list` shows the files
    /// that wait and why. The printer must be connected and idle.
    Print(PrintArgs),
    /// Delete a file from the agent's spool (of a file forwarded to OctoPrint or Moonraker, the
    /// agent's copy: the print server keeps its own).
    Delete(DeleteArgs),
    /// Show the agent's version, uptime, spool counts, free space and the printer's state.
    Status(StatusArgs),
    /// Check that the agent answers, and how fast.
    Ping(TargetArgs),
    /// Let slicers upload through fileagent: a local OctoPrint-compatible
    /// server (foreground) with one URL per paired agent and per group.
    ///
    /// In PrusaSlicer, OrcaSlicer or Cura's OctoPrint plugin, add an
    /// OctoPrint host `http://127.0.0.1:7342/a/AGENT` (or `/g/GROUP`) with the
    /// key `fileagent bridge --show-key` prints. "Upload" stores the file on
    /// the printer's Pi; "Upload and Print" starts it there if the printer is
    /// idle and its bed clear. The slicer hears "uploaded" only once the
    /// agent has stored and verified the file.
    #[cfg_attr(not(feature = "bridge"), command(hide = true))]
    Bridge(BridgeArgs),
    /// Open the web page: drop files on your printers and watch them.
    ///
    /// The page is served by the bridge's process on this machine (started
    /// here in the foreground if none runs yet). A one-time link lets this
    /// browser in; the page never sees a key or a certificate.
    #[cfg_attr(not(feature = "bridge"), command(hide = true))]
    Ui(UiArgs),
    /// Write the man pages or print a shell completion script.
    #[command(subcommand)]
    Generate(Generate),
}

/// `fileagent generate ...`
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Write fileagent.1 and a page per subcommand (fileagent-send.1, ...).
    Man {
        /// Folder to write the pages into.
        #[arg(default_value = ".", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a completion script, e.g. `fileagent generate completion bash
    /// > /etc/bash_completion.d/fileagent`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Options of the agent's own commands.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Config file [default: /etc/fileagent/config.toml if it exists, else built-in defaults]
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `fileagent pair`
#[derive(Debug, Args)]
pub struct PairArgs {
    /// On the workstation: the agent, as HOST or HOST:PORT [default port: 7341]
    #[arg(requires = "code", value_name = "HOST[:PORT]")]
    pub agent: Option<String>,
    /// On the workstation: the code `fileagent pair` printed on the agent
    #[arg(value_name = "CODE")]
    pub code: Option<String>,
    /// On the agent: the client name to issue [default: the one the
    /// workstation asks for]. On the workstation: the name to save the agent
    /// under in client.toml, for `--agent NAME` [default: the host's first label]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// On the workstation: the client name to ask for [default: this host's name]
    #[arg(long = "as", value_name = "CLIENT", requires = "agent")]
    pub as_client: Option<String>,
    /// On the agent: how long the code stays valid (at most 24h)
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, conflicts_with = "agent")]
    pub ttl: std::time::Duration,
    /// On the agent: its config file [default: /etc/fileagent/config.toml if it exists, else built-in defaults]
    #[arg(long, short = 'c', value_name = "PATH", conflicts_with = "agent")]
    pub config: Option<PathBuf>,
}

/// `fileagent client ...`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List every client certificate the agent issued: name, serial,
    /// fingerprint, issue and expiry dates, last seen, revoked or not.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Revoke a client's certificates (all of a NAME, or one SERIAL, at
    /// least its first 8 hex digits). The running agent refuses them from
    /// the next connection on; no restart needed.
    Revoke {
        /// Client name or serial.
        #[arg(value_name = "NAME|SERIAL")]
        who: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Issue a client certificate signed by the agent's CA and write an
    /// identity file (client key, client certificate, agent CA; mode 0600).
    Issue {
        /// Client name (becomes the certificate's CN, shown in the agent's log).
        name: String,
        /// Identity file to write; it must not exist yet.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        agent: AgentArgs,
    },
}

/// Which agent to talk to, and as whom.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Agent as HOST or HOST:PORT, or a name from client.toml [default port: 7341]
    #[arg(long, short = 'a', env = "FILEAGENT_AGENT", value_name = "HOST[:PORT]")]
    pub agent: Option<String>,
    /// Identity file [default: from client.toml, else identity.pem in fileagent's config folder:
    /// ~/.config/fileagent on Linux, %APPDATA%\fileagent on Windows]
    #[arg(long, short = 'i', env = "FILEAGENT_IDENTITY", value_name = "PATH")]
    pub identity: Option<PathBuf>,
}

/// `fileagent send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files or folders to send (a folder sends each visible file directly in
    /// it, and says what it leaves out).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Name to store a single file under [default: its file name]
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    /// Replace a file of the same name with different content: one in the
    /// spool, or one the agent forwarded to its print server (a name stays
    /// taken while the agent or the print server holds its file).
    #[arg(long)]
    pub overwrite: bool,
    /// Retries after a network failure, with waits of 1 s, 2 s, 4 s, ... (an
    /// interrupted file resumes where it stopped)
    #[arg(long, default_value_t = crate::workstation::DEFAULT_RETRIES, value_name = "N")]
    pub retries: u32,
    /// Do not retry after a network failure (same as --retries 0).
    #[arg(long, conflicts_with = "retries")]
    pub no_retry: bool,
    /// Compress on the wire (zstd; the agent stores the file as it is):
    /// auto = text files such as G-code from 1 KiB, not binary files or formats
    /// compressed already (.bgcode, .gz, ...)
    #[arg(long, value_enum, default_value_t, value_name = "WHEN")]
    pub compress: crate::workstation::Compression,
    /// Upload and print: the agent starts each file once it is uploaded, if
    /// the printer is idle, its bed clear and no older file waits (else it
    /// waits for `fileagent print`); says what each printer did.
    #[arg(long, conflicts_with = "no_print")]
    pub print: bool,
    /// Upload only: the agent never starts these files by itself.
    #[arg(long)]
    pub no_print: bool,
    /// After sending, follow the printer live until the print ends
    /// (Ctrl-C stops following, not the print). Implies --print.
    #[arg(long, conflicts_with = "no_print")]
    pub follow: bool,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Agent as HOST or HOST:PORT, a name from client.toml, or a group from
    /// it; repeat to send to several at once [default: default_agent]
    #[arg(
        long = "agent",
        short = 'a',
        env = "FILEAGENT_AGENT",
        value_name = "AGENT|GROUP"
    )]
    pub agents: Vec<String>,
    /// Identity file [default: from client.toml, for each agent]
    #[arg(long, short = 'i', env = "FILEAGENT_IDENTITY", value_name = "PATH")]
    pub identity: Option<PathBuf>,
}

impl SendArgs {
    /// The print choice the sends carry: `None` leaves it to the agent.
    pub fn print_choice(&self) -> Option<bool> {
        match (self.print || self.follow, self.no_print) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// `fileagent list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `fileagent get`
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Name of the file in the spool.
    pub name: String,
    /// Where to write it (a folder keeps the name) [default: ./NAME]
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Replace a file that is there already.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `fileagent print`
#[derive(Debug, Args)]
pub struct PrintArgs {
    /// Name of the file to print (as `fileagent list` shows it).
    #[arg(required_unless_present = "next", conflicts_with = "next")]
    pub name: Option<String>,
    /// Print the oldest file that waits to be started.
    #[arg(long)]
    pub next: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `fileagent delete`
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Name of the file in the spool.
    pub name: String,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `fileagent bridge`
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// Address to listen on (loopback only)
    #[arg(long, default_value = crate::workstation::BRIDGE_LISTEN, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Print the bridge's API key (made on the first run) and exit.
    #[arg(long)]
    pub show_key: bool,
}

/// `fileagent ui`
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Address of the bridge's process (loopback only)
    #[arg(long, default_value = crate::workstation::BRIDGE_LISTEN, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Print the one-time link instead of opening a browser.
    #[arg(long)]
    pub no_open: bool,
}

/// `fileagent status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Follow the printer live (state, job, progress, times) until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

impl Command {
    /// True for the agent's own commands, which log at `info` by default.
    pub fn is_agent_side(&self) -> bool {
        matches!(
            self,
            Command::Serve(_)
                | Command::Init(_)
                | Command::Client(_)
                | Command::Bridge(_)
                | Command::Ui(_)
        ) || matches!(self, Command::Pair(args) if args.agent.is_none())
    }
}

/// The exit code for an error, from the first typed error in its chain.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Refused { .. } => exit::REFUSED,
                ClientError::BadAddress(_) | ClientError::Local { .. } => exit::USAGE,
                ClientError::Connect { .. }
                | ClientError::NotListening { .. }
                | ClientError::Tls { .. }
                | ClientError::Protocol(_)
                | ClientError::Integrity(_) => exit::NETWORK,
            };
        }
        #[cfg(target_os = "linux")]
        if super::agent::is_usage_error(cause) {
            return exit::USAGE;
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return exit::USAGE;
        }
        if cause.downcast_ref::<Interrupted>().is_some() {
            return exit::INTERRUPTED;
        }
    }
    exit::REFUSED
}

/// The user pressed Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted; {}", self.what_is_left())]
pub struct Interrupted {
    /// `send` was running.
    pub sending: bool,
    /// A send was under way that the agent can resume.
    pub resumable: bool,
    /// The file was complete on the agent and confirmed: it may be stored.
    pub committing: bool,
    /// The command followed a printer: nothing of it stops.
    pub following: bool,
}

impl Interrupted {
    fn what_is_left(&self) -> &'static str {
        match (self.committing, self.resumable) {
            _ if self.following => {
                "stopped following; the printer goes on (`fileagent status --watch` follows it again)"
            }
            _ if !self.sending => "nothing partial was kept",
            (true, _) => {
                "the agent had the whole file and was told to store it just before: `fileagent list` shows whether it did"
            }
            (false, true) => {
                "nothing was stored; the agent keeps what it received: send the same file again to resume where it stopped"
            }
            (false, false) => "nothing was stored, and nothing partial was kept",
        }
    }
}

/// A mistake in how the command was called, found after parsing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command's help, in full: doc comments are help text there, and
    /// rustdoc's syntax (links, paths) must not leak into it.
    #[test]
    fn no_help_text_shows_rustdoc_syntax() {
        fn walk(command: &mut clap::Command, path: &str, seen: &mut usize) {
            let help = command.render_long_help().to_string();
            *seen += 1;
            for leak in ["[`", "`]", "](", "crate::", "Self::", "::new"] {
                assert!(!help.contains(leak), "{leak:?} in `{path} --help`:\n{help}");
            }
            for sub in command.get_subcommands_mut() {
                let path = format!("{path} {}", sub.get_name());
                walk(sub, &path, seen);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut seen = 0;
        walk(&mut command, "fileagent", &mut seen);
        assert!(seen > 15, "only {seen} help texts");
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for code in [
            "0  success",
            "1  the agent refused",
            "2  usage",
            "3  network",
        ] {
            assert!(help.contains(code), "help lacks {code:?}");
        }
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let refused = anyhow::Error::new(ClientError::Refused {
            code: crate::wire::protocol::ErrorCode::Exists,
            message: "m".into(),
        });
        assert_eq!(
            exit_code(&refused.context("sending a.gcode")),
            exit::REFUSED
        );
        let net = anyhow::Error::new(ClientError::Connect {
            addr: "a".into(),
            reason: "r".into(),
        });
        assert_eq!(exit_code(&net), exit::NETWORK);
        assert_eq!(
            exit_code(&anyhow::Error::new(UsageError("u".into()))),
            exit::USAGE
        );
    }
}
