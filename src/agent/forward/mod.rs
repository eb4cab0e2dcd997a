//! Forwarding: every print file that lands in `ready/` is uploaded to the
//! local OctoPrint and, per the print policy, printed, without ever
//! disturbing a running job.
//!
//! One task, the `Forwarder`, owns the durable [`queue::Queue`] and does
//! everything in order: it hears of files from the receiver (complete and
//! verified) and from the [`watch`]er (other tools), polls the printer,
//! uploads one file at a time, starts queued prints, follows running ones
//! and cleans `done/`. While OctoPrint is unreachable or failing it backs
//! off exponentially and logs once per change of state. Sessions read a
//! snapshot of its state ([`View`]) for `list` and `status`, and ask it to
//! [`forget`](Handle::forget) a forwarded file on `delete`.

mod backlog;
mod forwarder;
pub mod octoprint;
mod person;
pub mod policy;
mod printing;
pub mod queue;
mod retention;
mod upload;
mod view;
pub mod watch;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::agent::config::ApiKey;
use crate::agent::config::Config;
use crate::agent::spool::{DONE_DIR, FAILED_DIR};
use forwarder::Forwarder;
use octoprint::OctoPrint;
use policy::Policy;
use queue::{QUEUE_FILE, Queue};
pub use view::{Held, View};
use watch::Settler;

/// How long `delete` waits for the forwarder, which may be in the middle
/// of an upload to OctoPrint.
pub const FORGET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A file stored by the receiver.
#[derive(Debug)]
struct Stored {
    name: String,
    sha256: String,
    size: u64,
    client: String,
    overwrite: bool,
    /// When it was stored (Unix seconds).
    arrived: u64,
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
}

/// The answer to [`Handle::forget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// No forwarded file of that name.
    Unknown,
    /// Forgotten, and the agent's copy removed; OctoPrint keeps its own.
    Forgotten,
    /// It is being printed: it stays.
    Printing,
    /// The forwarder did not answer within [`FORGET_TIMEOUT`].
    Busy,
}

/// The receiver's and the sessions' side of the forwarder.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: Option<mpsc::UnboundedSender<Message>>,
    view: Arc<Mutex<View>>,
}

impl Handle {
    /// A handle for a forwarder that does not run, with the reason.
    pub fn disabled(reason: &str) -> Handle {
        Handle {
            tx: None,
            view: Arc::new(Mutex::new(View {
                enabled: false,
                printer: reason.to_string(),
                ..View::default()
            })),
        }
    }

