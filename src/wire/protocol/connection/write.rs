//! The writing half of a [`Connection`]: headers, body pieces (also while
//! hearing what the peer sends meanwhile, its progress replies), the digest
//! and end frames, flush and shutdown; every write under the connection's
//! write timeout.

use std::io;
use std::time::Duration;

use bytes::Buf;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Connection;
use crate::wire::protocol::{
    DIGEST_LEN, FRAME_PREFIX_LEN, MAX_CHUNK_LEN, ProtocolError, READ_BUF_LEN, Reply, TAG_DATA,
    TAG_DIGEST, TAG_END, TAG_HEADER, check_frame, frame_prefix,
};

/// Most bytes [`Connection::write_chunk_hearing`] keeps in the read buffer
/// unread: a peer that sends more while the body goes out waits (its
/// progress replies are a few dozen bytes each).
const HEARD_MAX: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Writes one header and flushes it.
    pub async fn write_message<T: Serialize>(&mut self, message: &T) -> Result<(), ProtocolError> {
        let json = serde_json::to_vec(message).map_err(io::Error::other)?;
        bounded(self.write_timeout, async {
            self.write_prefix(TAG_HEADER, json.len()).await?;
            self.stream.write_all(&json).await?;
            self.stream.flush().await
        })
        .await
    }

    /// Like [`write_chunk`](Self::write_chunk) followed by a flush when
    /// `flush` is set, but reading what the peer sends meanwhile (the
    /// agent's [`Reply::Progress`]) into the read buffer, so that a
    /// peer writing while this side writes never blocks both; take them
    /// with [`take_progress`](Self::take_progress).
    pub(crate) async fn write_chunk_hearing(
        &mut self,
        data: &[u8],
        flush: bool,
    ) -> Result<(), ProtocolError> {
        bounded(
            self.write_timeout,
            self.write_chunk_hearing_now(data, flush),
        )
        .await
    }

    async fn write_chunk_hearing_now(&mut self, data: &[u8], flush: bool) -> io::Result<()> {
        for piece in data.chunks(MAX_CHUNK_LEN) {
            let len = u32::try_from(piece.len()).map_err(io::Error::other)?;
            self.write_all_hearing(&frame_prefix(TAG_DATA, len)).await?;
            self.write_all_hearing(piece).await?;
        }
        if flush {
            std::future::poll_fn(|cx| {
                self.hear(cx)?;
                std::pin::Pin::new(&mut self.stream).poll_flush(cx)
            })
            .await?;
        }
        Ok(())
    }

    async fn write_all_hearing(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        use std::task::Poll;
        std::future::poll_fn(|cx| {
            loop {
                self.hear(cx)?;
                if bytes.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match std::pin::Pin::new(&mut self.stream).poll_write(cx, bytes) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => bytes = &bytes[n..],
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    }

    /// Reads whatever the peer has sent, without waiting (registering `cx`
    /// for more), up to [`HEARD_MAX`] bytes buffered.
    fn hear(&mut self, cx: &mut std::task::Context<'_>) -> io::Result<()> {
        use std::task::Poll;
        while !self.heard_end && self.buffer.len() < HEARD_MAX {
            if self.buffer.capacity() - self.buffer.len() < READ_BUF_LEN / 4 {
                self.buffer.reserve(READ_BUF_LEN);
            }
            let stream = std::pin::Pin::new(self.stream.get_mut());
            match tokio_util::io::poll_read_buf(stream, cx, &mut self.buffer) {
                Poll::Ready(Ok(0)) => self.heard_end = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// The latest [`Reply::Progress`] among the whole frames already read,
    /// taking every progress reply at the front of the read buffer and
    /// leaving anything else (the verdict) for
    /// [`read_message`](Self::read_message). Does not read.
    pub(crate) fn take_progress(&mut self) -> Option<u64> {
        let mut latest = None;
        while let Ok(Some(total)) = check_frame(&self.buffer, self.max_header) {
            if self.buffer[0] != TAG_HEADER {
                break;
            }
            let json = &self.buffer[FRAME_PREFIX_LEN..total];
            match serde_json::from_slice::<Reply>(json) {
                Ok(Reply::Progress { received }) => latest = Some(received),
                _ => break,
            }
            self.buffer.advance(total);
        }
        latest
    }

    /// Writes one piece of a body (not flushed), split into frames of at
    /// most `MAX_CHUNK_LEN`; an empty slice writes nothing.
    pub async fn write_chunk(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        bounded(self.write_timeout, async {
            for piece in data.chunks(MAX_CHUNK_LEN) {
                self.write_prefix(TAG_DATA, piece.len()).await?;
                self.stream.write_all(piece).await?;
            }
            Ok(())
        })
        .await
    }

    /// Sends the file's SHA-256 inside a body (not flushed): for a `send`
    /// that came without it, once the client has finished hashing.
    pub async fn write_digest(&mut self, sha256: &[u8; DIGEST_LEN]) -> Result<(), ProtocolError> {
        bounded(self.write_timeout, async {
            self.write_prefix(TAG_DIGEST, DIGEST_LEN).await?;
            self.stream.write_all(sha256).await
        })
        .await
    }

    /// Ends a body and flushes.
    pub async fn write_end(&mut self) -> Result<(), ProtocolError> {
        bounded(self.write_timeout, async {
            self.write_prefix(TAG_END, 0).await?;
            self.stream.flush().await
        })
        .await
    }

    /// Sends what [`write_chunk`](Self::write_chunk) buffered.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        bounded(self.write_timeout, self.stream.flush()).await
    }

    /// Writes raw bytes, bypassing framing: only for tests of hostile peers.
    #[doc(hidden)]
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        bounded(self.write_timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
    }

    /// Flushes and shuts down the sending side (TLS close_notify).
    pub async fn shutdown(&mut self) -> Result<(), ProtocolError> {
        bounded(self.write_timeout, self.stream.shutdown()).await
    }

    async fn write_prefix(&mut self, tag: u8, len: usize) -> io::Result<()> {
        let len = u32::try_from(len).map_err(io::Error::other)?;
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        prefix[0] = tag;
        prefix[1..].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&prefix).await
    }
}

/// Runs one write, within `limit` when there is one.
async fn bounded(
    limit: Option<Duration>,
    write: impl Future<Output = io::Result<()>>,
) -> Result<(), ProtocolError> {
    let Some(limit) = limit else {
        return Ok(write.await?);
    };
    match tokio::time::timeout(limit, write).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(ProtocolError::Stalled(limit)),
    }
}
