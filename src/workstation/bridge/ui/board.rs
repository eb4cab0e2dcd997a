//! The board: every paired agent as the page shows it, from the agents'
//! own state streams (the bridge's `printers` watches, kept open while a
//! page is), plus each agent's file list, fetched again whenever what the
//! agent reports about its line or its printer changes (not on every
//! progress tick of a print), when a transfer from the page ends, and at
//! the page's periodic refresh (files may come from elsewhere).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use super::lock;
use crate::wire::protocol::{FileEntry, PrinterReport, Watched};
use crate::workstation::bridge::deliver::{self, Destination};
use crate::workstation::bridge::printers::{Printers, Report};

/// One agent on the board.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Card {
    pub(crate) name: String,
    pub(crate) address: String,
    /// The agent answers (its state stream is open).
    pub(crate) reachable: bool,
    /// Why it does not, or has not said anything yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) printer: Option<PrinterReport>,
    pub(crate) queued: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bed: Option<String>,
    /// The agent's files, newest list; `None` until fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) files: Option<Vec<FileEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) files_error: Option<String>,
}

/// What a report says that makes the file list worth fetching again.
type ListKey = (u64, Option<String>, String, Option<String>);

fn list_key(w: &Watched) -> ListKey {
    (
        w.queued,
        w.printer.job.clone(),
        w.printer.text.clone(),
        w.bed.clone(),
    )
}

/// A fetched list, and for which report.
#[derive(Default)]
struct Listing {
    key: Option<ListKey>,
    fetching: bool,
    files: Option<Result<Vec<FileEntry>, String>>,
}

/// The agents' lists, and a counter that moves when one arrives.
pub(crate) struct Board {
    lists: Mutex<HashMap<String, Listing>>,
    changed: watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Board {
        Board {
            lists: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Board {
    /// A receiver that changes whenever a list arrives.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The card of `dest` from its last report (fetching its list again
    /// when the report calls for it).
    pub(crate) fn card(self: &Arc<Self>, dest: &Destination, report: &Report) -> Card {
        let mut card = Card {
            name: dest.name.clone(),
            address: dest.address.clone(),
            reachable: false,
            error: None,
            printer: None,
            queued: 0,
            bed: None,
            files: None,
            files_error: None,
        };
        match report {
            None => card.error = Some("connecting…".into()),
            Some(Err(why)) => card.error = Some(why.clone()),
            Some(Ok(w)) => {
                card.reachable = true;
                card.printer = Some(w.printer.clone());
                card.queued = w.queued;
                card.bed = w.bed.clone();
                self.refresh(dest, list_key(w));
            }
        }
        if let Some(listing) = lock(&self.lists).get(&dest.name) {
            match &listing.files {
                Some(Ok(files)) => card.files = Some(files.clone()),
                Some(Err(why)) => card.files_error = Some(why.clone()),
                None => {}
            }
        }
        card
    }

    /// Fetches `dest`'s list unless the one there is for `key` already or
    /// one is on its way.
    fn refresh(self: &Arc<Self>, dest: &Destination, key: ListKey) {
        {
            let mut lists = lock(&self.lists);
            let listing = lists.entry(dest.name.clone()).or_default();
            if listing.fetching || listing.key.as_ref() == Some(&key) {
                return;
            }
            listing.fetching = true;
            listing.key = Some(key);
        }
        let board = Arc::clone(self);
        let dest = dest.clone();
        tokio::spawn(async move {
            let files = fetch(&dest).await;
            let mut lists = lock(&board.lists);
            let listing = lists.entry(dest.name.clone()).or_default();
            listing.fetching = false;
            listing.files = Some(files);
            drop(lists);
            board.changed.send_modify(|n| *n += 1);
        });
    }

    /// Forgets a list, so that the next look fetches it again (after the
    /// page changed the agent's files).
    pub(crate) fn stale(&self, agent: &str) {
        if let Some(listing) = lock(&self.lists).get_mut(agent) {
            listing.key = None;
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets every list: files may come from elsewhere (a slicer, the
    /// CLI) without the agent's report changing (no forwarding).
    pub(crate) fn stale_all(&self) {
        for listing in lock(&self.lists).values_mut() {
            listing.key = None;
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

async fn fetch(dest: &Destination) -> Result<Vec<FileEntry>, String> {
    let mut client = deliver::connect(dest).await.map_err(|f| f.text)?;
    let files = client.list().await;
    client.close().await;
    files.map_err(|e| deliver::failure(&dest.name, e).text)
}

/// The board's cards for `dests`, in their order, keeping each agent's
/// state stream open.
pub(crate) fn cards(
    board: &Arc<Board>,
    printers: &Arc<Printers>,
    dests: &[Destination],
) -> (Vec<Card>, Vec<watch::Receiver<Report>>) {
    let mut cards = Vec::new();
    let mut streams = Vec::new();
    for dest in dests {
        let mut stream = printers.follow(dest);
        // Seen now: the stream's next change is news.
        let report = stream.borrow_and_update().clone();
        cards.push(board.card(dest, &report));
        streams.push(stream);
    }
    (cards, streams)
}

/// The groups of client.toml, for the page's choice of printers.
pub(crate) type Groups = BTreeMap<String, Vec<String>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_says_why_an_agent_is_not_there() {
        let board = Arc::new(Board::default());
        let dest = Destination {
            name: "pi".into(),
            address: "127.0.0.1:1".into(),
            identity: "pi.pem".into(),
        };
        let card = board.card(&dest, &Some(Err("pi: connection refused".into())));
        assert!(!card.reachable);
        assert_eq!(card.error.as_deref(), Some("pi: connection refused"));
        let json = serde_json::to_value(&card).unwrap();
        assert!(json.get("printer").is_none());
        assert_eq!(
            board.card(&dest, &None).error.as_deref(),
            Some("connecting…")
        );
    }

    #[test]
    fn the_list_is_fetched_again_only_when_the_line_or_printer_changes() {
        let mut w = Watched::default();
        w.printer.text = "Printing".into();
        w.printer.completion = Some(10.0);
        let before = list_key(&w);
        w.printer.completion = Some(11.0);
        assert_eq!(list_key(&w), before, "a progress tick");
        w.queued = 1;
        assert_ne!(list_key(&w), before);
    }
}
