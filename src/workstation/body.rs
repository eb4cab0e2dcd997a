//! The body of a `send`, read on a thread of its own. The file is read in
//! [`CHUNK_LEN`] pieces, at most [`READ_AHEAD`] of them ahead of the
//! connection, and, while its digest is still to be known, hashed as well:
//! - when the connection gives buffers back within [`HASH_AHEAD_AFTER`]
//!   (loopback, a LAN: the agent's pace, at worst), each piece is hashed as
//!   it is read for sending, so the file is read once;
//! - when it does not (Wi-Fi), the thread hashes [`HASH_AHEAD_RUN`] pieces
//!   ahead before it waits again, so the digest is known early, goes out
//!   inside the body at once, and makes the upload resumable from then on
//!   ([`Piece::Digest`]); pieces hashed ahead are read again for sending,
//!   from the page cache.
//!
//! Reading and hashing so run beside encryption and the socket writes
//! instead of taking turns with them.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::growing::Growth;
use crate::wire::protocol::CHUNK_LEN;

/// Buffers of [`CHUNK_LEN`] the reader may fill before the connection has
/// taken the first: enough to keep both busy, little memory.
pub(super) const READ_AHEAD: usize = 3;

/// How long the reader, hashing as it reads, waits for a buffer to come back
/// before it hashes ahead instead. A connection that keeps up gives one back
/// well within it, and a piece hashed ahead costs a second read of it.
pub(super) const HASH_AHEAD_AFTER: Duration = Duration::from_millis(5);

/// Pieces hashed ahead, once a wait for a buffer ran out, before the reader
/// waits again: a slow link gets its digest soon, a pause of a fast one
/// costs at most this many second reads.
pub(super) const HASH_AHEAD_RUN: u32 = 8;

