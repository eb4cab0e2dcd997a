//! The body of a `send`, read on a thread of its own. The file is read in
//! [`CHUNK_LEN`] pieces, at most [`READ_AHEAD`] of them ahead of the
//! connection, and, while its digest is still to be known, hashed as it is
//! read: the file is read once, and reading and hashing run beside the
//! encryption and the socket writes instead of taking turns with them.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::protocol::CHUNK_LEN;

/// Buffers of [`CHUNK_LEN`] the reader may fill before the connection has
/// taken the first: enough to keep both busy, little memory.
pub(super) const READ_AHEAD: usize = 3;

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

/// A failure of the reader thread, with what it was doing.
#[derive(Debug)]
pub(super) struct ReadError {
    pub(super) what: &'static str,
    pub(super) source: io::Error,
}

/// The receiving end of the reader thread.
pub(super) struct Body {
    chunks: mpsc::Receiver<Result<Chunk, ReadError>>,
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
        let (chunk_tx, chunks) = mpsc::channel(READ_AHEAD);
        let (spare, spare_rx) = std_mpsc::channel();
        let reader = Reader {
            path: path.to_path_buf(),
            offset,
            size,
            hasher: hash.then(Sha256::new),
            chunks: Some(chunk_tx),
            spare: spare_rx,
            allocated: 0,
        };
        let task = tokio::task::spawn_blocking(move || reader.run());
        (Body { chunks, spare }, task)
    }

    /// The next piece of the body, or `None` once it has all been read
    /// (sooner than `size` if the file shrank).
    pub(super) async fn next(&mut self) -> Option<Result<Chunk, ReadError>> {
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
    /// `None` once the connection's side is gone or the body is complete.
    chunks: Option<mpsc::Sender<Result<Chunk, ReadError>>>,
    spare: std_mpsc::Receiver<Vec<u8>>,
    allocated: usize,
}

impl Reader {
    fn run(mut self) -> io::Result<Option<String>> {
        match self.read() {
            Ok(()) => Ok(self.hasher.map(|h| hex::encode(h.finalize()))),
            Err(ReadError { what, source }) => {
                let copy = io::Error::new(source.kind(), source.to_string());
                if let Some(chunks) = self.chunks.take() {
                    let _ = chunks.blocking_send(Err(ReadError { what, source }));
                }
                Err(copy)
            }
        }
    }

    fn read(&mut self) -> Result<(), ReadError> {
        let fail = |what| move |source| ReadError { what, source };
        let mut file = File::open(&self.path).map_err(fail("cannot open"))?;
        let mut scratch = Vec::new();
        let mut pos = 0;
        if self.hasher.is_some() {
            // The part the agent has already: for the digest only.
            while pos < self.offset {
                let want = (self.offset - pos).min(CHUNK_LEN as u64) as usize;
                scratch.resize(want, 0);
                let n = read_full(&mut file, &mut scratch).map_err(fail("cannot read"))?;
                if n == 0 {
                    return Ok(());
                }
                self.hash(&scratch[..n]);
                pos += n as u64;
            }
        } else {
            pos = file
                .seek(io::SeekFrom::Start(self.offset))
                .map_err(fail("cannot read"))?;
        }
        while pos < self.size {
            let want = (self.size - pos).min(CHUNK_LEN as u64) as usize;
            let Some(mut buf) = self.buffer() else {
                // Nobody is taking the body any more: only the digest is left.
                if self.hasher.is_none() {
                    return Ok(());
                }
                break;
            };
            let n = read_full(&mut file, &mut buf[..want]).map_err(fail("cannot read"))?;
            if n == 0 {
                return Ok(());
            }
            self.hash(&buf[..n]);
            pos += n as u64;
            if let Some(chunks) = &self.chunks
                && chunks.blocking_send(Ok(Chunk { buf, len: n })).is_err()
            {
                self.chunks = None;
            }
        }
        // The body is complete (or abandoned): the connection need not wait
        // for the rest of the digest.
        self.chunks = None;
        if self.hasher.is_some() {
            scratch.resize(CHUNK_LEN, 0);
            loop {
                let n = file.read(&mut scratch).map_err(fail("cannot read"))?;
                if n == 0 {
                    return Ok(());
                }
                self.hash(&scratch[..n]);
            }
        }
        Ok(())
    }

    /// A buffer to read the next piece into: a new one while fewer than
    /// [`READ_AHEAD`] exist, else one given back. `None` if the body is
    /// no longer being taken.
    fn buffer(&mut self) -> Option<Vec<u8>> {
        self.chunks.as_ref()?;
        if self.allocated < READ_AHEAD {
            self.allocated += 1;
            return Some(vec![0; CHUNK_LEN]);
        }
        match self.spare.recv() {
            Ok(buf) => Some(buf),
            Err(_) => {
                self.chunks = None;
                None
            }
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
    }
}

/// Reads until `buf` is full or the file ends; the count read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
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

    async fn collect(body: &mut Body) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            got.extend_from_slice(chunk.bytes());
            body.recycle(chunk);
        }
        got
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
            assert_eq!(collect(&mut body).await, &data[offset as usize..]);
            assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));

            let (mut body, hashing) = Body::start(&path, offset, len as u64, false);
            assert_eq!(collect(&mut body).await, &data[offset as usize..]);
            assert_eq!(hashing.await.unwrap().unwrap(), None);
        }
    }

    #[tokio::test]
    async fn a_file_that_grew_is_sent_to_its_size_but_hashed_whole() {
        let (_tmp, path, data) = file_of(2 * CHUNK_LEN + 10);
        let (mut body, hashing) = Body::start(&path, 0, CHUNK_LEN as u64 + 5, true);
        assert_eq!(collect(&mut body).await, &data[..CHUNK_LEN + 5]);
        assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));
    }

    #[tokio::test]
    async fn a_file_that_shrank_ends_the_body_early() {
        let (_tmp, path, data) = file_of(CHUNK_LEN + 10);
        let (mut body, hashing) = Body::start(&path, 0, 4 * CHUNK_LEN as u64, true);
        assert_eq!(collect(&mut body).await, data);
        assert_eq!(hashing.await.unwrap().unwrap(), Some(sha(&data)));
    }

    #[tokio::test]
    async fn an_abandoned_body_is_still_hashed_to_the_end() {
        let len = 8 * CHUNK_LEN;
        let (_tmp, path, data) = file_of(len);
        let (mut body, hashing) = Body::start(&path, 0, len as u64, true);
        let first = body.next().await.unwrap().unwrap();
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
        let err = body.next().await.unwrap().err().unwrap();
        assert_eq!(err.what, "cannot open");
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert!(body.next().await.is_none());
        assert_eq!(
            hashing.await.unwrap().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
