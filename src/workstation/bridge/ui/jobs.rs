//! Transfers started from the page: one job per file and printer, each a
//! task that sends the spooled file to its agent (as the bridge's upload
//! does: resumed after a network failure, answered once stored and
//! verified), reporting its phase, bytes, rate and time left, then the
//! outcome: stored, started, waiting and why, or failed and why.
//!
//! A job can be cancelled while it runs: its task is dropped, the agent is
//! never told to store the file, so nothing lands (after the final word
//! was given, cancelling is too late, and the job says so). A failed or
//! cancelled job can be tried again from the same spooled copy; a file of
//! the same name on the agent is not replaced unless the person says so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use super::board::Board;
use super::lock;
pub(crate) use super::source::Source;
use crate::wire::protocol::ErrorCode;
use crate::workstation::bridge::deliver::{self, Destination, Parcel};
use crate::workstation::{Fate, Observer, Phase};

/// Jobs kept for the page, at most: the oldest finished ones go first.
const MAX_JOBS: usize = 200;
/// How long a job that sent a file to print follows it for its fate.
const FATE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    Connecting,
    Sending,
    /// The agent verified the body and was told to store it.
    Storing,
    /// Stored; for a print, its fate is being followed.
    Following,
    Stored,
    Started,
    Waiting,
    /// A different file of that name is on the agent.
    Exists,
    Failed,
    Cancelled,
}

impl State {
    fn running(self) -> bool {
        matches!(
            self,
            State::Connecting | State::Sending | State::Storing | State::Following
        )
    }
}

/// One job as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct View {
    pub(crate) id: u64,
    pub(crate) file: String,
    pub(crate) agent: String,
    pub(crate) size: u64,
    pub(crate) print: bool,
    pub(crate) state: State,
    /// Bytes the agent has.
    pub(crate) done: u64,
    /// Bytes per second over the send so far.
    pub(crate) rate: Option<f64>,
    /// Seconds left at that rate.
    pub(crate) eta: Option<f64>,
    /// What happened, in words (the reason it waits or failed).
    pub(crate) text: String,
}

struct Job {
    view: View,
    dest: Destination,
    /// The file, kept while the job may be tried again (not once it
    /// stored: the spooled copy goes when no job needs it).
    spool: Option<Arc<Source>>,
    sending_since: Option<Instant>,
    task: Option<tokio::task::AbortHandle>,
}

/// Every job, and a counter that moves on every change (the page's feed
/// waits on it).
pub(crate) struct Jobs {
    jobs: Mutex<BTreeMap<u64, Job>>,
    next: std::sync::atomic::AtomicU64,
    changed: watch::Sender<u64>,
    /// Moves when a job's state changes (not its progress): news the page
    /// gets at once.
    settled: watch::Sender<u64>,
    /// Told when a job ends: the agent's file list changed.
    board: Arc<Board>,
}

impl Jobs {
    pub(crate) fn new(board: Arc<Board>) -> Jobs {
        Jobs {
            jobs: Mutex::default(),
            next: std::sync::atomic::AtomicU64::new(1),
            changed: watch::channel(0).0,
            settled: watch::channel(0).0,
            board,
        }
    }

    /// Starts sending `spool` as `file` to each of `dests`; the new jobs' ids.
    pub(crate) fn start(
        self: &Arc<Self>,
        dests: Vec<Destination>,
        spool: Arc<Source>,
        file: &str,
        print: bool,
    ) -> Vec<u64> {
        let ids: Vec<u64> = dests
            .into_iter()
            .map(|dest| {
                let id = self.new_id();
                let view = View {
                    id,
                    file: file.to_string(),
                    agent: dest.name.clone(),
                    size: spool.size,
                    print,
                    state: State::Connecting,
                    done: 0,
                    rate: None,
                    eta: None,
                    text: String::new(),
                };
                let job = Job {
                    view,
                    dest,
                    spool: Some(Arc::clone(&spool)),
                    sending_since: None,
                    task: None,
                };
                lock(&self.jobs).insert(id, job);
                id
            })
            .collect();
        for &id in &ids {
            self.spawn(id, false);
        }
        self.trim();
        ids
    }

