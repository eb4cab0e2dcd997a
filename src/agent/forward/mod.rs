//! Forwarding: every print file that lands in `ready/` is uploaded to the
//! local print server (OctoPrint, or Moonraker for Klipper: one interface,
//! `printer::Printer`) and, per the print policy, printed, without ever
//! disturbing a running job.
//!
//! One task, the `Forwarder`, owns the durable `queue::Queue` and does
//! everything in order: it hears of files from the receiver (complete and
//! verified) and from the `watch`er (other tools), polls the printer,
//! uploads one file at a time, starts queued prints, follows running ones
//! and cleans `done/`. While the server is unreachable or failing it backs
//! off exponentially and logs once per change of state. Sessions read a
//! snapshot of its state ([`View`]) for `list` and `status`, and ask it to
//! `forget` a forwarded file on `delete`.

mod again;
mod api;
mod backlog;
mod forwarder;
mod http;
mod klipper;
pub(crate) mod moonraker;
pub(crate) mod octoprint;
mod person;
pub(crate) mod policy;
pub(crate) mod printer;
mod printing;
pub(crate) mod queue;
mod retention;
mod supervise;
mod upload;
mod view;
pub(crate) mod watch;

use std::sync::Arc;

use tokio::sync::mpsc;

pub use supervise::{Running, start};
pub(crate) use view::Published;
pub use view::{Held, View};

/// How long `delete` waits for the forwarder, which may be in the middle
/// of an upload to OctoPrint.
pub(crate) const FORGET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A file stored by the receiver.
#[derive(Debug)]
struct Stored {
    name: String,
    sha256: String,
    size: u64,
    client: String,
    overwrite: bool,
    /// The sender's print choice.
    print: Option<bool>,
    /// Its device and inode in `ready/`.
    inode: Option<(u64, u64)>,
    /// When it was stored (Unix seconds).
    arrived: u64,
}

/// How a file was sent, as far as forwarding cares.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Sent with `overwrite`: it may replace a different file of its name
    /// in OctoPrint.
    pub overwrite: bool,
    /// The sender's print choice (`None`: `auto_print` decides).
    pub print: Option<bool>,
}

/// What the receiver and the sessions tell the forwarder.
#[derive(Debug)]
enum Message {
    /// The receiver stored a verified file.
    Stored(Stored),
    /// `delete` of a file no longer in `ready/`: forget it if it was
    /// forwarded, and remove the agent's copy.
    Forget {
        name: String,
        reply: tokio::sync::oneshot::Sender<Forget>,
    },
    /// `print`: a person starts a file (or the oldest waiting one).
    Print {
        name: Option<String>,
        client: String,
        reply: tokio::sync::oneshot::Sender<Result<String, PrintRefused>>,
    },
}

/// Why [`Handle::print`] did not start a print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrintRefused {
    /// No such file, or none waiting.
    #[error("{0}")]
    NotFound(String),
    /// The printer is printing, or the file is being printed.
    #[error("{0}")]
    Busy(String),
    /// The printer or OctoPrint cannot print now, or forwarding is off.
    #[error("{0}")]
    NotReady(String),
    /// OctoPrint refused the file.
    #[error("{0}")]
    Refused(String),
    /// This agent takes no print starts from workstations.
    #[error("{0}")]
    Forbidden(String),
}

/// The answer to `Handle::forget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// No forwarded file of that name.
    Unknown,
    /// Forgotten, and the agent's copy removed; OctoPrint keeps its own.
    Forgotten,
    /// It is being printed: it stays.
    Printing,
    /// The forwarder did not answer within `FORGET_TIMEOUT`.
    Busy,
}

/// The receiver's and the sessions' side of the forwarder.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: Option<mpsc::UnboundedSender<Message>>,
    view: Arc<Published>,
}

impl Handle {
    /// A handle for a forwarder that does not run, with the reason.
    pub(crate) fn disabled(reason: &str) -> Handle {
        Handle {
            tx: None,
            view: Arc::new(Published::new(View {
                enabled: false,
                printer: reason.to_string(),
                ..View::default()
            })),
        }
    }

    /// Tells the forwarder that the receiver stored a verified file, with
    /// how it was sent.
    pub fn stored(&self, file: &crate::agent::spool::Stored, client: &str, sent: Sent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Stored(Stored {
                name: file.name.clone(),
                sha256: file.sha256.clone(),
                size: file.size,
                client: client.into(),
                overwrite: sent.overwrite,
                print: sent.print,
                inode: file.inode,
                arrived: queue::now(),
            }));
        }
    }

    /// The forwarded file of this name, if any (see [`View::holds`]).
    pub fn holds(&self, name: &str) -> Option<Held> {
        self.view.read(|view| view.holds(name)).flatten()
    }

    /// A person (`client`) starts the file `name`, or the oldest waiting
    /// one: uploaded first if need be. Returns the file's name.
    pub async fn print(&self, name: Option<&str>, client: &str) -> Result<String, PrintRefused> {
        let off = || {
            let why = self.view().printer;
            PrintRefused::NotReady(format!("cannot print: {why}"))
        };
        let Some(tx) = &self.tx else {
            return Err(off());
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let print = Message::Print {
            name: name.map(str::to_owned),
            client: client.into(),
            reply,
        };
        if tx.send(print).is_err() {
            return Err(off());
        }
        match tokio::time::timeout(FORGET_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(off()),
            Err(_) => Err(PrintRefused::Busy(
                "the agent is busy with the print server and did not start the print: try again in a minute"
                    .into(),
            )),
        }
    }

    /// Forgets the forwarded file `name` (uploaded, printed or failed) and
    /// removes the agent's copy in `done/` or `failed/`, unless it is being
    /// printed. With forwarding off no file is known.
    pub(crate) async fn forget(&self, name: &str) -> Forget {
        let Some(tx) = &self.tx else {
            return Forget::Unknown;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let forget = Message::Forget {
            name: name.into(),
            reply,
        };
        if tx.send(forget).is_err() {
            return Forget::Unknown;
        }
        match tokio::time::timeout(FORGET_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            // Dropped unanswered: forwarding is off now.
            Ok(Err(_)) => Forget::Unknown,
            Err(_) => Forget::Busy,
        }
    }

    /// A snapshot of the forwarder's state.
    pub(crate) fn view(&self) -> View {
        self.view.snapshot()
    }

    /// What `watch` reports now, with the file `name` if given.
    pub(crate) fn watched(&self, name: Option<&str>) -> crate::wire::protocol::Watched {
        self.view
            .read(|view| view.watched(name))
            .unwrap_or_default()
    }

    /// Wakes on every change of what `watch` reports.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.view.subscribe()
    }
}
