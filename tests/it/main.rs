//! Integration tests: a real agent on 127.0.0.1:0 with real certificates and
//! a temp spool, driven through the library client and the real binary.
//!
//! - `support`: starting agents, issuing identities, raw TLS connections.
//! - `transfer`: every operation, conflicts, 16 concurrent senders.
//! - `compression`: zstd bodies on the wire, hostile compressed bodies.
//! - `crash`: SIGKILL of the agent at random moments during concurrent sends; CLI retries.
//! - `diskfull`: the spool on a small tmpfs of its own, filling up under an upload.
//! - `fuzz_replay`: the fuzz seeds and kept crashes, replayed.
//! - `hostile`: TLS refusals (no cert, foreign CA, expired, TLS 1.2, ALPN,
//!   garbage), oversized headers and files, bad bodies, names, timeouts.
//! - `resume`: interrupted sends resumed, damaged partial bodies dropped; Ctrl-C stores nothing.
//! - `progress`: the progress a send reports is what the agent received.
//! - `shutdown`: graceful shutdown with running and stalled uploads.
//! - `cli`: the `fileagent` binary, its output, config and exit codes.
//! - `service`: the binary as systemd sees it: notify messages and SIGHUP reloads.
//! - `hostile_table`: the table-driven hostile-input suite (100+ cases, exact errors).
//! - `load`: slowloris, idle and silent clients cut off while 64 clients transfer.
//! - `octoprint`: a real OctoPrint with its Virtual Printer (scripts/octoprint-dev.sh).
//! - `forward`: forwarding end to end against that OctoPrint.
//! - `bridge`: `fileagent bridge` driven by curl replaying slicers and by real OctoPrint clients.
//! - `bridge_load`: 2 GiB through the bridge process, its peak memory constant.
//! - `bridged`: a bridge served in the test process; curl; the pinned client programs.
//! - `choice`: the sender's print choice (upload only, upload and print) and `watch`.
//! - `bed`: the print policy against it: the bed rule, arrival order, taken names, held files.
//! - `pairing`: pairing codes, fake agents, revocation, listing, renewal.
//! - `layout`: the architecture: imports point one way, lib.rs maps every module.
//! - `fake_octoprint`: faults a real OctoPrint cannot produce on demand (5xx, resets).

mod bed;
mod bridge;
mod bridge_load;
mod bridged;
mod browser;
mod choice;
mod cli;
mod compression;
mod crash;
mod diskfull;
mod fake_octoprint;
mod forward;
mod fuzz_replay;
mod hostile;
mod hostile_table;
mod klipper;
mod layout;
mod load;
mod moonraker;
mod octoprint;
mod page;
mod pairing;
mod progress;
mod resume;
mod servers;
mod service;
mod shutdown;
mod support;
mod transfer;
