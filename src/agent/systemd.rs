//! The service manager's side channel (`sd_notify`): readiness, a live
//! status line, reloading, stopping and watchdog keep-alives.
//!
//! Every call is a no-op when the agent was not started by systemd
//! (`NOTIFY_SOCKET` unset), so the daemon calls them unconditionally. A
//! failed notification is logged at debug level and otherwise ignored: the
//! service manager going away must not take the agent down.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Tells the service manager that start-up is complete (listening, spool
/// and queue recovered), with the first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Replaces the status line shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Tells the service manager a reload began; [`ready`] ends it.
pub fn reloading() {
    send(&[
        NotifyState::Reloading,
        NotifyState::MonotonicUsec(monotonic_usec()),
    ]);
}

/// CLOCK_MONOTONIC in microseconds. (sd-notify 0.5's own helper multiplies
/// a 32-bit `time_t` on armv7 and overflows: found by the arm test run.)
fn monotonic_usec() -> i128 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    i128::from(now.tv_sec) * 1_000_000 + i128::from(now.tv_nsec) / 1_000
}

/// Tells the service manager the agent is shutting down.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Whether a service manager listens for notifications (`NOTIFY_SOCKET`).
pub(crate) fn notifying() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// How often the main loop must call [`watchdog`]: half of `WatchdogSec`,
/// or `None` when the unit has no watchdog.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Keeps the watchdog from firing; called only by a loop that just did
/// real work, never by a separate timer.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_usec_counts_microseconds_without_overflow() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(20));
        let b = monotonic_usec();
        assert!(a > 0 && b - a >= 20_000 && b - a < 20_000_000, "{a} {b}");
    }
}
