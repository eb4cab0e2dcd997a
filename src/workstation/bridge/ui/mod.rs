//! The web page (`fileagent ui`), served under `/ui` by the bridge's own
//! process: drop files on one or many printers, follow each transfer, and
//! watch every paired printer on a board fed by the agents' state streams.
//! The browser only ever talks to this loopback process; identities, keys
//! and certificates stay in it.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /ui/launch?token=T` | redeems a launch token: session cookie, then the page |
//! | `POST /ui/launch-token` (bridge key) | a launch token, for `fileagent ui` when this process runs already |
//! | `GET /ui/`, `/ui/app.js`, `/ui/style.css` | the page (assets embedded in the binary) |
//! | `GET /ui/events` | server-sent events: the whole state (`state`) on every change |
//! | `POST /ui/send?to=..&print=..&name=..` | a file (raw body) to agents and groups |
//! | `POST /ui/jobs/ID/{cancel,retry,replace,dismiss}` | a transfer's actions |
//! | `POST /ui/agents/AGENT/{print,remove}?name=..` | a waiting file's actions |
//!
//! Sessions, CSRF and origin checks: see `session`.

mod board;
mod feed;
mod jobs;
mod page;
mod routes;
pub(crate) mod session;
mod source;

pub(crate) use routes::router;

/// A lock that a panic elsewhere does not poison for the page: each state
/// behind these locks is whole between statements.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The page's shared state.
pub(crate) struct Ui {
    pub(crate) sessions: session::Sessions,
    jobs: std::sync::Arc<jobs::Jobs>,
    board: std::sync::Arc<board::Board>,
}

impl Ui {
    /// Returns once no transfer from the page is running.
    pub(crate) async fn jobs_idle(&self) {
        self.jobs.idle().await;
    }
}

impl Default for Ui {
    fn default() -> Ui {
        let board = std::sync::Arc::new(board::Board::default());
        Ui {
            sessions: session::Sessions::default(),
            jobs: std::sync::Arc::new(jobs::Jobs::new(std::sync::Arc::clone(&board))),
            board,
        }
    }
}
