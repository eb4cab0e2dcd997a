//! The forwarding task: one loop that owns the durable queue, hears of new
//! files, polls the printer, uploads one file at a time (in [`super::upload`]), starts queued
//! prints and follows running ones (both in [`super::printing`]) and lets
//! files go (in [`super::retention`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::printer::{Printer, PrinterError};
use super::queue::{FileState, Queue};
use super::watch::{self, Change, Settler};
use super::{Message, Published, Stored};
use crate::agent::config::Config;

/// The forwarding task's state.
pub(super) struct Forwarder {
    pub(super) printer: Printer,
    pub(super) config: Config,
    pub(super) settler: Settler,
    pub(super) ready: PathBuf,
    pub(super) done: PathBuf,
    pub(super) failed: PathBuf,
    pub(super) queue: Queue,
    pub(super) view: Arc<Published>,
    /// The print server failure being retried, if any (logged once).
    pub(super) problem: Option<String>,
    pub(super) backoff: Duration,
    pub(super) retry_at: Instant,
    pub(super) next_poll: Instant,
    pub(super) next_scan: Instant,
    /// The entry printing now and its completion at the last poll.
    pub(super) progress: Option<(u64, f64)>,
    /// Whether the printer was busy at the last poll (`None`: not polled yet).
    pub(super) was_busy: Option<bool>,
    /// The job the printer ran when last seen busy.
    pub(super) last_job: Option<String>,
    /// Files found in `ready/` when forwarding started that the queue did
    /// not know: registered as backlog once they settle.
    pub(super) backlog: HashSet<String>,
    /// An entry sent again to print, to start at the next look if the
    /// rules allow.
    pub(super) again: Option<u64>,
    /// Messages that came during a step and wait for its end.
    pub(super) deferred: std::collections::VecDeque<Message>,
}

