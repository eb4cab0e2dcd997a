//! systemd's status line for the agent, e.g. "listening on 0.0.0.0:7341;
//! 2 queued; printer Operational": what it says, and sending it only when
//! it changed.

use crate::agent::server::Live;

/// The text of systemd's status line, e.g. "listening on 0.0.0.0:7341;
/// 2 queued; printer Operational".
pub(super) struct StatusLine {
    addr: std::net::SocketAddr,
    last: String,
}

impl StatusLine {
    pub(super) fn new(addr: std::net::SocketAddr) -> StatusLine {
        StatusLine {
            addr,
            last: String::new(),
        }
    }

    pub(super) fn text(&self, live: &Live) -> String {
        let view = live.shared.forward.view();
        let receiving = live.shared.spool.incoming_count();
        let mut text = format!("listening on {}", self.addr);
        if receiving > 0 {
            text.push_str(&format!("; {receiving} receiving"));
        }
        if view.enabled {
            text.push_str(&format!(
                "; {} queued; printer {}",
                view.queued(),
                view.printer
            ));
        } else {
            text.push_str(&format!("; {}", view.printer));
        }
        text
    }

    /// Tells systemd the agent is ready, with the current status line.
    pub(super) fn ready(&mut self, live: &Live) {
        let text = self.text(live);
        crate::agent::systemd::ready(&text);
        self.last = text;
    }

    /// Remembers `text`; true if it differs from the last one.
    pub(super) fn changed(&mut self, text: &str) -> bool {
        if self.last == text {
            return false;
        }
        self.last = text.to_string();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::daemon::prepare::{prepare, tests::config};

    #[test]
    fn the_status_line_says_where_it_listens_and_what_forwarding_does() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare(&config(dir.path()), false).unwrap();
        let mut status = StatusLine::new("0.0.0.0:7341".parse().unwrap());
        let text = status.text(&prepared.live);
        assert_eq!(text, "listening on 0.0.0.0:7341; forwarding is not running");
        assert!(status.changed(&text));
        assert!(!status.changed(&text), "unchanged text is not sent again");
    }
}
