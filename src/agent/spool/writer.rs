//! The writer of one upload's body: a blocking task that reserves the
//! body's disk blocks when its first piece comes, hashes and appends each
//! piece the [`Upload`](super::Upload) hands it, pushes full windows to the
//! disk, and gives the buffers back, so that the next piece is received
//! while this one is written.

use std::io::{self, Write};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::budget::Reservation;

/// What an upload hands its writer.
#[derive(Debug)]
pub(super) enum Piece {
    /// A buffer and how many bytes of it are body.
    Data(Vec<u8>, usize),
    /// The claim of the partial file the body became: the writer holds it
    /// until its last write is done.
    Claim(super::partial::Claim),
}

/// What the writer of a body owns: the file, a partial file's claim (so it
/// outlives every write to the file), the bytes the file holds and their
/// digest state.
#[derive(Debug)]
pub(super) struct Sink {
    /// The file written to, positioned at its end.
    pub(super) file: std::fs::File,
    /// The claim of the partial file, if the body goes to one.
    pub(super) claim: Option<super::partial::Claim>,
    /// Bytes the file holds.
    pub(super) len: u64,
    /// SHA-256 state over those bytes.
    pub(super) hasher: Sha256,
    /// Bytes the file holds once the body is whole (the declared size):
    /// the disk blocks up to it are reserved before the first write.
    pub(super) size: u64,
    /// The disk space promised to the body and not on the disk yet: given
    /// back as the blocks are reserved (or, where they cannot be, written).
    pub(super) reservation: Reservation,
}

/// What the writer hands back when it stops, with the error that stopped
/// it, if one did.
#[derive(Debug)]
pub(super) struct Written {
    /// What the writer owned.
    pub(super) sink: Sink,
    /// The write that failed, if one did.
    pub(super) error: Option<io::Error>,
}

/// The writer of one body, on a blocking thread: reserves its blocks,
/// hashes and appends each piece, pushes full windows to the disk, and
/// gives the buffers back, until the upload stops sending or a write (or
/// the reservation: a full disk) fails.
pub(super) fn write_body(
    mut sink: Sink,
    mut pieces: mpsc::Receiver<Piece>,
    give_back: mpsc::Sender<Vec<u8>>,
) -> Written {
    let mut writeback = super::writeback::Writeback::new(sink.len);
    let mut first = true;
    while let Some(piece) = pieces.blocking_recv() {
        let (buffer, n) = match piece {
            Piece::Data(buffer, n) => (buffer, n),
            Piece::Claim(claim) => {
                sink.claim = Some(claim);
                continue;
            }
        };
        // With the first bytes, not before: a body that never comes
        // reserves nothing.
        if std::mem::take(&mut first) {
            match super::writeback::preallocate(&sink.file, sink.len, sink.size) {
                Ok(true) => sink.reservation.consume(sink.size.saturating_sub(sink.len)),
                Ok(false) => {}
                Err(error) => {
                    return Written {
                        sink,
                        error: Some(error),
                    };
                }
            }
        }
        let data = &buffer[..n];
        if let Err(error) = sink.file.write_all(data) {
            return Written {
                sink,
                error: Some(error),
            };
        }
        sink.hasher.update(data);
        sink.len += n as u64;
        sink.reservation.consume(n as u64);
        writeback.advance(&sink.file, sink.len);
        // The upload may be gone already: then the buffer goes too.
        let _ = give_back.try_send(buffer);
    }
    Written { sink, error: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink for a body that `len` bytes complete (nothing to reserve).
    fn sink(file: std::fs::File, len: u64, hasher: Sha256) -> Sink {
        Sink {
            file,
            claim: None,
            len,
            hasher,
            size: len,
            reservation: Reservation::new(Default::default(), 0),
        }
    }

    #[tokio::test]
    async fn appends_and_hashes_every_piece_and_gives_the_buffers_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        std::fs::write(&path, b"held ").unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let mut hasher = Sha256::new();
        hasher.update(b"held ");
        let (to_writer, pieces) = mpsc::channel(4);
        let (give_back, mut free) = mpsc::channel(4);
        let writer = tokio::task::spawn_blocking(move || {
            write_body(sink(file, 5, hasher), pieces, give_back)
        });
        // Only the first `n` bytes of a buffer are body.
        to_writer
            .send(Piece::Data(b"one-XX".to_vec(), 4))
            .await
            .unwrap();
        to_writer
            .send(Piece::Data(b"two".to_vec(), 3))
            .await
            .unwrap();
        assert_eq!(free.recv().await.unwrap(), b"one-XX");
        drop(to_writer);
        let written = writer.await.unwrap();
        assert!(written.error.is_none());
        assert_eq!(written.sink.len, 12);
        assert_eq!(std::fs::read(&path).unwrap(), b"held one-two");
        assert_eq!(
            written.sink.hasher.finalize(),
            Sha256::digest(b"held one-two")
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_first_piece_reserves_the_whole_body_and_gives_the_promise_back() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = crate::agent::spool::writeback::disk_tempdir();
        let path = dir.path().join("body");
        let file = std::fs::File::create(&path).unwrap();
        let size = 8 << 20;
        let promised = Arc::new(AtomicU64::new(size));
        let sink = Sink {
            size,
            reservation: Reservation::new(promised.clone(), size),
            ..sink(file, 0, Sha256::new())
        };
        let (to_writer, pieces) = mpsc::channel(4);
        let (give_back, mut free) = mpsc::channel(4);
        let writer = tokio::task::spawn_blocking(move || write_body(sink, pieces, give_back));
        to_writer
            .send(Piece::Data(vec![7; 4096], 4096))
            .await
            .unwrap();
        free.recv().await.unwrap();
        // One page written, the whole body's blocks held, nothing promised.
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 4096);
        assert!(meta.blocks() * 512 >= size, "{} blocks", meta.blocks());
        assert_eq!(promised.load(Ordering::SeqCst), 0);
        drop(to_writer);
        let written = writer.await.unwrap();
        assert!(written.error.is_none());
        assert_eq!(written.sink.len, 4096);
    }

    #[tokio::test]
    async fn a_failed_write_stops_the_writer_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        std::fs::write(&path, b"").unwrap();
        // Opened read-only: every write fails.
        let file = std::fs::File::open(&path).unwrap();
        let (to_writer, pieces) = mpsc::channel(4);
        let (give_back, _free) = mpsc::channel(4);
        let writer = tokio::task::spawn_blocking(move || {
            write_body(sink(file, 0, Sha256::new()), pieces, give_back)
        });
        to_writer.send(Piece::Data(vec![1; 8], 8)).await.unwrap();
        let written = writer.await.unwrap();
        assert!(written.error.is_some());
        assert_eq!(written.sink.len, 0);
        // The writer is gone: further pieces find no one.
        assert!(to_writer.send(Piece::Data(vec![1; 8], 8)).await.is_err());
    }
}
