//! Admission of connections that have not authenticated yet: anyone on the
//! network can open them, so they get a budget of their own, apart from the
//! sessions of paired workstations (`max_connections`).
//!
//! At most `PREAUTH_MAX` handshakes run at once, and each address has a
//! share of `PREAUTH_PER_ADDRESS`. An address may go past its share while
//! the budget has room (a burst of workstations behind one router), but
//! when it is full, a newcomer from an address within its share takes the
//! place of the oldest handshake of the address furthest over its share:
//! a flood of idle connections from one address never keeps a workstation
//! on another one out. Past that, a handshake that has run for
//! `STALE_AFTER` is stale (a real one takes milliseconds) and makes room
//! for a newcomer from an address holding fewer, or from its own. Refusals, cut-off handshakes and timeouts are
//! logged once per address and then summed up `SUMMARY_EVERY` after the
//! first of them (no timer runs while nothing happens).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::warn;

/// Handshakes in progress at once, from all addresses.
pub(crate) const PREAUTH_MAX: usize = 64;
/// Handshakes in progress at once from one address, beyond which its own
/// stale ones make room for its new ones.
pub(crate) const PREAUTH_PER_ADDRESS: usize = 16;
/// Age at which a handshake in progress may be cut off to make room.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(1);
/// How often turned-away connections are summed up in the log.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// How long a newcomer waits for a place when the budget is full of fresh
/// handshakes (a burst: they end within milliseconds) before it is turned
/// away; long enough for the oldest to turn stale.
pub(crate) const WAIT_FOR_PLACE: Duration = Duration::from_secs(2);
/// Newcomers waiting for a place at once; more are turned away at once.
pub(crate) const MAX_WAITING: usize = PREAUTH_MAX;
/// How often a waiting newcomer looks again (places free up on their own,
/// and handshakes turn stale).
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// What happened to an unauthenticated connection, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Turned away at once: the budget was full of fresh handshakes.
    Refused,
    /// Cut off to make room for a newer connection.
    CutOff,
    /// Its handshake did not finish within `handshake_timeout`.
    TimedOut,
    /// Its handshake failed (not TLS, no or a foreign certificate, ...).
    Failed,
}

/// The budget of unauthenticated connections; shared by the accept loop
/// and the connection tasks.
#[derive(Debug, Default)]
pub struct Admission {
    state: Mutex<State>,
    /// Told whenever a place frees up.
    freed: tokio::sync::Notify,
    /// Told when the first event of a window is noted (see [`first_note`](Admission::first_note)).
    noted: tokio::sync::Notify,
    waiting: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    total: usize,
    by_addr: HashMap<IpAddr, VecDeque<Pending>>,
    notes: Notes,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    since: Instant,
    cut: oneshot::Sender<()>,
}

/// Events per address in the current summary window.
#[derive(Debug, Default)]
struct Notes {
    counts: HashMap<IpAddr, [u64; 4]>,
}

/// A connection's place in the budget until it authenticates or ends.
/// `cut` completes when a newer connection took its place.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    id: u64,
    /// Completes when the connection must end to make room.
    pub cut: oneshot::Receiver<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut state) = self.admission.state.lock() {
            state.release(self.ip, self.id);
        }
        self.admission.freed.notify_waiters();
    }
}

