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

mod forwarder;
pub mod octoprint;
mod printing;
pub mod queue;
mod retention;
pub mod watch;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::Config;
use crate::protocol::FileEntry;
use crate::spool::{DONE_DIR, FAILED_DIR};
use forwarder::Forwarder;
use octoprint::{ApiKey, OctoPrint};
use queue::{Entry, FileState, QUEUE_FILE, Queue};
use watch::Settler;

/// How long `delete` waits for the forwarder, which may be in the middle
/// of an upload to OctoPrint.
pub const FORGET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What sessions can see of the forwarder.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Forwarding runs.
    pub enabled: bool,
    /// Printer state text, or why forwarding is off or failing.
    pub printer: String,
    /// Every known print file, in order of arrival.
    pub entries: Vec<Entry>,
}

/// A file stored by the receiver.
#[derive(Debug)]
struct Stored {
    name: String,
    sha256: String,
    size: u64,
    client: String,
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

impl View {
    /// The spool listing with forwarding states: files in `ready/` that the
    /// forwarder has not taken up (settling, or forwarding off) first, by
    /// name, then every known print file in order of arrival.
    pub fn listing(&self, ready: Vec<FileEntry>) -> Vec<FileEntry> {
        let mut files: Vec<FileEntry> = ready
            .into_iter()
            .filter(|f| {
                !self
                    .entries
                    .iter()
                    .any(|e| e.name == f.name && e.state.in_ready())
            })
            .collect();
        files.extend(self.entries.iter().map(|e| FileEntry {
            name: e.name.clone(),
            size: e.size,
            modified: e.updated,
            state: Some(e.state.as_str().to_string()),
            reason: e.reason.clone(),
        }));
        files
    }

    /// Files waiting to be uploaded or printed by the agent.
    pub fn queued(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, FileState::Received | FileState::Uploading) || e.queued)
            .count() as u64
    }
}

impl Handle {
    /// A handle for a forwarder that does not run, with the reason.
    pub fn disabled(reason: &str) -> Handle {
        Handle {
            tx: None,
            view: Arc::new(Mutex::new(View {
                enabled: false,
                printer: reason.to_string(),
                entries: Vec::new(),
            })),
        }
    }

    /// Tells the forwarder that the receiver stored a verified file.
    pub fn stored(&self, name: &str, sha256: &str, size: u64, client: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message::Stored(Stored {
                name: name.into(),
                sha256: sha256.into(),
                size,
                client: client.into(),
            }));
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
            // Off: files sent meanwhile are found by the next forwarder's scan.
            None => loop {
                tokio::select! {
                    changed = desired.changed() => break changed,
                    Some(_) = arrivals.recv() => {}
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

fn set_disabled(view: &Mutex<View>, reason: &str) {
    if let Ok(mut view) = view.lock() {
        *view = View {
            enabled: false,
            printer: reason.to_string(),
            entries: Vec::new(),
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
        (Some(key), _) => key.clone(),
        (None, Ok(key)) if !key.trim().is_empty() => ApiKey::new(&key),
        (None, _) => {
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
    let ready = spool.join(crate::spool::READY_DIR);
    let queue = Queue::load(&spool.join(QUEUE_FILE))?;
    let (watcher, changes) = watch::start(&ready)
        .with_context(|| format!("cannot watch {} for new files", ready.display()))?;
    if let Ok(mut view) = view.lock() {
        *view = View {
            enabled: true,
            printer: "not contacted yet".into(),
            entries: queue.entries().to_vec(),
        };
    }
    info!(url = %octo.url, auto_print = octo.auto_print.name(), queue = octo.queue, "forwarding to OctoPrint");
    let forwarder = Forwarder {
        octo: OctoPrint::new(&octo.url, key),
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
    };
    Ok(Some(Built {
        forwarder,
        watcher,
        changes,
    }))
}