    /// Tries a failed or cancelled job again (`replace`: over a different
    /// file of that name). False if it is running, stored or unknown.
    pub(crate) fn retry(self: &Arc<Self>, id: u64, replace: bool) -> bool {
        let restartable = self.update(id, |job| {
            if job.view.state.running() || job.spool.is_none() {
                return false;
            }
            job.view.state = State::Connecting;
            job.view.done = 0;
            job.view.text.clear();
            (job.view.rate, job.view.eta, job.sending_since) = (None, None, None);
            true
        });
        if restartable == Some(true) {
            self.spawn(id, replace);
            return true;
        }
        false
    }

    /// Cancels a running job. False if it is not running.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        self.update(id, |job| {
            if !job.view.state.running() {
                return false;
            }
            if let Some(task) = job.task.take() {
                task.abort();
            }
            job.view.text = match job.view.state {
                State::Storing | State::Following => {
                    "cancelled after the agent was told to store it: it may be stored; see the board"
                }
                _ => "cancelled: nothing was stored",
            }
            .into();
            job.view.state = State::Cancelled;
            (job.view.rate, job.view.eta) = (None, None);
            true
        })
        .unwrap_or(false)
    }

    /// Forgets a job that is not running. False if it is running or unknown.
    pub(crate) fn dismiss(&self, id: u64) -> bool {
        let mut jobs = lock(&self.jobs);
        match jobs.get(&id) {
            Some(job) if !job.view.state.running() => {
                jobs.remove(&id);
                drop(jobs);
                self.changed.send_modify(|n| *n += 1);
                true
            }
            _ => false,
        }
    }

    /// Returns once no job is carrying a file (the process stops after
    /// them, as after the requests under way).
    pub(crate) async fn idle(&self) {
        let mut changed = self.changed.subscribe();
        // Following a stored file's fate is not worth waiting for.
        let carrying = |s| matches!(s, State::Connecting | State::Sending | State::Storing);
        while lock(&self.jobs).values().any(|j| carrying(j.view.state)) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every job, oldest first.
    pub(crate) fn views(&self) -> Vec<View> {
        lock(&self.jobs).values().map(|j| j.view.clone()).collect()
    }

    /// Receivers that change whenever a job does, and whenever a job's
    /// state does.
    pub(crate) fn subscribe(&self) -> (watch::Receiver<u64>, watch::Receiver<u64>) {
        (self.changed.subscribe(), self.settled.subscribe())
    }

    fn new_id(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` on job `id` and tells the page; `None` if there is none.
    fn update<T>(&self, id: u64, f: impl FnOnce(&mut Job) -> T) -> Option<T> {
        let (out, moved) = match lock(&self.jobs).get_mut(&id) {
            Some(job) => {
                let before = job.view.state;
                let out = f(job);
                (Some(out), job.view.state != before)
            }
            None => (None, false),
        };
        self.changed.send_modify(|n| *n += 1);
        if moved {
            self.settled.send_modify(|n| *n += 1);
        }
        out
    }

    fn spawn(self: &Arc<Self>, id: u64, replace: bool) {
        let jobs = Arc::clone(self);
        let task = tokio::spawn(async move { jobs.run(id, replace).await });
        let handle = task.abort_handle();
        self.update(id, |job| job.task = Some(handle));
    }

    /// One job: connect, send, then (for a print) the file's fate.
    async fn run(self: Arc<Self>, id: u64, replace: bool) {
        let Some(Some((dest, spool, file, print))) = self.update(id, |job| {
            let v = &job.view;
            let spool = Arc::clone(job.spool.as_ref()?);
            Some((job.dest.clone(), spool, v.file.clone(), v.print))
        }) else {
            return;
        };
        let client = deliver::connect(&dest).await;
        // Spooled by now (a retry, or a slow connection), or still arriving.
        let spooled = spool.finished();
        let parcel = Parcel {
            path: &spool.path,
            sha256: spooled.as_ref().map(|s| s.sha256.as_str()),
            growing: match (&spooled, &spool.growth) {
                (None, Some(growth)) => Some((spool.size, Arc::clone(growth))),
                _ => None,
            },
            name: &file,
            print,
            overwrite: replace,
        };
        let mut observer = Progress { jobs: &self, id };
        let (sent, client) = deliver::send(&dest, client, &parcel, &mut observer).await;
        let (state, text) = match (&sent, print, client) {
            (Err(f), _, client) => {
                close(client).await;
                match f.code {
                    Some(ErrorCode::Exists) => (State::Exists, f.text.clone()),
                    _ => (State::Failed, f.text.clone()),
                }
            }
            (Ok(sent), false, client) => {
                close(client).await;
                (State::Stored, stored_text(sent.unchanged, sent.replaced))
            }
            (Ok(sent), true, Some(mut client)) => {
                self.update(id, |job| job.view.state = State::Following);
                let fate = client.fate(&file, sent.unchanged, FATE_WITHIN).await;
                client.close().await;
                match fate {
                    Ok(Fate::Started) => (State::Started, "printing".into()),
                    Ok(Fate::Waiting(why)) => (State::Waiting, why),
                    Ok(Fate::Failed(why)) => {
                        (State::Failed, format!("stored, but will not print: {why}"))
                    }
                    Err(e) => (
                        State::Waiting,
                        format!("stored; cannot tell whether it started: {e}"),
                    ),
                }
            }
            (Ok(sent), true, None) => (State::Stored, stored_text(sent.unchanged, sent.replaced)),
        };
        // Let go of the file before saying the job ended: once no job
        // keeps it, the spooled copy is gone.
        drop((spooled, spool));
        self.board.stale(&dest.name);
        self.update(id, |job| {
            job.view.state = state;
            job.view.text = text;
            job.view.eta = None;
            if matches!(state, State::Stored | State::Started | State::Waiting) {
                job.view.done = job.view.size;
                job.spool = None;
            }
            job.task = None;
        });
    }

    /// Drops the oldest finished jobs beyond [`MAX_JOBS`].
    fn trim(&self) {
        let mut jobs = lock(&self.jobs);
        let finished: Vec<u64> = jobs
            .iter()
            .filter(|(_, j)| !j.view.state.running())
            .map(|(id, _)| *id)
            .collect();
        let excess = jobs.len().saturating_sub(MAX_JOBS);
        for id in finished.into_iter().take(excess) {
            jobs.remove(&id);
        }
    }
}

fn stored_text(unchanged: bool, replaced: bool) -> String {
    match (unchanged, replaced) {
        (true, _) => "stored (the agent had this very file already)",
        (false, true) => "stored, replacing a different file of that name",
        (false, false) => "stored",
    }
    .into()
}

async fn close(client: Option<crate::workstation::Client>) {
    if let Some(client) = client {
        client.close().await;
    }
}

/// A job's send as it goes: phase, bytes, rate.
struct Progress<'a> {
    jobs: &'a Jobs,
    id: u64,
}

impl Observer for Progress<'_> {
    fn phase(&mut self, phase: Phase, _total: u64) {
        if phase == Phase::Sending {
            self.jobs.update(self.id, |job| {
                job.view.state = State::Sending;
                job.sending_since.get_or_insert_with(Instant::now);
            });
        }
    }

    fn progress(&mut self, done: u64) {
        self.jobs.update(self.id, |job| {
            job.view.done = done;
            let Some(since) = job.sending_since else {
                return;
            };
            let secs = since.elapsed().as_secs_f64();
            if secs > 0.2 && done > 0 {
                let rate = done as f64 / secs;
                job.view.rate = Some(rate);
                job.view.eta = Some(job.view.size.saturating_sub(done) as f64 / rate);
            }
        });
    }

    fn committing(&mut self) {
        self.jobs
            .update(self.id, |job| job.view.state = State::Storing);
    }
}