impl Admission {
    /// A place for a connection from `ip`, waiting up to [`WAIT_FOR_PLACE`]
    /// for one while the budget is full of fresh handshakes; `None`:
    /// turned away.
    pub(crate) async fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        use std::sync::atomic::Ordering;
        if let Some(ticket) = self.admit(ip, Instant::now()) {
            return Some(ticket);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let deadline = Instant::now() + WAIT_FOR_PLACE;
        let ticket = loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(ticket) = self.admit(ip, Instant::now()) {
                break Some(ticket);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            let _ = tokio::time::timeout((deadline - now).min(LOOK_AGAIN), freed).await;
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        ticket
    }

    /// A place for a connection from `ip` at `now`, or `None` (none now).
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Option<Ticket> {
        let mut state = self.state.lock().ok()?;
        let victim = match state.choose(ip, now) {
            Choice::Refuse => return None,
            Choice::Admit => None,
            Choice::Evict(victim) => Some(victim),
        };
        if let Some(victim) = victim
            && let Some(pending) = state.evict(victim)
        {
            let _ = pending.cut.send(());
        }
        let (cut_tx, cut) = oneshot::channel();
        let id = state.next_id;
        state.next_id += 1;
        state.total += 1;
        state.by_addr.entry(ip).or_default().push_back(Pending {
            id,
            since: now,
            cut: cut_tx,
        });
        Some(Ticket {
            admission: Arc::clone(self),
            ip,
            id,
            cut,
        })
    }

    /// Notes an event for the log; true if it is the first of its kind from
    /// `ip` in this window (to be logged on its own; the rest are summed up).
    pub(crate) fn note(&self, ip: IpAddr, event: Event) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let opens_window = state.notes.counts.is_empty();
        let count = &mut state.notes.counts.entry(ip).or_default()[event as usize];
        *count += 1;
        let first = *count == 1;
        drop(state);
        if opens_window {
            self.noted.notify_one();
        }
        first
    }

    /// Returns once an event was noted since the last summary: a window
    /// begins, to be summed up `SUMMARY_EVERY` later. Nothing to sum up,
    /// no timer: an idle agent does not wake for it.
    pub(crate) async fn first_note(&self) {
        self.noted.notified().await;
    }

    /// Logs what was turned away in the window that ends now, beyond the
    /// first event of each kind (logged when it happened), and starts a new
    /// window.
    pub(crate) fn summarize(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for (peer, [refused, cut_off, timed_out, failed]) in state.notes.counts.drain() {
            if refused + cut_off + timed_out + failed <= 1 {
                continue;
            }
            warn!(
                %peer, refused, cut_off, timed_out, failed,
                window = ?SUMMARY_EVERY, per_address = PREAUTH_PER_ADDRESS, in_all = PREAUTH_MAX,
                "unauthenticated connections turned away from one address"
            );
        }
    }

    /// Connections without a session yet, from `ip` and in all.
    pub fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let Ok(state) = self.state.lock() else {
            return (0, 0);
        };
        let own = state.by_addr.get(&ip).map_or(0, VecDeque::len);
        (own, state.total)
    }
}

/// What to do with a newcomer.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    Admit,
    /// Admit it in place of the oldest handshake of this address.
    Evict(IpAddr),
    Refuse,
}

impl State {
    fn choose(&self, ip: IpAddr, now: Instant) -> Choice {
        let stale = |addr: &IpAddr| {
            (self.by_addr.get(addr))
                .and_then(VecDeque::front)
                .is_some_and(|p| now.duration_since(p.since) >= STALE_AFTER)
        };
        let own = self.by_addr.get(&ip).map_or(0, VecDeque::len);
        if own >= PREAUTH_PER_ADDRESS && stale(&ip) {
            return Choice::Evict(ip);
        }
        if self.total < PREAUTH_MAX {
            return Choice::Admit;
        }
        // Full. An address within its share takes back a place from the
        // address furthest over its share, fresh or not...
        let len = |addr: &IpAddr| self.by_addr.get(addr).map_or(0, VecDeque::len);
        let heaviest = (self.by_addr.keys()).max_by_key(|addr| len(addr)).copied();
        if own < PREAUTH_PER_ADDRESS
            && let Some(over) = heaviest.filter(|addr| len(addr) > PREAUTH_PER_ADDRESS)
        {
            return Choice::Evict(over);
        }
        // ...else the address holding the most (more than the newcomer's)
        // gives up its oldest stale handshake.
        (self.by_addr.keys())
            .filter(|addr| stale(addr) && (**addr == ip || len(addr) > own))
            .max_by_key(|addr| len(addr))
            .map_or(Choice::Refuse, |addr| Choice::Evict(*addr))
    }

