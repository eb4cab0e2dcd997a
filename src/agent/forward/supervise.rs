//! The forwarding supervisor: builds a forwarder for the config in force
//! (or says why forwarding is off), runs it, and replaces it when the config
//! is reloaded; while off, files sent meanwhile are recorded for the next
//! forwarder.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use super::forwarder::Forwarder;
use super::moonraker::Moonraker;
use super::octoprint::OctoPrint;
use super::policy::Policy;
use super::printer::Printer;
use super::queue::{QUEUE_FILE, Queue};
use super::watch::{self, Settler};
use super::{Forget, Handle, Message, PrintRefused, Published, View, backlog};
use crate::agent::config::{ApiKey, Config, PrinterConfig, Server};
use crate::agent::spool::{DONE_DIR, FAILED_DIR};

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
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts forwarding for `config` (unless it is disabled or has no API
/// key: then the handle's view says why, and a later
/// [`Running::reconfigure`] may turn it on). Fails if the spool's
/// forwarding state cannot be set up.
pub fn start(config: &Config) -> Result<(Handle, Running)> {
    let view = Arc::new(Published::new(View::default()));
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
    view: Arc<Published>,
) {
    desired.borrow_and_update();
    loop {
        let changed = match current.take() {
            Some(Built {
                forwarder,
                watcher,
                changes,
            }) => {
                let (server, url) = (
                    forwarder.printer.server(),
                    forwarder.printer.url().to_string(),
                );
                let mut changed = Ok(());
                forwarder
                    .run(&mut arrivals, changes, async {
                        changed = desired.changed().await
                    })
                    .instrument(info_span!("printer", %server, url = %url))
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
fn off(message: Message, desired: &tokio::sync::watch::Receiver<Option<Config>>, view: &Published) {
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
            let why = view.read(|v| v.printer.clone()).unwrap_or_default();
            let _ = reply.send(Err(PrintRefused::NotReady(format!("cannot print: {why}"))));
        }
    }
}

fn set_disabled(view: &Published, reason: &str) {
    view.update(|view| {
        *view = View {
            enabled: false,
            printer: reason.to_string(),
            ..View::default()
        }
    });
}

/// The API key: `api_key`, else the key file's text; an empty one is no
/// key.
fn api_key(server: Server, settings: &PrinterConfig) -> Option<ApiKey> {
    match (
        &settings.api_key,
        std::fs::read_to_string(settings.key_file(server)),
    ) {
        (Some(key), _) if !key.is_empty() => Some(key.clone()),
        (None, Ok(key)) if !key.trim().is_empty() => Some(ApiKey::new(&key)),
        _ => None,
    }
}

/// What sessions see of a forwarder about to run.
fn set_enabled(view: &Published, queue: &Queue, settings: &PrinterConfig) {
    view.update(|view| {
        *view = View {
            enabled: true,
            printer: "not contacted yet".into(),
            entries: queue.entries().to_vec(),
            bed: queue.bed.clone(),
            policy: Some(Policy::of(settings)),
            printer_busy: false,
            printer_state: None,
        }
    });
}

/// Sets up a forwarder for `config`, or none (with the reason in `view`)
/// when forwarding is off or OctoPrint has no API key (Moonraker may do
/// without one: it can trust the agent's address).
fn build(config: &Config, view: &Arc<Published>) -> Result<Option<Built>> {
    let (server, settings) = config.forwarding();
    let table = server.table();
    if !settings.enabled {
        set_disabled(
            view,
            &format!("forwarding is off ([{table}] enabled = false)"),
        );
        return Ok(None);
    }
    let key = api_key(server, settings);
    let printer = match (server, key) {
        (Server::OctoPrint, Some(key)) => {
            Printer::OctoPrint(OctoPrint::new(settings.url(server), key)?)
        }
        (Server::OctoPrint, None) => {
            let reason = format!(
                "forwarding is off: no OctoPrint API key (put it in {} or set [octoprint] api_key, then reload)",
                settings.key_file(server).display()
            );
            warn!("{reason}");
            set_disabled(view, &reason);
            return Ok(None);
        }
        (Server::Moonraker, key) => {
            if key.is_none() {
                info!(key_file = %settings.key_file(server).display(), "no Moonraker API key: Moonraker must trust this address ([authorization] trusted_clients)");
            }
            Printer::Moonraker(Moonraker::new(settings.url(server), key)?)
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
    set_enabled(view, &queue, settings);
    info!(server = server.name(), url = %printer.url(), auto_print = settings.auto_print.name(), queue = settings.queue, "forwarding");
    let forwarder = Forwarder {
        printer,
        config: config.clone(),
        settler: Settler::new(&ready, config.settle_time),
        ready,
        done: spool.join(DONE_DIR),
        failed: spool.join(FAILED_DIR),
        queue,
        view: view.clone(),
        problem: None,
        backoff: settings.retry_initial,
        retry_at: Instant::now(),
        next_poll: Instant::now(),
        next_scan: Instant::now(),
        progress: None,
        was_busy: None,
        last_job: None,
        backlog,
        again: None,
        deferred: Default::default(),
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
        config.octoprint.api_key_file = Some(tmp.path().join("absent.key"));
        let view = Arc::new(Published::new(View::default()));
        assert!(build(&config, &view).unwrap().is_none());
        let view = view.snapshot();
        assert!(!view.enabled);
        assert!(
            view.printer.contains("no OctoPrint API key"),
            "{}",
            view.printer
        );
        // Blank in the key file: off too.
        std::fs::write(config.octoprint.api_key_file.as_ref().unwrap(), " \n").unwrap();
        config.octoprint.api_key = None;
        let view = Arc::new(Published::new(View::default()));
        assert!(build(&config, &view).unwrap().is_none());
    }
}