impl Forwarder {
    /// Runs until `stop` completes, after the step it is in. `messages`
    /// outlives one forwarder: a reconfigured successor takes it over.
    pub(super) async fn run(
        mut self,
        messages: &mut mpsc::UnboundedReceiver<Message>,
        mut changes: mpsc::UnboundedReceiver<Change>,
        stop: impl Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        self.removed_while_stopped();
        loop {
            let now = Instant::now();
            // A stop does not wait for the print server: a request to one
            // that hangs may take READ_TIMEOUT, longer than systemd waits.
            // Stopping mid-step is stopping as a crash would, which the
            // queue is made for (before an upload the agent asks the server
            // whether it has the file already, so none is repeated).
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = self.work(now, messages) => {}
            }
            let wake = [
                Some(self.next_poll.max(self.retry_at)),
                Some(self.next_scan),
            ]
            .into_iter()
            .flatten()
            .chain(self.settler.next_check(now).map(|d| now + d))
            .min()
            .unwrap_or(now + self.config.printer().poll_interval);
            tokio::select! {
                () = &mut stop => break,
                Some(message) = messages.recv() => self.handle(message).await,
                Some(change) = changes.recv() => {
                    let now = Instant::now();
                    match change {
                        Change::Written(name) => self.settler.written(&name, now),
                        Change::Completed(name) => self.settler.completed(&name, now),
                        Change::Removed(name) => {
                            self.settler.removed(&name);
                            self.removed(&name);
                        }
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// One round: rescans when due, takes the files that settled (oldest
    /// first: files found at once, a backlog, keep their order), then a
    /// step and the messages it set aside (see `step`), in their order.
    async fn work(&mut self, now: Instant, messages: &mut mpsc::UnboundedReceiver<Message>) {
        if now >= self.next_scan {
            self.settler.scan(now);
            self.next_scan = now + self.config.rescan_interval;
        }
        let mut settled = self.settler.settled(now);
        settled.sort_by_key(|a| (a.modified, a.name.clone()));
        for appeared in settled {
            self.appeared(appeared).await;
        }
        self.step(messages).await;
        while let Some(message) = self.deferred.pop_front() {
            self.handle(message).await;
        }
    }

    async fn handle(&mut self, message: Message) {
        match message {
            Message::Stored(stored) => self.arrived(stored),
            Message::Forget { name, reply } => {
                let _ = reply.send(self.forget(&name));
            }
            Message::Print {
                name,
                client,
                reply,
            } => {
                let _ = reply.send(self.print_now(name.as_deref(), &client).await);
            }
        }
    }

    /// Files the receiver stored while the printer was being read: they
    /// arrived before this state was known, so it decides their upload now
    /// rather than after another read (Moonraker answers a state query at
    /// klippy's next 250 ms tick). Other messages wait for the step's end.
    fn take_arrivals(&mut self, messages: &mut mpsc::UnboundedReceiver<Message>) {
        while let Ok(message) = messages.try_recv() {
            match message {
                Message::Stored(stored) => self.arrived(stored),
                other => self.deferred.push_back(other),
            }
        }
    }

    /// A verified file from the receiver.
    fn arrived(&mut self, stored: Stored) {
        self.settler.known(&stored.name);
        self.backlog.remove(&stored.name);
        let arrival = Arrival {
            client: Some(stored.client),
            time: stored.arrived,
            overwrite: stored.overwrite,
            backlog: false,
            print: stored.print,
            inode: stored.inode,
        };
        self.register(&stored.name, &stored.sha256, stored.size, arrival);
    }

    /// A settled file from another tool: hash it, then register it.
    async fn appeared(&mut self, appeared: watch::Appeared) {
        let path = self.ready.join(&appeared.name);
        let digest = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&path).and_then(|mut f| crate::wire::digest::file_digest(&mut f))
        })
        .await;
        // Found when forwarding started: it waited from before.
        let backlog = self.backlog.remove(&appeared.name);
        let arrival = Arrival {
            client: None,
            time: appeared
                .modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or_else(|_| super::queue::now(), |d| d.as_secs()),
            // Copied over an older file by hand: meant to replace it.
            overwrite: true,
            backlog,
            print: None,
            inode: None,
        };
        match digest {
            Ok(Ok(sha256)) => self.register(&appeared.name, &sha256, appeared.size, arrival),
            Ok(Err(e)) => {
                warn!(file_name = %appeared.name, error = %e, "cannot read a new file in ready/")
            }
            Err(e) => error!(error = %e, "hashing task failed"),
        }
    }

    fn register(&mut self, name: &str, sha256: &str, size: u64, arrival: Arrival) {
        if let Some(known) = self.queue.find(name, sha256)
            && !known.upload_refused()
        {
            let id = known.id;
            if !matches!(known.state, FileState::Received | FileState::Skipped) {
                info!(file_name = %name, sha256 = %sha256, state = known.state.as_str(), "already forwarded, not uploaded again");
                self.move_out(name, &self.done.clone(), None);
            }
            if arrival.print == Some(true) {
                self.asked_again(id);
            }
            return;
        }
        // A new version: what waited or was done under that name is
        // superseded (a print of it that is running is still followed).
        let superseded = self
            .queue
            .remove_where(|e| e.name == name && e.state != FileState::Printing);
        if !superseded.is_empty() {
            info!(file_name = %name, versions = superseded.len(), "a new version replaces the one known under this name");
        }
        let Arrival {
            client,
            time,
            overwrite,
            backlog,
            print,
            inode,
        } = arrival;
        let printable = Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|ext| {
                self.config
                    .print_extensions
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(ext))
            });
        let client_label = client.clone().unwrap_or_else(|| "-".into());
        let skipped = match (printable, size) {
            (false, _) => Some(format!(
                "not a print file (extensions: {})",
                self.config.print_extensions.join(", ")
            )),
            (true, 0) => Some("empty (0 bytes): nothing to print, not forwarded".to_string()),
            (true, _) => None,
        };
        if let Some(reason) = skipped {
            let id = (self.queue).add_arrived(name, sha256, size, client, FileState::Skipped, time);
            info!(file_name = %name, client_cn = %client_label, reason = %reason, "kept in the spool, not forwarded");
            self.queue.set(id, FileState::Skipped, Some(reason));
        } else {
            let id = match backlog {
                true => (self.queue).add_backlog(name, sha256, size, client, time),
                false => {
                    (self.queue).add_arrived(name, sha256, size, client, FileState::Received, time)
                }
            };
            if let Some(e) = self.queue.get_mut(id) {
                e.overwrite = overwrite;
                e.print = print;
                e.inode = inode;
            }
            let print = print.map_or("as auto_print says", |p| match p {
                true => "asked",
                false => "not asked (upload only)",
            });
            info!(file_name = %name, sha256 = %sha256, bytes = size, client_cn = %client_label, backlog, print, "queued for {}", self.printer.server());
            self.next_poll = Instant::now();
        }
        self.save();
    }

    /// One round: read the printer, follow prints, upload the next file,
    /// start the next queued print, clean up.
    async fn step(&mut self, messages: &mut mpsc::UnboundedReceiver<Message>) {
        let now = Instant::now();
        if now < self.retry_at || now < self.next_poll {
            return;
        }
        self.next_poll = now + self.config.printer().poll_interval;
        let state = match self.printer.state().await {
            Ok(state) => state,
            Err(e) => return self.trouble(e),
        };
        self.take_arrivals(messages);
        self.healthy();
        self.follow(&state);
        self.start_again(&state).await;
        // `uploading` after a crash is simply retried: the digest check in
        // `upload` finds a copy OctoPrint already has. A held file waits for
        // the running print to end (OctoPrint will not overwrite the file it
        // prints, and uploading it on every poll would only load the Pi
        // during the print); the files behind it go on, and wait in
        // OctoPrint for their turn (the order rule).
        let next = self
            .queue
            .entries()
            .iter()
            .find(|e| {
                matches!(e.state, FileState::Received | FileState::Uploading)
                    && !(e.held && state.busy)
            })
            .map(|e| e.id);
        if let Some(id) = next {
            self.upload(id, &state, false).await;
            self.next_poll = Instant::now(); // more may be waiting
            return;
        }
        if self.config.printer().queue {
            self.start_next(&state).await;
        }
        self.clean_up();
    }

    /// Entry `id` no longer starts by itself (see [`queue::Entry::held`]).
    pub(super) fn hold(&mut self, id: u64) {
        if let Some(e) = self.queue.get_mut(id) {
            e.held = true;
        }
    }

    /// The print server failed: back off, and log only when the problem changes.
    pub(super) fn trouble(&mut self, e: PrinterError) {
        let text = e.to_string();
        if self.problem.as_deref() != Some(text.as_str()) {
            warn!(error = %text, retry_in = ?self.backoff, "{} not usable, will retry", self.printer.server());
            self.problem = Some(text.clone());
        }
        self.set_printer(format!("error: {text}"));
        self.view.update(|view| view.printer_state = None);
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.printer().retry_max);
    }

    pub(super) fn healthy(&mut self) {
        if self.problem.take().is_some() {
            info!("{} is usable again", self.printer.server());
        }
        self.backoff = self.config.printer().retry_initial;
    }

    /// Moves `ready/NAME` to `to`, unless it is no longer the file with
    /// `inode` (a newer file of the same name took its place).
    pub(super) fn move_out(&self, name: &str, to: &Path, inode: Option<(u64, u64)>) {
        let from = self.ready.join(name);
        if inode.is_some() && crate::agent::spool::inode_of(&from) != inode {
            info!(file_name = %name, "a newer file of this name arrived meanwhile; it stays in ready/");
            return;
        }
        if let Err(e) = std::fs::rename(&from, to.join(name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(file_name = %name, to = %to.display(), error = %e, "cannot move the spool file");
        }
    }

    /// Publishes the printer's state text to sessions.
    pub(super) fn set_printer(&mut self, text: String) {
        self.view.update(|view| view.printer = text);
    }

    /// Persists the queue and publishes it to sessions.
    pub(super) fn save(&mut self) {
        if let Err(e) = self.queue.save() {
            error!(error = %e, "cannot save the forwarding queue; state since the last save is lost on restart");
        }
        let (entries, bed) = (self.queue.entries().to_vec(), self.queue.bed.clone());
        self.view.update(|view| {
            view.entries = entries;
            view.bed = bed;
        });
    }
}

/// Where a file came from, for [`Forwarder::register`].
struct Arrival {
    /// The sender's certificate name, for files sent through fileagent.
    client: Option<String>,
    /// When it arrived (Unix seconds).
    time: u64,
    /// It may replace a different file of its name in OctoPrint.
    overwrite: bool,
    /// It waited from before forwarding ran: never starts by itself.
    backlog: bool,
    /// The sender's print choice (`None`: `auto_print` decides).
    print: Option<bool>,
    /// Its device and inode in `ready/`, when the receiver knows them.
    inode: Option<(u64, u64)>,
}
