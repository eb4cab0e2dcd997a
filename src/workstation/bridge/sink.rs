//! Where an upload's bytes go as they arrive: a temp file, written and
//! hashed on a thread of its own in batches, telling a [`Growth`] (when
//! there is one) how far it is, so that a send can follow the writing.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::form::{BadForm, Spooled, local};
use crate::workstation::growing::Growth;

/// Bytes gathered before they go to the writer thread: a browser's upload
/// arrives in pieces of about 24 KiB, too small to hand over one by one
/// (a piece this big or bigger goes as it is, uncopied).
const BATCH: usize = 256 * 1024;
/// Batches queued for the writer thread, at most: memory stays bounded
/// (about `(SINK_QUEUE + 2) * BATCH`), and receiving goes on while the
/// disk and the hash catch up.
const SINK_QUEUE: usize = 2;

/// A temp file being written and hashed on a thread of its own, beside the
/// receiving of the body, in batches of [`BATCH`] bytes.
pub(super) struct Sink {
    pub(super) file: tempfile::NamedTempFile,
    batch: bytes::BytesMut,
    batches: Option<tokio::sync::mpsc::Sender<Bytes>>,
    writer: tokio::task::JoinHandle<std::io::Result<(u64, String)>>,
    dir: std::path::PathBuf,
}

impl Sink {
    /// A sink into a new temp file in `dir`, telling `growth` (if any) how
    /// far it is written.
    pub(super) fn new(dir: &Path, growth: Option<Arc<Growth>>) -> Result<Sink, BadForm> {
        let file = tempfile::Builder::new()
            .prefix(".fileagent-bridge-")
            .tempfile_in(dir)
            .map_err(local(dir))?;
        let out = file.reopen().map_err(local(dir))?;
        let (batches, queue) = tokio::sync::mpsc::channel(SINK_QUEUE);
        let writer = tokio::task::spawn_blocking(move || write_and_hash(out, queue, growth));
        Ok(Sink {
            file,
            batch: bytes::BytesMut::with_capacity(BATCH),
            batches: Some(batches),
            writer,
            dir: dir.to_path_buf(),
        })
    }

    pub(super) async fn write(&mut self, chunk: &Bytes) -> Result<(), BadForm> {
        if chunk.len() >= BATCH {
            self.hand_over().await?;
            return self.send(chunk.clone()).await;
        }
        self.batch.extend_from_slice(chunk);
        if self.batch.len() >= BATCH {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// The gathered bytes, if any, to the writer thread.
    async fn hand_over(&mut self) -> Result<(), BadForm> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, bytes::BytesMut::with_capacity(BATCH));
        self.send(batch.freeze()).await
    }

    async fn send(&mut self, batch: Bytes) -> Result<(), BadForm> {
        let taken = match &self.batches {
            Some(batches) => batches.send(batch).await.is_ok(),
            None => false,
        };
        if !taken {
            // The writer stopped: its error says why.
            self.batches = None;
            return Err(self.writer_error().await);
        }
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<Spooled, BadForm> {
        self.hand_over().await?;
        self.batches = None;
        match (&mut self.writer).await {
            Ok(Ok((size, sha256))) => Ok(Spooled {
                file: self.file,
                size,
                sha256,
            }),
            Ok(Err(e)) => Err(local(&self.dir)(e)),
            Err(e) => Err(local(&self.dir)(std::io::Error::other(e))),
        }
    }

    async fn writer_error(&mut self) -> BadForm {
        match (&mut self.writer).await {
            Ok(Err(e)) => local(&self.dir)(e),
            Ok(Ok(_)) => local(&self.dir)(std::io::Error::other("the writer stopped early")),
            Err(e) => local(&self.dir)(std::io::Error::other(e)),
        }
    }
}

/// The writer thread: each batch to `out` and into the hash; the size and
/// SHA-256 (lower-case hex) once the queue closes.
fn write_and_hash(
    mut out: std::fs::File,
    mut queue: tokio::sync::mpsc::Receiver<Bytes>,
    growth: Option<Arc<Growth>>,
) -> std::io::Result<(u64, String)> {
    use std::io::Write;
    let mut hasher = sha2::Sha256::default();
    let mut size = 0u64;
    while let Some(batch) = queue.blocking_recv() {
        out.write_all(&batch)?;
        size += batch.len() as u64;
        if let Some(growth) = &growth {
            growth.grew(size);
        }
        sha2::Digest::update(&mut hasher, &batch);
    }
    Ok((size, hex::encode(sha2::Digest::finalize(hasher))))
}
