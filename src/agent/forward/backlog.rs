//! Files that wait in `ready/` from before forwarding ran: sent while
//! forwarding was off (no API key yet, `enabled = false`, a failed reload),
//! or put there by other tools while the agent was stopped. They keep their
//! sender and time of arrival, are uploaded oldest first once forwarding
//! runs, and never start by themselves: nobody knows what is on the bed
//! after so long, so a person starts them (`fileagent print`).

use std::collections::HashSet;
use std::path::Path;

use tracing::{error, info};

use super::Stored;
use super::queue::{QUEUE_FILE, Queue};

/// Records a file stored while forwarding is off in the spool's queue, so
/// the forwarder that starts later knows its sender and time, and holds it.
pub(super) fn record_while_off(spool: &Path, stored: &Stored) {
    let path = spool.join(QUEUE_FILE);
    let recorded = Queue::load(&path).and_then(|mut queue| {
        // A new version replaces what was waiting under that name.
        queue.remove_where(|e| e.name == stored.name && e.state.in_ready());
        let client = Some(stored.client.clone());
        let id = queue.add_backlog(
            &stored.name,
            &stored.sha256,
            stored.size,
            client,
            stored.arrived,
        );
        if let Some(entry) = queue.get_mut(id) {
            entry.overwrite = stored.overwrite;
        }
        queue.save()
    });
    if let Err(e) = recorded {
        error!(file_name = %stored.name, error = %e, "cannot record a file that arrived while forwarding is off; it counts as found in ready/ later");
    }
}

/// Names of the files in `ready/` that `queue` does not know: put there
/// while the agent was not watching.
pub(super) fn unknown_in_ready(ready: &Path, queue: &Queue) -> HashSet<String> {
    let Ok(dir) = std::fs::read_dir(ready) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| crate::agent::spool::validate_name(name).is_ok())
        .filter(|name| {
            !queue
                .entries()
                .iter()
                .any(|e| &e.name == name && e.state.in_ready())
        })
        .collect()
}

/// Logs how many files wait from before, once forwarding starts.
pub(super) fn announce(queue: &Queue, found: usize) {
    let recorded = (queue.entries().iter())
        .filter(|e| e.backlog && e.state.in_ready())
        .count();
    if recorded + found > 0 {
        info!(
            recorded,
            found_in_ready = found,
            "files from before forwarding ran: uploaded oldest first, never started by themselves (fileagent print starts one)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::forward::queue::{BACKLOG_REASON, FileState};

    #[test]
    fn a_file_stored_while_off_keeps_its_sender_and_time_and_is_held() {
        let tmp = tempfile::tempdir().unwrap();
        let stored = |name: &str, sha: &str, arrived| Stored {
            name: name.into(),
            sha256: sha.into(),
            size: 3,
            client: "alice".into(),
            overwrite: false,
            print: None,
            inode: None,
            arrived,
        };
        record_while_off(tmp.path(), &stored("a.gcode", "aa", 100));
        record_while_off(tmp.path(), &stored("b.gcode", "bb", 200));
        // A new version of a.gcode takes the place of the old one.
        record_while_off(tmp.path(), &stored("a.gcode", "cc", 300));
        let queue = Queue::load(&tmp.path().join(QUEUE_FILE)).unwrap();
        let got: Vec<_> = (queue.entries().iter())
            .map(|e| {
                (
                    e.name.as_str(),
                    e.sha256.as_str(),
                    e.arrived,
                    e.held && e.backlog,
                )
            })
            .collect();
        assert_eq!(
            got,
            [("b.gcode", "bb", 200, true), ("a.gcode", "cc", 300, true)]
        );
        assert!(
            queue
                .entries()
                .iter()
                .all(|e| e.client.as_deref() == Some("alice")
                    && e.reason.as_deref() == Some(BACKLOG_REASON))
        );
    }

    #[test]
    fn files_the_queue_does_not_know_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["known.gcode", "new.gcode", ".hidden.gcode", "x.gcode.part"] {
            std::fs::write(tmp.path().join(name), b"G1").unwrap();
        }
        let mut queue = Queue::load(&tmp.path().join(QUEUE_FILE)).unwrap();
        queue.add("known.gcode", "aa", 2, None, FileState::Received);
        let found = unknown_in_ready(tmp.path(), &queue);
        assert_eq!(found, HashSet::from(["new.gcode".to_string()]));
    }
}