/// What the reader thread hands over: a buffer and how much of it is the file.
pub(super) struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl Chunk {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What the connection gets from the reader thread, in the order to send it.
pub(super) enum Piece {
    Data(Chunk),
    /// The whole file's SHA-256, as soon as it is known (only when hashing
    /// was asked for).
    Digest(String),
}

/// A failure of the reader thread, with what it was doing.
#[derive(Debug)]
pub(super) struct ReadError {
    pub(super) what: &'static str,
    pub(super) source: io::Error,
}

/// The receiving end of the reader thread.
pub(super) struct Body {
    chunks: mpsc::Receiver<Result<Piece, ReadError>>,
    spare: std_mpsc::Sender<Vec<u8>>,
}

/// The reader thread's result: with hashing, the SHA-256 of the whole file
/// (read to its end, so a file that grew since its size was taken does not
/// match what was sent).
pub(super) type Hashing = JoinHandle<io::Result<Option<String>>>;

impl Body {
    /// Starts reading bytes `offset..size` of the file at `path`; with
    /// `hash`, the whole file is hashed on the way (bytes before `offset`
    /// are read for the digest only).
    pub(super) fn start(path: &Path, offset: u64, size: u64, hash: bool) -> (Body, Hashing) {
        Body::start_waiting(path, offset, size, hash, HASH_AHEAD_AFTER, None)
    }

    /// [`start`](Body::start) on a file still being written: each read
    /// waits until `growth` says its bytes are there.
    pub(super) fn start_growing(
        path: &Path,
        offset: u64,
        size: u64,
        hash: bool,
        growth: Arc<Growth>,
    ) -> (Body, Hashing) {
        Body::start_waiting(path, offset, size, hash, HASH_AHEAD_AFTER, Some(growth))
    }

    /// [`start`](Body::start), waiting up to `patience` for a buffer before
    /// hashing ahead.
    fn start_waiting(
        path: &Path,
        offset: u64,
        size: u64,
        hash: bool,
        patience: Duration,
        growth: Option<Arc<Growth>>,
    ) -> (Body, Hashing) {
        // Room for every buffer and the digest: the reader never waits to send.
        let (chunk_tx, chunks) = mpsc::channel(READ_AHEAD + 1);
        let (spare, spare_rx) = std_mpsc::channel();
        let reader = Reader {
            path: path.to_path_buf(),
            offset,
            size,
            hasher: hash.then(Sha256::new),
            chunks: Some(chunk_tx),
            spare: spare_rx,
            allocated: 0,
            patience,
            growth,
        };
        let task = tokio::task::spawn_blocking(move || reader.run());
        (Body { chunks, spare }, task)
    }

    /// The next piece of the body, or `None` once it has all been read
    /// (sooner than `size` if the file shrank) and hashed.
    pub(super) async fn next(&mut self) -> Option<Result<Piece, ReadError>> {
        self.chunks.recv().await
    }

    /// Gives a chunk's buffer back to the reader for another piece.
    pub(super) fn recycle(&self, chunk: Chunk) {
        // The reader may be done already; the buffer is freed then.
        let _ = self.spare.send(chunk.buf);
    }
}

struct Reader {
    path: PathBuf,
    offset: u64,
    size: u64,
    hasher: Option<Sha256>,
    /// `None` once the connection's side is gone.
    chunks: Option<mpsc::Sender<Result<Piece, ReadError>>>,
    spare: std_mpsc::Receiver<Vec<u8>>,
    allocated: usize,
    /// How long to wait for a buffer before hashing ahead.
    patience: Duration,
    /// The file is still being written: how far.
    growth: Option<Arc<Growth>>,
}

impl Reader {
    fn run(mut self) -> io::Result<Option<String>> {
        self.read().map_err(|ReadError { what, source }| {
            let copy = io::Error::new(source.kind(), source.to_string());
            if let Some(chunks) = self.chunks.take() {
                let _ = chunks.blocking_send(Err(ReadError { what, source }));
            }
            copy
        })
    }

    /// Sends bytes `offset..size` and hashes the whole file, each as far
    /// as it is wanted; the digest if hashing was asked for.
    fn read(&mut self) -> Result<Option<String>, ReadError> {
        let fail = |what| move |source| ReadError { what, source };
        // A file still being written whose writing broke off is gone.
        self.written(0).map_err(fail("cannot read"))?;
        let file = File::open(&self.path).map_err(fail("cannot open"))?;
        let mut send_pos = self.offset;
        let mut hash_pos = 0;
        let mut digest = None;
        let mut scratch = Vec::new();
        // Pieces left to hash ahead before waiting for a buffer again.
        let mut ahead: u32 = 0;
        loop {
            let sending = self.chunks.is_some() && send_pos < self.size;
            let hashing = self.hasher.is_some();
            // Hashed apart from sending: first what the connection does
            // not take (the part the agent has already), then ahead of it
            // when no buffer came back in time.
            let buf = match (sending, hashing) {
                (false, false) => return Ok(digest),
                (true, true) if hash_pos < send_pos => None,
                (true, true) => {
                    let patience = if ahead > 0 {
                        Duration::ZERO
                    } else {
                        self.patience
                    };
                    let buf = self.buffer(Some(patience));
                    if buf.is_none() {
                        ahead = ahead.checked_sub(1).unwrap_or(HASH_AHEAD_RUN - 1);
                    }
                    buf
                }
                (true, false) => self.buffer(None),
                (false, true) => None,
            };
            if let Some(mut buf) = buf {
                let want = (self.size - send_pos).min(CHUNK_LEN as u64) as usize;
                self.written(send_pos + want as u64)
                    .map_err(fail("cannot read"))?;
                let n =
                    read_full_at(&file, &mut buf[..want], send_pos).map_err(fail("cannot read"))?;
                if n == 0 {
                    // The file shrank: the body ends here.
                    self.size = send_pos;
                    continue;
                }
                if hash_pos == send_pos {
                    self.hash(&buf[..n]);
                    hash_pos += n as u64;
                }
                send_pos += n as u64;
                self.send(Piece::Data(Chunk { buf, len: n }));
                continue;
            }
            if !hashing {
                // The connection's side is gone.
                continue;
            }
            // Up to where sending starts, then a piece at a time.
            let behind = send_pos.saturating_sub(hash_pos);
            let want = match behind {
                0 => CHUNK_LEN,
                _ => behind.min(CHUNK_LEN as u64) as usize,
            };
            scratch.resize(want, 0);
            self.written(hash_pos + want as u64)
                .map_err(fail("cannot read"))?;
            let n = read_full_at(&file, &mut scratch, hash_pos).map_err(fail("cannot read"))?;
            if n > 0 {
                self.hash(&scratch[..n]);
                hash_pos += n as u64;
            } else if let Some(hasher) = self.hasher.take() {
                // Read to its end, past `size` too if the file grew, so that
                // a file changed meanwhile does not match what was sent.
                let sha256 = hex::encode(hasher.finalize());
                self.send(Piece::Digest(sha256.clone()));
                digest = Some(sha256);
            }
        }
    }

    fn send(&mut self, piece: Piece) {
        if let Some(chunks) = &self.chunks
            && chunks.blocking_send(Ok(piece)).is_err()
        {
            self.chunks = None;
        }
    }

    /// A buffer to read the next piece into: a new one while fewer than
    /// [`READ_AHEAD`] exist, else one given back, waited for up to `wait`
    /// (`None`: until one comes back). `None` if none came back in time, or
    /// if the body is no longer taken.
    fn buffer(&mut self, wait: Option<Duration>) -> Option<Vec<u8>> {
        self.chunks.as_ref()?;
        if self.allocated < READ_AHEAD {
            self.allocated += 1;
            return Some(vec![0; CHUNK_LEN]);
        }
        let given_back = match wait {
            Some(patience) => self.spare.recv_timeout(patience),
            None => self
                .spare
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
        };
        match given_back {
            Ok(buf) => Some(buf),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                self.chunks = None;
                None
            }
        }
    }

    /// Waits, for a file still being written, until its first `upto`
    /// bytes are (or it is complete).
    fn written(&self, upto: u64) -> io::Result<()> {
        match &self.growth {
            Some(growth) => growth.wait_for(upto),
            None => Ok(()),
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
    }
}

/// One positional read (`pread`), which leaves the file's cursor alone.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

/// One positional read; Windows moves the file's cursor too, which no
/// reader here uses.
#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

/// Reads from `pos` until `buf` is full or the file ends; the count read.
fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match read_at(file, &mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body's bytes and the digest it carried.
    async fn collect(body: &mut Body) -> (Vec<u8>, Option<String>) {
        let mut got = Vec::new();
        let mut digest = None;
        while let Some(piece) = body.next().await {
            match piece.unwrap() {
                Piece::Data(chunk) => {
                    got.extend_from_slice(chunk.bytes());
                    body.recycle(chunk);
                }
                Piece::Digest(sha256) => {
                    assert!(digest.replace(sha256).is_none(), "two digests");
                }
            }
        }
        (got, digest)
    }

    fn file_of(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.gcode");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        (tmp, path, data)
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[tokio::test]
    async fn the_body_is_the_file_from_the_offset_and_the_digest_the_whole_file() {
        let len = 5 * CHUNK_LEN + 123;
        let (_tmp, path, data) = file_of(len);
        for offset in [0, 1, CHUNK_LEN as u64, 3 * CHUNK_LEN as u64 + 7, len as u64] {
            let (mut body, hashing) = Body::start(&path, offset, len as u64, true);
            let (got, digest) = collect(&mut body).await;
            assert_eq!(got, &data[offset as usize..]);
            assert_eq!(digest, Some(sha(&data)));
            assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));

            let (mut body, hashing) = Body::start(&path, offset, len as u64, false);
            assert_eq!(
                collect(&mut body).await,
                (data[offset as usize..].to_vec(), None)
            );
            assert_eq!(hashing.await.unwrap().unwrap(), None);
        }
    }

    #[tokio::test]
    async fn a_slow_connection_gets_the_digest_before_the_body_ends() {
        let len = 16 * CHUNK_LEN;
        let (_tmp, path, data) = file_of(len);
        let (mut body, _hashing) = Body::start(&path, 0, len as u64, true);
        // Holding every buffer: the reader hashes the rest meanwhile.
        let mut held = Vec::new();
        let digest = loop {
            match body.next().await.unwrap().unwrap() {
                Piece::Data(chunk) => held.push(chunk),
                Piece::Digest(sha256) => break sha256,
            }
        };
        assert_eq!(digest, sha(&data));
        assert_eq!(held.len(), READ_AHEAD);
        let mut got = Vec::new();
        for chunk in held {
            got.extend_from_slice(chunk.bytes());
            body.recycle(chunk);
        }
        let (rest, again) = collect(&mut body).await;
        got.extend_from_slice(&rest);
        assert_eq!(got, data);
        assert_eq!(again, None);
    }

    #[tokio::test]
    async fn a_connection_that_keeps_up_gets_each_piece_read_once() {
        let len = 16 * CHUNK_LEN + 5;
        let (_tmp, path, data) = file_of(len);
        // Patient enough for any test machine: every buffer comes back in
        // time, however slowly.
        let patience = Duration::from_secs(60);
        let (mut body, hashing) = Body::start_waiting(&path, 0, len as u64, true, patience, None);
        let mut got = Vec::new();
        let mut digest = None;
        while let Some(piece) = body.next().await {
            match piece.unwrap() {
                Piece::Data(chunk) => {
                    assert!(digest.is_none(), "hashed ahead of the body");
                    got.extend_from_slice(chunk.bytes());
                    // Slower than the reader, so that it finds no buffer
                    // free and has to wait for one.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    body.recycle(chunk);
                }
                Piece::Digest(sha256) => digest = Some(sha256),
            }
        }
        // Hashed as it was sent: the digest comes after the last piece.
        assert_eq!(got, data);
        assert_eq!(digest, Some(sha(&data)));
        assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));
    }

    #[tokio::test]
    async fn a_file_that_grew_is_sent_to_its_size_but_hashed_whole() {
        let (_tmp, path, data) = file_of(2 * CHUNK_LEN + 10);
        let (mut body, hashing) = Body::start(&path, 0, CHUNK_LEN as u64 + 5, true);
        let (got, digest) = collect(&mut body).await;
        assert_eq!(got, &data[..CHUNK_LEN + 5]);
        assert_eq!(digest, Some(sha(&data)));
        assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));
    }

    #[tokio::test]
    async fn a_file_that_shrank_ends_the_body_early() {
        let (_tmp, path, data) = file_of(CHUNK_LEN + 10);
        let (mut body, hashing) = Body::start(&path, 0, 4 * CHUNK_LEN as u64, true);
        assert_eq!(collect(&mut body).await, (data.clone(), Some(sha(&data))));
        assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));
    }

    #[tokio::test]
    async fn an_abandoned_body_is_still_hashed_to_the_end() {
        let len = 8 * CHUNK_LEN;
        let (_tmp, path, data) = file_of(len);
        let (mut body, hashing) = Body::start(&path, 0, len as u64, true);
        let Piece::Data(first) = body.next().await.unwrap().unwrap() else {
            panic!("the body starts with data");
        };
        assert_eq!(first.bytes(), &data[..CHUNK_LEN]);
        drop(body);
        assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));

        // Without hashing the reader just stops.
        let (mut body, hashing) = Body::start(&path, 0, len as u64, false);
        body.next().await.unwrap().unwrap();
        drop(body);
        assert_eq!(hashing.await.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn a_missing_file_is_reported_to_both_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut body, hashing) = Body::start(&tmp.path().join("gone"), 0, 10, true);
        let Err(err) = body.next().await.unwrap() else {
            panic!("a missing file reads nothing");
        };
        assert_eq!(err.what, "cannot open");
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert!(body.next().await.is_none());
        assert_eq!(
            hashing.await.unwrap().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