    /// Takes the oldest handshake of `ip` out of the budget.
    fn evict(&mut self, ip: IpAddr) -> Option<Pending> {
        let queue = self.by_addr.get_mut(&ip)?;
        let pending = queue.pop_front()?;
        if queue.is_empty() {
            self.by_addr.remove(&ip);
        }
        self.total -= 1;
        Some(pending)
    }

    fn release(&mut self, ip: IpAddr, id: u64) {
        let Some(queue) = self.by_addr.get_mut(&ip) else {
            return;
        };
        if let Some(at) = queue.iter().position(|p| p.id == id) {
            queue.remove(at);
            self.total -= 1;
        }
        if queue.is_empty() {
            self.by_addr.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_flood_from_one_address_never_keeps_another_out_once_stale() {
        let admission = Arc::new(Admission::default());
        let t0 = Instant::now();
        let attacker = ip(2);
        // Fresh handshakes from one address fill the whole budget...
        let mut held: Vec<Ticket> = (0..PREAUTH_MAX)
            .map(|_| admission.admit(attacker, t0).expect("room"))
            .collect();
        assert_eq!(admission.counts(attacker), (PREAUTH_MAX, PREAUTH_MAX));
        // ...and while they are fresh, more from there are turned away, but
        // a workstation on another address takes the place of the oldest,
        // which is told to end.
        assert!(admission.admit(attacker, t0).is_none());
        let workstation = admission.admit(ip(1), t0).expect("a place");
        assert_eq!(admission.counts(ip(1)), (1, PREAUTH_MAX));
        assert_eq!(held[0].cut.try_recv(), Ok(()));
        assert!(held[1].cut.try_recv().is_err());
        // Once stale, the attacker reconnecting only cuts off its own.
        let later = t0 + STALE_AFTER;
        let again = admission.admit(attacker, later).expect("its own place");
        assert_eq!(held[1].cut.try_recv(), Ok(()));
        assert_eq!(admission.counts(attacker), (PREAUTH_MAX - 1, PREAUTH_MAX));
        // Addresses within their share, all fresh: the budget is full.
        let admission = Arc::new(Admission::default());
        let shares: Vec<Ticket> = (0..PREAUTH_MAX)
            .map(|i| admission.admit(ip(10 + (i % 4) as u8), t0).unwrap())
            .collect();
        assert!(admission.admit(ip(1), t0).is_none());
        assert!(admission.admit(ip(1), later).is_some());
        drop(shares);
        // Tickets give their place back, once.
        held.clear();
        drop(again);
        drop(workstation);
        assert_eq!(admission.counts(attacker), (0, 0));
    }

    #[test]
    fn one_address_keeps_its_share_by_cutting_its_own_stale_handshakes() {
        let admission = Arc::new(Admission::default());
        let t0 = Instant::now();
        let mut held: Vec<Ticket> = (0..PREAUTH_PER_ADDRESS)
            .map(|_| admission.admit(ip(3), t0).unwrap())
            .collect();
        // A burst of fresh ones may go past the share while there is room.
        let burst = admission.admit(ip(3), t0).unwrap();
        assert_eq!(admission.counts(ip(3)).0, PREAUTH_PER_ADDRESS + 1);
        // Stale ones make room within the share.
        let later = t0 + STALE_AFTER;
        let _next = admission.admit(ip(3), later).unwrap();
        assert_eq!(held[0].cut.try_recv(), Ok(()));
        assert_eq!(admission.counts(ip(3)).0, PREAUTH_PER_ADDRESS + 1);
        drop(burst);
        held.clear();
    }

    #[test]
    fn the_first_event_of_each_kind_is_logged_then_summed_up() {
        let admission = Admission::default();
        assert!(admission.note(ip(2), Event::TimedOut));
        assert!(!admission.note(ip(2), Event::TimedOut));
        assert!(admission.note(ip(2), Event::Refused));
        assert!(admission.note(ip(4), Event::TimedOut));
        admission.summarize();
        // A new window.
        assert!(admission.note(ip(2), Event::TimedOut));
    }
}
