//! What uploads draw on besides the network: disk space promised before a
//! body is accepted ([`Reservation`], checked against the free space and
//! `min_free_space` by `Spool::reserve`), and the memory its buffers take
//! ([`BufferBudget`]): large buffers while few uploads run, small ones for
//! the rest, so 32 concurrent uploads stay within a few MiB.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::SpoolError;

/// Bytes promised to one upload; given back as they are written or when the
/// upload ends.
#[derive(Debug)]
pub(super) struct Reservation {
    counter: Arc<AtomicU64>,
    remaining: u64,
}

impl Reservation {
    /// A reservation of `size` bytes already added to `counter`.
    pub(super) fn new(counter: Arc<AtomicU64>, size: u64) -> Reservation {
        Reservation {
            counter,
            remaining: size,
        }
    }

    pub(super) fn consume(&mut self, n: u64) {
        let n = n.min(self.remaining);
        self.remaining -= n;
        self.counter.fetch_sub(n, Ordering::SeqCst);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.remaining, Ordering::SeqCst);
    }
}

/// Buffers per upload: one is filled from the network while the other is
/// hashed and written, so receiving and hashing use two cores.
pub(super) const PIECES: usize = 2;
/// Size of the buffers a body is handed to its writer in, for one large
/// upload at a time: each hand-over costs two thread wake-ups, and at this
/// size a 1 GiB send costs the agent about an eighth less CPU than at
/// [`MID_PIECE_LEN`] (1.15 against 1.30 CPU-s, docs/performance.md).
pub(crate) const MAX_PIECE_LEN: usize = 1024 * 1024;
/// Size of the buffers of the next uploads while the budget lasts: about
/// a fifth less CPU per byte than at [`MIN_PIECE_LEN`].
pub(crate) const MID_PIECE_LEN: usize = 256 * 1024;
/// Size of the buffers of uploads beyond the budget, so that many
/// concurrent uploads stay small (32 of them: 2 MiB of buffers).
pub(crate) const MIN_PIECE_LEN: usize = 32 * 1024;
/// Memory for the large buffers, shared by all uploads: one upload gets
/// [`MAX_PIECE_LEN`] ones and two more [`MID_PIECE_LEN`] ones (3 MiB).
pub(crate) const BODY_BUFFER_BUDGET: usize = PIECES * (MAX_PIECE_LEN + 2 * MID_PIECE_LEN);

/// The bytes of [`BODY_BUFFER_BUDGET`] that uploads hold.
#[derive(Debug, Default)]
pub(super) struct BufferBudget(AtomicUsize);

/// One upload's buffer size, and its share of the budget, given back
/// when dropped.
#[derive(Debug)]
pub(super) struct BufferShare {
    budget: Option<Arc<BufferBudget>>,
    piece_len: usize,
}

impl BufferShare {
    /// The size of this upload's buffers.
    pub(super) fn piece_len(&self) -> usize {
        self.piece_len
    }
}

impl BufferBudget {
    /// The buffers for a body of which `remaining` bytes are to come: the
    /// largest the budget has room for, [`MAX_PIECE_LEN`] ones only for a
    /// body that fills both.
    pub(super) fn share(self: &Arc<Self>, remaining: u64) -> BufferShare {
        let small = |len: usize| BufferShare {
            budget: None,
            piece_len: len,
        };
        if remaining <= MIN_PIECE_LEN as u64 {
            return small((remaining as usize).max(1));
        }
        let large = |piece_len| BufferShare {
            budget: Some(self.clone()),
            piece_len,
        };
        if remaining >= (PIECES * MAX_PIECE_LEN) as u64 && self.take(PIECES * MAX_PIECE_LEN) {
            return large(MAX_PIECE_LEN);
        }
        if self.take(PIECES * MID_PIECE_LEN) {
            return large(MID_PIECE_LEN);
        }
        small(MIN_PIECE_LEN)
    }

    /// Takes `want` bytes of the budget if it has them.
    fn take(&self, want: usize) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held + want <= BODY_BUFFER_BUDGET).then_some(held + want)
            })
            .is_ok()
    }
}

impl Drop for BufferShare {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget
                .0
                .fetch_sub(PIECES * self.piece_len, Ordering::SeqCst);
        }
    }
}

impl super::Spool {
    pub(super) fn reserve(&self, size: u64) -> Result<Reservation, SpoolError> {
        let free = free_space(&self.incoming).map_err(SpoolError::io("cannot read free space"))?;
        let reserved = self.reserved.fetch_add(size, Ordering::SeqCst);
        let reservation = Reservation::new(self.reserved.clone(), size);
        let available = free.saturating_sub(reserved);
        if available < size.saturating_add(self.limits.min_free_space) {
            return Err(SpoolError::NoSpace {
                size,
                free: available,
                min_free: self.limits.min_free_space,
            });
        }
        Ok(reservation)
    }

    /// Bytes free for the agent on the spool's file system.
    pub(crate) fn free_space(&self) -> io::Result<u64> {
        free_space(&self.incoming)
    }
}

fn free_space(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_gets_the_largest_buffers_two_more_large_ones_the_rest_small_ones() {
        let budget = Arc::new(BufferBudget::default());
        let big = 10 * MAX_PIECE_LEN as u64;
        let shares: Vec<_> = (0..4).map(|_| budget.share(big)).collect();
        let lens: Vec<_> = shares.iter().map(|s| s.piece_len).collect();
        assert_eq!(
            lens,
            [MAX_PIECE_LEN, MID_PIECE_LEN, MID_PIECE_LEN, MIN_PIECE_LEN]
        );
        assert_eq!(budget.0.load(Ordering::SeqCst), BODY_BUFFER_BUDGET);
        // A tiny body gets a buffer its size and takes nothing.
        assert_eq!(budget.share(100).piece_len, 100);
        assert_eq!(budget.share(0).piece_len, 1);
        drop(shares);
        assert_eq!(budget.0.load(Ordering::SeqCst), 0);
        // A body that would not fill two of the largest gets the next size.
        assert_eq!(budget.share(MAX_PIECE_LEN as u64).piece_len, MID_PIECE_LEN);
        assert_eq!(budget.0.load(Ordering::SeqCst), 0);
        let first = budget.share(big);
        assert_eq!(first.piece_len, MAX_PIECE_LEN);
        // With the largest taken and two of the next, a freed one comes back.
        let (a, b) = (budget.share(big), budget.share(big));
        drop(a);
        assert_eq!(budget.share(big).piece_len, MID_PIECE_LEN);
        drop((first, b));
    }
}
