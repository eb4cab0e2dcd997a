//! fileagent: a daemon beside a 3D printer that receives print files from
//! workstations over mutually authenticated TLS 1.3 and lands them atomically
//! in a spool; the same crate is the workstation's CLI client.
//!
//! The map (imports point one way: `wire <- agent`, `wire <- workstation`,
//! `cli -> both`; `agent` and `workstation` never import each other):
//! - [`wire`]: what both ends agree on (see `docs/protocol.md`).
//!   - [`wire::protocol`]: frames, typed messages, error codes, limits, the connection.
//!   - [`wire::codec`]: zstd compression of file bodies.
//!   - `wire::digest`: SHA-256 of whole files, as both ends compute it.
//!   - [`wire::identity`]: a workstation's identity file; certificate names and fingerprints.
//!   - [`wire::pairing`]: the one-time pairing code and its SPAKE2 exchange.
//!   - [`wire::tls`]: TLS 1.3, the provider and suite order, the workstation's client config.
//! - `agent`: the Pi's side, net -> session -> spool -> forward -> printer. Linux only
//!   (systemd, inotify, fallocate): a build for another system is the workstation's.
//!   - [`agent::daemon`]: process wiring for `serve` and `init` (PKI, spool, signals, reload).
//!   - [`agent::config`]: the agent's TOML config, human units, validation.
//!   - [`agent::server`]: accept loop, admission budget, timeouts, graceful shutdown.
//!   - `agent::tls`: server configs and the revocation-aware client verifier.
//!   - `agent::session`: the agent's side of one connection (request loop).
//!   - `agent::spool`: `incoming/` and `ready/`, name checks, atomic verified commits.
//!   - [`agent::forward`]: the watched spool, the durable queue, uploads and prints through one
//!     interface to OctoPrint or Moonraker (Klipper).
//!   - [`agent::pki`]: the CA, the server certificate, issued client certificates and their register.
//!   - [`agent::pairing`]: pending pairing codes and the agent's side of a pairing connection.
//!   - `agent::systemd`: readiness, status and watchdog notifications.
//! - [`workstation`]: the library client ([`workstation::Client`]), the workstation's side.
//!   - `workstation::connect`: the agent's address, TCP + TLS within the connect timeout,
//!     failures explained; one path for connections and for pairing.
//!   - `workstation::send`, `workstation::outgoing`, `workstation::body`, `workstation::digest`:
//!     a send, its body on its way (read and hashed on a thread, compressed, counted), the
//!     digest known early or late; [`workstation::growing`]: a file sent while it is still
//!     being written (the web page's upload).
//!   - `workstation::get`: a fetch, renamed into place once verified.
//!   - `workstation::follow`: `watch`, the printer's (and a file's) state as it changes; a sent file's fate.
//!   - [`workstation::bridge`]: `fileagent bridge`, the local OctoPrint-compatible server for
//!     slicers, and the web page (`fileagent ui`) it serves too.
//!   - `workstation::local_name`: which names from the agent can be files here (Windows' rules as data).
//!   - `workstation::enrol`: the key and request of a new certificate, the checks of what comes back.
//!   - `workstation::error`: [`workstation::ClientError`], failures with their cause and remedy.
//!   - [`workstation::pair`]: `fileagent pair HOST CODE`, the workstation's side of pairing.
//!   - `workstation::config`: which agent and identity a workstation uses; `workstation::groups`:
//!     named groups of agents.
//! - [`cli`]: the commands; [`cli::run`] dispatches them.
//!   - [`cli::args`]: the clap definitions (their doc comments are the help), exit codes.
//!   - `cli::send`, `cli::fleet`, `cli::report`, `cli::files`, `cli::identities`: `send` to one
//!     agent and to several at once, and what it says of each file; `print`, `list`, `get`, `delete`, `status`, `ping`; pairing and connecting
//!     with an identity. `cli::follow`: a printer live. `cli::bridge`: the bridge's command.
//!     `cli::output`: tables, JSON and the progress bars.
//!   - `cli::agent`: the commands of the agent's machine (`serve`, `init`, `pair` for a code,
//!     `client`), the one part of the CLI that imports the agent (Linux only).
//!   - `cli::generate`: man pages and shell completions.
//! - Leaves any side may use, importing nothing of the crate:
//!   - [`durable`]: crash-safe file writes (temp file, fsync, rename, directory fsync).
//!   - [`logging`]: journald or human-readable logs, and the log level.

#[cfg(target_os = "linux")]
pub mod agent;
pub mod cli;
pub mod durable;
pub mod logging;
pub mod wire;
pub mod workstation;
