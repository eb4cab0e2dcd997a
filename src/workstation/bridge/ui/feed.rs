//! The page's live feed (`GET /ui/events`, server-sent events): the whole
//! state (every paired agent's card, the groups, every transfer) at once,
//! then again after every change: a change after a quiet spell at once, a
//! burst at most every [`COALESCE`], a transfer's new state at once. One
//! direction is all the page needs, and the browser reconnects by itself.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;

use super::board;
use super::routes::Shared;
use crate::workstation::bridge::Bridge;
use crate::workstation::bridge::deliver::{self, Destination};
use crate::workstation::config::ClientConfig;

/// Changes closer together than this reach the page as one.
const COALESCE: Duration = Duration::from_millis(50);
/// The page's stream is refreshed at least this often (the printers'
/// watches stay open while it is, and new pairings show up).
const REFRESH: Duration = Duration::from_secs(10);

/// Every paired agent and the groups, from client.toml.
fn paired(bridge: &Bridge) -> Result<(Vec<Destination>, board::Groups), String> {
    let config = ClientConfig::load(&bridge.dir).map_err(|e| format!("{e:#}"))?;
    let dests = config
        .agents
        .keys()
        .map(|name| deliver::destination(&config, &bridge.dir, name.clone()).map_err(|f| f.text))
        .collect::<Result<Vec<_>, String>>()?;
    Ok((dests, config.groups))
}

/// The whole state as the page gets it, and the agents' streams to wait on.
fn snapshot(bridge: &Bridge) -> (serde_json::Value, Vec<Watch>) {
    let (dests, groups, error) = match paired(bridge) {
        Ok((dests, groups)) => (dests, groups, None),
        Err(e) => (Vec::new(), board::Groups::new(), Some(e)),
    };
    let (cards, streams) = board::cards(&bridge.ui.board, &bridge.printers, &dests);
    let state = json!({
        "agents": cards,
        "groups": groups,
        "jobs": bridge.ui.jobs.views(),
        "config_error": error,
    });
    (state, streams)
}

/// One page's event stream: what it waits on, and when it last sent.
struct Feed {
    bridge: Arc<Bridge>,
    jobs: tokio::sync::watch::Receiver<u64>,
    /// Moves when a job's state changes: sent at once.
    settled: tokio::sync::watch::Receiver<u64>,
    lists: tokio::sync::watch::Receiver<u64>,
    /// The agents' state streams as of the last state sent.
    streams: Vec<Watch>,
    sent: Option<tokio::time::Instant>,
}

/// One agent's state stream.
type Watch = tokio::sync::watch::Receiver<crate::workstation::bridge::printers::Report>;

impl Feed {
    /// The next state to send: at once the first time; then after a
    /// change anywhere, at most one per [`COALESCE`] (a change after a
    /// quiet spell goes out at once, a burst as one), but a transfer's new
    /// state (stored, failed, ...) at once.
    async fn next(&mut self) -> Event {
        if let Some(sent) = self.sent {
            let streams = &mut self.streams;
            let agents = async {
                if streams.is_empty() {
                    return std::future::pending().await;
                }
                let changed = streams.iter_mut().map(|s| Box::pin(s.changed()));
                let _ = futures_util::future::select_all(changed).await;
            };
            let urgent = tokio::select! {
                _ = self.settled.changed() => true,
                _ = self.jobs.changed() => false,
                _ = self.lists.changed() => false,
                () = agents => false,
                () = tokio::time::sleep(REFRESH) => {
                    self.bridge.ui.board.stale_all();
                    false
                }
            };
            if !urgent {
                tokio::time::sleep_until(sent + COALESCE).await;
            }
        }
        let (state, streams) = snapshot(&self.bridge);
        self.streams = streams;
        self.sent = Some(tokio::time::Instant::now());
        Event::default().event("state").data(state.to_string())
    }
}

/// `GET /ui/events`: the state now, then again after every change.
pub(super) async fn events(
    State(bridge): Shared,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (jobs, settled) = bridge.ui.jobs.subscribe();
    let feed = Feed {
        jobs,
        settled,
        streams: Vec::new(),
        lists: bridge.ui.board.subscribe(),
        bridge,
        sent: None,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await;
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
