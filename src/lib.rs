//! fileagent: a daemon beside a 3D printer that receives print files from
//! workstations over mutually authenticated TLS 1.3 and lands them atomically
//! in a spool; the same crate is the workstation's CLI client.
//!
//! Modules, from the wire up:
//! - [`protocol`]: frames, typed messages, error codes and limits (see `docs/protocol.md`).
//! - [`codec`]: zstd compression of file bodies on the wire.
//! - [`digest`]: SHA-256 of whole files, as both ends compute it.
//! - [`tls`]: rustls configurations for both ends (TLS 1.3, mutual auth, ALPN).
//! - [`pki`]: the agent's CA, server certificate and issued client identities (rcgen).
//! - [`identity`]: a workstation's identity file; certificate names and fingerprints.
//! - [`spool`]: `incoming/` and `ready/`, name checks, atomic verified commits.
//! - [`session`]: the agent's side of one connection (request loop).
//! - [`forward`]: the watched spool, the durable queue and uploads to OctoPrint.
//! - [`server`]: accept loop, connection limit, timeouts, graceful shutdown.
//! - [`daemon`]: process wiring for `serve` and `init` (PKI, spool, signals, reload).
//! - [`systemd`]: readiness, status and watchdog notifications to systemd.
//! - [`logging`]: journald or human-readable logs, and the log level.
//! - [`config`]: the agent's TOML config, human units, validation.
//! - [`durable`]: crash-safe file writes (temp file, fsync, rename, directory fsync).
//! - [`client`]: the workstation's library client.
//! - [`client_config`]: which agent and identity a workstation uses.
//! - [`cli`] and [`commands`]: the command line and what each command prints.
//! - [`generate`]: man pages and shell completions from the command line definition.

pub mod cli;
pub mod client;
pub mod client_config;
pub mod clients;
pub mod codec;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod durable;
pub mod forward;
pub mod generate;
pub mod identity;
pub mod logging;
pub mod pairing;
pub mod pki;
pub mod protocol;
pub mod server;
pub mod server_tls;
pub mod session;
pub mod spool;
pub mod systemd;
pub mod tls;
