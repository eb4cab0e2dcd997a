//! The body of a `send` on its way out: read (and hashed, when the digest
//! is still to be known) on a thread of its own ([`super::body`]),
//! compressed if agreed, written while the agent's progress replies are
//! heard, with the digest inside the body once it is known; counted.

use std::io;
use std::path::Path;

use super::body::{Body, Piece};
use super::digest::PendingDigest;
use super::error::local_error;
use super::send::{Accepted, Offer};
use super::{Client, ClientError, Observer};
use crate::wire::codec::Compressor;
use crate::wire::protocol::{CHUNK_LEN, DIGEST_LEN, Encoding};

/// The body on its way: through the compressor or not, and counted.
pub(super) struct Outgoing {
    deflate: Option<Compressor>,
    /// Compressed bytes not yet handed to the connection.
    wire: Vec<u8>,
    /// Bytes that crossed the network.
    pub(super) wire_bytes: u64,
    /// Bytes of the file sent (the offset included).
    pub(super) sent: u64,
}

impl Outgoing {
    fn new(accepted: &Accepted) -> io::Result<Outgoing> {
        let deflate = match accepted.encoding {
            Some(Encoding::Zstd) => Some(Compressor::new()?),
            None => None,
        };
        Ok(Outgoing {
            deflate,
            wire: Vec::with_capacity(2 * CHUNK_LEN),
            wire_bytes: 0,
            sent: accepted.offset,
        })
    }
}

impl Client {
    /// The body from the agent's offset, read (and hashed, if the digest
    /// is still to be known) on a thread of its own, compressed if agreed,
    /// with the digest inside once it is known; the bar follows what the
    /// agent says it received.
    pub(super) async fn send_body(
        &mut self,
        offer: &Offer<'_>,
        digest: &mut PendingDigest,
        accepted: &Accepted,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Outgoing, ClientError> {
        let local = local_error(offer.path);
        // The request went without the digest: it follows inside the body.
        let mut digest_due = digest.now().is_none();
        let hash = digest.is_unstarted();
        let (mut body, hashing) = match &self.growing {
            Some(growth) => {
                let growth = std::sync::Arc::clone(growth);
                Body::start_growing(offer.path, accepted.offset, offer.size, hash, growth)
            }
            None => Body::start(offer.path, accepted.offset, offer.size, hash),
        };
        if hash {
            digest.hashed_by(hashing);
        }
        let mut out = Outgoing::new(accepted).map_err(local("cannot compress"))?;
        observer.progress(accepted.offset);
        if accepted.keeps && !digest_due {
            observer.resumable();
        }
        // The reader stops at the announced size; if the file changed
        // meanwhile the agent's digest check refuses it.
        while let Some(piece) = body.next().await {
            match piece.map_err(|e| local(e.what)(e.source))? {
                Piece::Data(chunk) => {
                    self.put(&mut out, chunk.bytes(), offer.path).await?;
                    body.recycle(chunk);
                }
                Piece::Digest(sha256) => {
                    digest.set(sha256);
                    if digest_due {
                        self.send_digest(digest, offer.path).await?;
                        digest_due = false;
                        if accepted.keeps {
                            observer.resumable();
                        }
                    }
                }
            }
            self.heard(offer.size, observer);
        }
        self.put_last(&mut out, offer.path).await?;
        if digest_due {
            self.send_digest(digest, offer.path).await?;
        }
        // Flushed while hearing the agent: the last pieces may take long
        // on a slow link, and the bar keeps moving meanwhile.
        self.writing(|conn| conn.write_chunk_hearing(&[], true))
            .await?;
        self.heard(offer.size, observer);
        self.writing(|conn| conn.write_end()).await?;
        tracing::debug!(file_name = %offer.name, wire_bytes = out.wire_bytes, "body handed to the network; waiting for the agent's verdict");
        Ok(out)
    }

    /// Hands a piece of the body to the connection, through the compressor
    /// when there is one.
    async fn put(
        &mut self,
        out: &mut Outgoing,
        bytes: &[u8],
        path: &Path,
    ) -> Result<(), ClientError> {
        out.sent += bytes.len() as u64;
        let Some(deflate) = out.deflate.as_mut() else {
            self.writing(|conn| conn.write_chunk_hearing(bytes, false))
                .await?;
            out.wire_bytes += bytes.len() as u64;
            return Ok(());
        };
        deflate
            .compress(bytes, &mut out.wire)
            .map_err(local_error(path)("cannot compress"))?;
        if out.wire.len() >= CHUNK_LEN {
            self.put_wire(out).await?;
        }
        Ok(())
    }

    /// Ends the compressed stream, if any, and hands over what it holds.
    async fn put_last(&mut self, out: &mut Outgoing, path: &Path) -> Result<(), ClientError> {
        let Some(deflate) = out.deflate.as_mut() else {
            return Ok(());
        };
        deflate
            .finish(&mut out.wire)
            .map_err(local_error(path)("cannot compress"))?;
        self.put_wire(out).await
    }

    async fn put_wire(&mut self, out: &mut Outgoing) -> Result<(), ClientError> {
        self.writing(|conn| conn.write_chunk_hearing(&out.wire, false))
            .await?;
        out.wire_bytes += out.wire.len() as u64;
        out.wire.clear();
        Ok(())
    }

    /// The bar shows what the agent says it has, not what the kernel took.
    fn heard(&mut self, size: u64, observer: &mut (dyn Observer + Send)) {
        if let Some(received) = self.conn.take_progress() {
            observer.progress(received.min(size));
        }
    }

    /// Sends the file's digest inside the body, waiting for it if need be.
    async fn send_digest(
        &mut self,
        digest: &mut PendingDigest,
        path: &Path,
    ) -> Result<(), ClientError> {
        let sha256 = digest
            .wait()
            .await
            .map_err(local_error(path)("cannot read"))?;
        let mut raw = [0u8; DIGEST_LEN];
        hex::decode_to_slice(&sha256, &mut raw)
            .map_err(|e| ClientError::Integrity(e.to_string()))?;
        self.writing(|conn| conn.write_digest(&raw)).await
    }
}
