//! The agent, the Pi's side: net -> session -> spool -> forward -> printer.
//! [`daemon`] wires the process ([`config`], [`pki`], `systemd`);
//! [`server`] accepts connections over `tls` and hands each to a
//! `session` (or, on the pairing ALPN, to [`pairing`]); sessions land files
//! in the `spool`, and [`forward`] uploads them to OctoPrint and starts
//! prints when that is safe. Imports [`crate::wire`], never the workstation.

pub mod config;
pub mod daemon;
pub mod forward;
pub mod pairing;
pub mod pki;
pub mod server;
pub(crate) mod session;
pub(crate) mod spool;
pub(crate) mod systemd;
pub(crate) mod tls;
