//! The printers' state for `/api/printer` and `/api/job`: one `watch` per
//! agent, opened when a client first asks and kept while clients keep
//! asking (Cura polls every 2 s), so a poll is answered from the last
//! report, not with a round trip to the Pi. A watch nobody asked about for
//! `IDLE` ends; a broken one is opened again after `RETRY`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::deliver::{self, Destination};
use crate::wire::protocol::Watched;

/// A watch nobody asked about for this long ends.
const IDLE: Duration = Duration::from_secs(60);
/// Wait before opening a broken watch again.
const RETRY: Duration = Duration::from_secs(2);
/// How long a first question waits for the first report.
const FIRST_REPORT: Duration = Duration::from_secs(5);

/// The last report of an agent, or why there is none.
pub(crate) type Report = Option<Result<Watched, String>>;

/// One agent's watch.
struct Follow {
    report: watch::Receiver<Report>,
    asked: Arc<Mutex<Instant>>,
}

/// The watches, by agent name.
#[derive(Default)]
pub(crate) struct Printers {
    follows: Mutex<HashMap<String, Follow>>,
}

/// What a client hears while `dest` has not reported.
fn silent(dest: &Destination) -> String {
    format!(
        "{}: the agent at {} has not reported the printer within {} s: check that it runs and is \
         reachable (`fileagent ping --agent {}`)",
        dest.name,
        dest.address,
        FIRST_REPORT.as_secs(),
        dest.name
    )
}

impl Printers {
    /// What `dest` last reported (waiting briefly for a first report), or
    /// why it cannot say.
    pub(crate) async fn state(self: &Arc<Self>, dest: &Destination) -> Result<Watched, String> {
        let mut report = self.follow(dest);
        let first = tokio::time::timeout(FIRST_REPORT, report.wait_for(Option::is_some)).await;
        match first {
            Ok(Ok(now)) => now.clone().unwrap_or_else(|| Err(silent(dest))),
            _ => Err(silent(dest)),
        }
    }

    /// The watch of `dest`, opened if need be; notes that it was asked.
    pub(crate) fn follow(self: &Arc<Self>, dest: &Destination) -> watch::Receiver<Report> {
        let mut follows = self.follows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(follow) = follows.get(&dest.name) {
            *follow.asked.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            return follow.report.clone();
        }
        let (tx, rx) = watch::channel(None);
        let asked = Arc::new(Mutex::new(Instant::now()));
        follows.insert(
            dest.name.clone(),
            Follow {
                report: rx.clone(),
                asked: asked.clone(),
            },
        );
        tokio::spawn(Arc::clone(self).run(dest.clone(), tx, asked));
        rx
    }

    /// Keeps `dest`'s watch going while it is asked about.
    async fn run(
        self: Arc<Self>,
        dest: Destination,
        tx: watch::Sender<Report>,
        asked: Arc<Mutex<Instant>>,
    ) {
        let idle = || asked.lock().map(|t| t.elapsed() > IDLE).unwrap_or(true);
        while !idle() {
            let why = match deliver::connect(&dest).await {
                Ok(mut client) => {
                    let mut next = client.watch(None).await;
                    loop {
                        match next {
                            Ok(report) => tx.send_replace(Some(Ok(report))),
                            Err(e) => break deliver::failure(&dest.name, e).text,
                        };
                        if idle() {
                            return self.forget(&dest.name);
                        }
                        next = client.next_watched().await;
                    }
                }
                Err(failure) => failure.text,
            };
            tx.send_replace(Some(Err(why)));
            tokio::time::sleep(RETRY).await;
        }
        self.forget(&dest.name);
    }

    fn forget(&self, name: &str) {
        self.follows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}