    /// Tells the forwarder that the receiver stored a verified file.
    pub fn stored(&self, name: &str, sha256: &str, size: u64, client: &str, overwrite: bool) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Stored(Stored {
                name: name.into(),
                sha256: sha256.into(),
                size,
                client: client.into(),
                overwrite,
                arrived: queue::now(),
            }));
        }
    }

    /// The forwarded file of this name, if any (see [`View::holds`]).
    pub fn holds(&self, name: &str) -> Option<Held> {
        self.view.lock().ok()?.holds(name)
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
                "the agent is busy with OctoPrint and did not start the print: try again in a minute"
                    .into(),
            )),
        }
    }

    /// Forgets the forwarded file `name` (uploaded, printed or failed) and
    /// removes the agent's copy in `done/` or `failed/`, unless it is being
    /// printed. With forwarding off no file is known.
    pub async fn forget(&self, name: &str) -> Forget {
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
    pub fn view(&self) -> View {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The forwarding supervisor: runs one `Forwarder` at a time for the
/// config in force, and replaces it when the config is reloaded.
#[derive(Debug)]
pub struct Running {
    desired: tokio::sync::watch::Sender<Option<Config>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Applies `config`: the running forwarder finishes the step it is in,
    /// then a new one starts from the durable queue with the new settings
    /// (and API key file), or forwarding stops if they turn it off.
    pub fn reconfigure(&self, config: &Config) {
        self.desired.send_replace(Some(config.clone()));
    }

    /// Stops forwarding after the step it is in.
    pub async fn stop(self) {
        self.desired.send_replace(None);
        let _ = self.task.await;
    }

    /// The supervisor task ended (it only ends through [`Running::stop`],
    /// so this means it panicked).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts forwarding for `config` (unless it is disabled or has no API
/// key: then the handle's view says why, and a later
/// [`Running::reconfigure`] may turn it on). Fails if the spool's
/// forwarding state cannot be set up.
pub fn start(config: &Config) -> Result<(Handle, Running)> {
    let view = Arc::new(Mutex::new(View::default()));
    let first = build(config, &view)?;
    let (tx, arrivals) = mpsc::unbounded_channel();
    let (desired, desired_rx) = tokio::sync::watch::channel(Some(config.clone()));
    let span = info_span!("forward");
    let task = tokio::spawn(supervise(first, desired_rx, arrivals, view.clone()).instrument(span));
    Ok((Handle { tx: Some(tx), view }, Running { desired, task }))
}

/// A forwarder ready to run, with its directory watch.
struct Built {
    forwarder: Forwarder,
    watcher: notify::RecommendedWatcher,
    changes: mpsc::UnboundedReceiver<watch::Change>,
}

/// Runs forwarders one after the other as the desired config changes.
async fn supervise(
    mut current: Option<Built>,
    mut desired: tokio::sync::watch::Receiver<Option<Config>>,
    mut arrivals: mpsc::UnboundedReceiver<Message>,
    view: Arc<Mutex<View>>,
) {
    desired.borrow_and_update();
    loop {
        let changed = match current.take() {
            Some(Built {
                forwarder,
                watcher,
                changes,
            }) => {
                let url = forwarder.octo.url().to_string();
                let mut changed = Ok(());
                forwarder
                    .run(&mut arrivals, changes, async {
                        changed = desired.changed().await
                    })
                    .instrument(info_span!("octoprint", url = %url))
                    .await;
                drop(watcher);
                changed
            }
            // Off: files sent meanwhile are recorded for the next forwarder,
            // every one stored before it was asked for first (biased), so
            // none of them passes for an arrival of the forwarder that runs.
            None => loop {
                tokio::select! {
                    biased;
                    Some(message) = arrivals.recv() => off(message, &desired, &view),
                    changed = desired.changed() => break changed,
                }
            },
        };
        let Some(config) = desired.borrow_and_update().clone() else {
            return;
        };
        if changed.is_err() {
            return; // the daemon dropped its side without stopping us
        }
        current = match build(&config, &view) {
            Ok(built) => built,
            Err(e) => {
                let reason = format!("forwarding is off: {e:#}");
                error!("{reason}");
                set_disabled(&view, &reason);
                None
            }
        };
    }
}

/// What the receiver and sessions ask while forwarding is off.
fn off(
    message: Message,
    desired: &tokio::sync::watch::Receiver<Option<Config>>,
    view: &Mutex<View>,
) {
    match message {
        Message::Stored(stored) => {
            if let Some(config) = desired.borrow().as_ref() {
                backlog::record_while_off(&config.spool_dir, &stored);
            }
        }
        // Nothing forwarded is known while off.
        Message::Forget { reply, .. } => {
            let _ = reply.send(Forget::Unknown);
        }
        Message::Print { reply, .. } => {
            let why = view.lock().map(|v| v.printer.clone()).unwrap_or_default();
            let _ = reply.send(Err(PrintRefused::NotReady(format!("cannot print: {why}"))));
        }
    }
}

fn set_disabled(view: &Mutex<View>, reason: &str) {
    if let Ok(mut view) = view.lock() {
        *view = View {
            enabled: false,
            printer: reason.to_string(),
            ..View::default()
        };
    }
}

/// Sets up a forwarder for `config`, or none (with the reason in `view`)
/// when forwarding is off or has no API key.
fn build(config: &Config, view: &Arc<Mutex<View>>) -> Result<Option<Built>> {
    let octo = &config.octoprint;
    if !octo.enabled {
        set_disabled(view, "forwarding is off ([octoprint] enabled = false)");
        return Ok(None);
    }
    let key = match (&octo.api_key, std::fs::read_to_string(&octo.api_key_file)) {
        // An empty key (`api_key = ""`) is no key.
        (Some(key), _) if !key.is_empty() => key.clone(),
        (None, Ok(key)) if !key.trim().is_empty() => ApiKey::new(&key),
        _ => {
            let reason = format!(
                "forwarding is off: no OctoPrint API key (put it in {} or set [octoprint] api_key, then reload)",
                octo.api_key_file.display()
            );
            warn!("{reason}");
            set_disabled(view, &reason);
            return Ok(None);
        }
    };
    let spool = &config.spool_dir;
    for dir in [DONE_DIR, FAILED_DIR] {
        std::fs::create_dir_all(spool.join(dir))
            .with_context(|| format!("cannot create {}", spool.join(dir).display()))?;
    }
    let ready = spool.join(crate::agent::spool::READY_DIR);
    let queue = Queue::load(&spool.join(QUEUE_FILE))?;
    let backlog = backlog::unknown_in_ready(&ready, &queue);
    backlog::announce(&queue, backlog.len());
    let (watcher, changes) = watch::start(&ready)
        .with_context(|| format!("cannot watch {} for new files", ready.display()))?;
    if let Ok(mut view) = view.lock() {
        *view = View {
            enabled: true,
            printer: "not contacted yet".into(),
            entries: queue.entries().to_vec(),
            bed: queue.bed.clone(),
            policy: Some(Policy {
                auto_print: octo.auto_print,
                queue: octo.queue,
            }),
            printer_busy: false,
        };
    }
    info!(url = %octo.url, auto_print = octo.auto_print.name(), queue = octo.queue, "forwarding to OctoPrint");
    let forwarder = Forwarder {
        octo: OctoPrint::new(&octo.url, key)?,
        config: config.clone(),
        settler: Settler::new(&ready, config.settle_time),
        ready,
        done: spool.join(DONE_DIR),
        failed: spool.join(FAILED_DIR),
        queue,
        view: view.clone(),
        problem: None,
        backoff: config.octoprint.retry_initial,
        retry_at: Instant::now(),
        next_poll: Instant::now(),
        next_scan: Instant::now(),
        progress: None,
        was_busy: None,
        last_job: None,
        backlog,
    };
    Ok(Some(Built {
        forwarder,
        watcher,
        changes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_api_key_leaves_forwarding_off() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config {
            spool_dir: tmp.path().join("spool"),
            state_dir: tmp.path().join("state"),
            ..Config::default()
        };
        config.octoprint.enabled = true;
        config.octoprint.api_key = Some(ApiKey::new(""));
        config.octoprint.api_key_file = tmp.path().join("absent.key");
        let view = Arc::new(Mutex::new(View::default()));
        assert!(build(&config, &view).unwrap().is_none());
        let view = view.lock().unwrap().clone();
        assert!(!view.enabled);
        assert!(
            view.printer.contains("no OctoPrint API key"),
            "{}",
            view.printer
        );
        // Blank in the key file: off too.
        std::fs::write(&config.octoprint.api_key_file, " \n").unwrap();
        config.octoprint.api_key = None;
        let view = Arc::new(Mutex::new(View::default()));
        assert!(build(&config, &view).unwrap().is_none());
    }
}
