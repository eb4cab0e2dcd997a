//! A framed, buffered [`Connection`]: reads whole frames (refusing a bad
//! prefix before its payload arrives), streams a body into the caller's
//! buffer frame by frame, and puts every wait on the peer under the idle
//! timeout and the minimum-rate check. Writing is the other half
//! (`write.rs`), under the write timeout.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufWriter};

mod write;

use super::{
    BodyRead, DIGEST_LEN, FRAME_PREFIX_LEN, Frame, ProtocolError, READ_BUF_LEN, Reply, Request,
    TAG_DATA, TAG_DIGEST, TAG_END, TAG_HEADER, WRITE_BUF_LEN, check_frame, payload_len,
};

/// A framed, buffered connection over any byte stream (TLS in production,
/// `tokio::io::duplex` in tests). Owns the read buffer, so bytes that
/// arrive together with a header are kept for the body that follows.
#[derive(Debug)]
pub struct Connection<S> {
    stream: BufWriter<S>,
    buffer: BytesMut,
    max_header: usize,
    rate: Option<RateGuard>,
    /// Bytes of the current data frame not yet handed out by
    /// [`read_body`](Connection::read_body).
    frame_left: usize,
    /// The peer closed its side while [`write_chunk_hearing`]
    /// (Connection::write_chunk_hearing) listened.
    heard_end: bool,
    /// How long one write may wait for the peer to take bytes in.
    write_timeout: Option<Duration>,
}

/// The minimum-rate check of [`Connection::guard_rate`].
#[derive(Debug, Clone, Copy)]
struct RateGuard {
    min_rate: u64,
    window: Duration,
    /// Time spent waiting for the peer in this window (not time the agent
    /// spent elsewhere, say on a slow disk).
    waited: Duration,
    bytes: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps `stream`; incoming headers longer than `max_header` are refused.
    pub fn new(stream: S, max_header: usize) -> Self {
        Connection {
            stream: BufWriter::with_capacity(WRITE_BUF_LEN, stream),
            buffer: BytesMut::with_capacity(READ_BUF_LEN),
            max_header,
            rate: None,
            frame_left: 0,
            heard_end: false,
            write_timeout: None,
        }
    }

    /// From now on, a write (a header, a piece of a body, a flush, the
    /// shutdown) fails with [`ProtocolError::Stalled`] when the peer takes
    /// in too little for it to finish within `limit`: a peer that stops
    /// reading is given up on as one that stops sending is. Without it
    /// (tests), writes wait as long as the stream does.
    pub(crate) fn set_write_timeout(&mut self, limit: Duration) {
        self.write_timeout = Some(limit);
    }

    /// From now on, reading fails with [`ProtocolError::TooSlow`] when fewer
    /// than `min_rate` bytes per second arrive while waiting for the peer
    /// over a `window` (checked whenever bytes arrive, so a peer that
    /// dribbles bytes just inside the idle timeout is cut off after about
    /// one window); `None` turns it off.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
    pub(crate) fn guard_rate(&mut self, guard: Option<(u64, Duration)>) {
        self.rate = guard.map(|(min_rate, window)| RateGuard {
            min_rate,
            window,
            waited: Duration::ZERO,
            bytes: 0,
        });
    }

    /// Accounts `n` bytes that took `waited` to arrive.
    fn count(&mut self, n: usize, waited: Duration) -> Result<(), ProtocolError> {
        let Some(guard) = self.rate.as_mut() else {
            return Ok(());
        };
        guard.bytes += n as u64;
        guard.waited += waited;
        if guard.waited >= guard.window {
            let need = (guard.min_rate as f64 * guard.waited.as_secs_f64()) as u64;
            if guard.bytes < need {
                return Err(ProtocolError::TooSlow {
                    got: guard.bytes,
                    window: guard.waited,
                    need,
                });
            }
            guard.waited = Duration::ZERO;
            guard.bytes = 0;
        }
        Ok(())
    }

    /// The underlying stream (e.g. to read the TLS session's parameters).
    pub(crate) fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// Reads the next frame. `Ok(None)` is a clean end of stream between
    /// frames; every single read waits at most `idle`.
    pub async fn read_frame(&mut self, idle: Duration) -> Result<Option<Frame>, ProtocolError> {
        loop {
            if let Some(total) = check_frame(&self.buffer, self.max_header)? {
                let tag = self.buffer[0];
                self.buffer.advance(FRAME_PREFIX_LEN);
                let payload = self.buffer.split_to(total - FRAME_PREFIX_LEN).freeze();
                return Ok(Some(match tag {
                    TAG_HEADER => Frame::Header(payload),
                    TAG_DATA => Frame::Data(payload),
                    TAG_DIGEST => Frame::Digest(digest_of(&payload)),
                    _ => Frame::End,
                }));
            }
            if self.fill_buffer(idle).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ProtocolError::UnexpectedEof)
                };
            }
        }
    }

    /// Reads more bytes into the buffer, making room for the rest of a
    /// frame whose prefix is there already; `Ok(0)` at the end of the stream.
    async fn fill_buffer(&mut self, idle: Duration) -> Result<usize, ProtocolError> {
        let expected = if self.buffer.len() < FRAME_PREFIX_LEN {
            FRAME_PREFIX_LEN
        } else {
            FRAME_PREFIX_LEN + payload_len(&self.buffer)
        };
        let missing = expected.saturating_sub(self.buffer.len());
        if self.buffer.capacity() - self.buffer.len() < missing.max(READ_BUF_LEN / 4) {
            self.buffer.reserve(missing.max(READ_BUF_LEN));
        }
        let (n, waited) =
            timed_read(self.stream.get_mut().read_buf(&mut self.buffer), idle).await?;
        self.count(n, waited)?;
        Ok(n)
    }

    /// Reads the next header and decodes it as `T`; `Ok(None)` on a clean
    /// end of stream.
    pub async fn read_message<T: DeserializeOwned>(
        &mut self,
        idle: Duration,
    ) -> Result<Option<T>, ProtocolError> {
        match self.read_frame(idle).await? {
            None => Ok(None),
            Some(Frame::Header(json)) => Ok(Some(serde_json::from_slice(&json)?)),
            Some(other) => Err(ProtocolError::Unexpected {
                got: other.kind(),
                expected: "header",
            }),
        }
    }

    /// Like [`read_message`](Self::read_message), but the end of the stream
    /// is an error: used where the peer owes us an answer.
    pub async fn expect_message<T: DeserializeOwned>(
        &mut self,
        idle: Duration,
    ) -> Result<T, ProtocolError> {
        self.read_message(idle)
            .await?
            .ok_or(ProtocolError::UnexpectedEof)
    }

    /// Reads the next piece of a body: `Some(data)`, or `None` at its end.
    pub(crate) async fn read_chunk(
        &mut self,
        idle: Duration,
    ) -> Result<Option<Bytes>, ProtocolError> {
        match self.read_frame(idle).await? {
            Some(Frame::Data(data)) => Ok(Some(data)),
            Some(Frame::End) => Ok(None),
            Some(other @ (Frame::Header(_) | Frame::Digest(_))) => Err(ProtocolError::Unexpected {
                got: other.kind(),
                expected: "data or end",
            }),
            None => Err(ProtocolError::UnexpectedEof),
        }
    }

    /// Reads the next bytes of a body into `out` without holding whole data
    /// frames in memory: [`BodyRead::Data`] with `1 <= n <= out.len()`
    /// bytes, a digest frame, or the body's end frame. Bytes that are not
    /// buffered already are read from the stream straight into `out`.
    pub(crate) async fn read_body(
        &mut self,
        out: &mut [u8],
        idle: Duration,
    ) -> Result<BodyRead, ProtocolError> {
        assert!(!out.is_empty(), "read_body needs room");
        while self.frame_left == 0 {
            if self.buffer.len() < FRAME_PREFIX_LEN {
                if self.fill_buffer(idle).await? == 0 {
                    return Err(ProtocolError::UnexpectedEof);
                }
                continue;
            }
            // Only the prefix is checked: the payload is streamed, not buffered.
            check_frame(&self.buffer[..FRAME_PREFIX_LEN], self.max_header)?;
            let tag = self.buffer[0];
            match tag {
                TAG_DATA => {
                    self.frame_left = payload_len(&self.buffer);
                    self.buffer.advance(FRAME_PREFIX_LEN);
                }
                TAG_END => {
                    self.buffer.advance(FRAME_PREFIX_LEN);
                    return Ok(BodyRead::End);
                }
                TAG_DIGEST => {
                    return match self.read_frame(idle).await? {
                        Some(Frame::Digest(digest)) => Ok(BodyRead::Digest(digest)),
                        _ => Err(ProtocolError::UnexpectedEof),
                    };
                }
                _ => {
                    return Err(ProtocolError::Unexpected {
                        got: "header",
                        expected: "data or end",
                    });
                }
            }
        }
        let want = out.len().min(self.frame_left);
        let n = if self.buffer.is_empty() {
            let (n, waited) =
                timed_read(self.stream.get_mut().read(&mut out[..want]), idle).await?;
            self.count(n, waited)?;
            if n == 0 {
                return Err(ProtocolError::UnexpectedEof);
            }
            n
        } else {
            let n = want.min(self.buffer.len());
            out[..n].copy_from_slice(&self.buffer[..n]);
            self.buffer.advance(n);
            n
        };
        self.frame_left -= n;
        Ok(BodyRead::Data(n))
    }
}

/// Reads everything `conn` yields the way the agent and the workstation
/// do: every header decoded as a request and as a reply, and after a
/// `send`, its body streamed through [`Connection::read_body`] in small
/// pieces. Stops at the end of the stream or the first error; returns how
/// many headers it saw. For the fuzz target and its regression test.
#[doc(hidden)]
pub async fn drain_for_fuzzing<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> usize {
    let idle = Duration::from_secs(1);
    let mut headers = 0;
    let mut room = [0u8; 1000];
    while let Ok(Some(frame)) = conn.read_frame(idle).await {
        let Frame::Header(json) = frame else {
            continue;
        };
        headers += 1;
        let _ = serde_json::from_slice::<Reply>(&json);
        if let Ok(Request::Send { .. }) = serde_json::from_slice::<Request>(&json) {
            while let Ok(BodyRead::Data(_) | BodyRead::Digest(_)) =
                conn.read_body(&mut room, idle).await
            {}
        }
    }
    headers
}

/// Runs one read of a stream with the idle timeout: the bytes read (0 at
/// the end of the stream) and the time spent waiting for them.
async fn timed_read(
    read: impl std::future::Future<Output = io::Result<usize>>,
    idle: Duration,
) -> Result<(usize, Duration), ProtocolError> {
    let waiting = tokio::time::Instant::now();
    let n = match tokio::time::timeout(idle, read).await {
        Err(_) => return Err(ProtocolError::Timeout(idle)),
        Ok(Ok(n)) => n,
        // TLS reports a close without close_notify as UnexpectedEof;
        // between frames that is an ordinary end of the conversation.
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
        Ok(Err(e)) => return Err(e.into()),
    };
    Ok((n, waiting.elapsed()))
}

fn digest_of(payload: &[u8]) -> [u8; DIGEST_LEN] {
    payload
        .try_into()
        .expect("check_frame lets only digest frames of DIGEST_LEN through")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::{
        ErrorCode, MAX_CHUNK_LEN, MAX_REPLY_HEADER_LEN, MAX_REQUEST_HEADER_LEN, frame_prefix,
    };

    const IDLE: Duration = Duration::from_secs(5);

    /// A pair of connections over a 7-byte pipe, so every frame arrives in
    /// pieces.
    fn pair() -> (
        Connection<tokio::io::DuplexStream>,
        Connection<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(7);
        (
            Connection::new(a, MAX_REPLY_HEADER_LEN),
            Connection::new(b, MAX_REQUEST_HEADER_LEN),
        )
    }

    /// Writes `bytes` from a task (the pipe is too small to hold them) and
    /// drops the connection when done, which ends the stream.
    fn feed(
        mut conn: Connection<tokio::io::DuplexStream>,
        bytes: Vec<u8>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // The reader may stop early on an error: ignore a broken pipe.
            let _ = conn.write_raw(&bytes).await;
        })
    }

    #[tokio::test]
    async fn messages_and_bodies_round_trip_through_a_tiny_pipe() {
        let (mut client, mut agent) = pair();
        let request = Request::Send {
            name: "cube.gcode".into(),
            size: 300_000,
            sha256: Some("ab".repeat(32)),
            overwrite: false,
            encoding: None,
            resume: false,
            confirm: false,
            progress: false,
            print: None,
        };
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = request.clone();
        let sent_body = body.clone();
        let writer = tokio::spawn(async move {
            client.write_message(&sent).await.unwrap();
            client.write_chunk(&sent_body).await.unwrap();
            client.write_end().await.unwrap();
            client.write_message(&Request::Ping).await.unwrap();
        });
        assert_eq!(
            agent.read_message::<Request>(IDLE).await.unwrap(),
            Some(request)
        );
        let mut received = Vec::new();
        while let Some(chunk) = agent.read_chunk(IDLE).await.unwrap() {
            received.extend_from_slice(&chunk);
        }
        assert_eq!(received, body);
        assert_eq!(
            agent.read_message::<Request>(IDLE).await.unwrap(),
            Some(Request::Ping)
        );
        writer.await.unwrap();
        assert_eq!(agent.read_message::<Request>(IDLE).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bodies_stream_into_small_buffers_across_frames() {
        let (mut client, mut agent) = pair();
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let sent_body = body.clone();
        let writer = tokio::spawn(async move {
            // Frames of uneven sizes, so pieces straddle frame boundaries.
            for piece in [&sent_body[..1], &sent_body[1..40_000], &sent_body[40_000..]] {
                client.write_chunk(piece).await.unwrap();
                if piece.len() == 1 {
                    client.write_digest(&[9; DIGEST_LEN]).await.unwrap();
                }
            }
            client.write_end().await.unwrap();
            client.write_message(&Request::Ping).await.unwrap();
        });
        let mut received = Vec::new();
        let mut room = [0u8; 1000];
        let mut digests = Vec::new();
        loop {
            match agent.read_body(&mut room, IDLE).await.unwrap() {
                BodyRead::Data(n) => {
                    assert!((1..=room.len()).contains(&n));
                    received.extend_from_slice(&room[..n]);
                }
                BodyRead::Digest(digest) => digests.push((received.len(), digest)),
                BodyRead::End => break,
            }
        }
        assert_eq!(received, body);
        assert_eq!(digests, [(1, [9; DIGEST_LEN])]);
        // What follows the body is read as usual.
        assert_eq!(
            agent.read_message::<Request>(IDLE).await.unwrap(),
            Some(Request::Ping)
        );
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_streamed_body_refuses_headers_bad_frames_and_a_cut() {
        let mut header = frame_prefix(TAG_DATA, 3).to_vec();
        header.extend_from_slice(b"abc");
        header.extend_from_slice(&frame_prefix(TAG_HEADER, 2));
        header.extend_from_slice(b"{}");
        let mut cut = frame_prefix(TAG_DATA, 10).to_vec();
        cut.extend_from_slice(b"abc");
        for (bytes, want) in [
            (header, "expected data or end"),
            (frame_prefix(TAG_DATA, 0).to_vec(), "outside"),
            (frame_prefix(b'Z', 1).to_vec(), "tag byte"),
            (frame_prefix(TAG_DIGEST, 31).to_vec(), "must carry 32"),
            (cut, "closed in the middle"),
        ] {
            let (client, mut agent) = pair();
            let _client = feed(client, bytes);
            let mut room = [0u8; 64];
            let err = loop {
                match agent.read_body(&mut room, IDLE).await {
                    Ok(BodyRead::Data(_)) => {}
                    Ok(other) => panic!("a broken body yielded {other:?}"),
                    Err(e) => break e,
                }
            };
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
    }

    #[tokio::test]
    async fn wire_names_are_stable() {
        let json = serde_json::to_string(&Reply::Error {
            code: ErrorCode::DigestMismatch,
            message: "m".into(),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","code":"digest_mismatch","message":"m"}"#
        );
        let req: Request = serde_json::from_str(r#"{"op":"get","name":"a.gcode"}"#).unwrap();
        assert_eq!(
            req,
            Request::Get {
                name: "a.gcode".into()
            }
        );
        assert_eq!(ErrorCode::NoSpace.as_str(), "no_space");
    }

    #[tokio::test]
    async fn oversized_header_is_refused_from_its_prefix() {
        let (mut client, mut agent) = pair();
        let prefix = frame_prefix(TAG_HEADER, (MAX_REQUEST_HEADER_LEN + 1) as u32);
        client.write_raw(&prefix).await.unwrap();
        let err = agent.read_frame(IDLE).await.unwrap_err();
        assert!(matches!(err, ProtocolError::HeaderTooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn bad_frames_are_rejected() {
        for (bytes, want) in [
            (b"GET / HTTP/1.1\r\n".to_vec(), "tag byte 0x47"),
            (frame_prefix(TAG_DATA, 0).to_vec(), "outside"),
            (
                frame_prefix(TAG_DATA, MAX_CHUNK_LEN as u32 + 1).to_vec(),
                "outside",
            ),
            (frame_prefix(TAG_END, 3).to_vec(), "must be empty"),
        ] {
            let (client, mut agent) = pair();
            let _client = feed(client, bytes);
            let err = agent.read_frame(IDLE).await.unwrap_err();
            assert!(err.to_string().contains(want), "{err} lacks {want}");
            assert!(!err.is_recoverable());
        }
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_an_error_and_between_frames_is_not() {
        let (client, mut agent) = pair();
        let mut bytes = frame_prefix(TAG_HEADER, 10).to_vec();
        bytes.extend_from_slice(b"{\"op\"");
        let _writer = feed(client, bytes);
        let err = agent.read_frame(IDLE).await.unwrap_err();
        assert!(matches!(err, ProtocolError::UnexpectedEof));

        let (client, mut agent) = pair();
        drop(client);
        assert_eq!(agent.read_frame(IDLE).await.unwrap(), None);
    }

    #[tokio::test]
    async fn malformed_json_is_recoverable_and_unexpected_frames_are_not() {
        let (mut client, mut agent) = pair();
        let writer = tokio::spawn(async move {
            client
                .write_raw(&frame_prefix(TAG_HEADER, 2))
                .await
                .unwrap();
            client.write_raw(b"{]").await.unwrap();
            client.write_chunk(b"x").await.unwrap();
            client.write_end().await.unwrap();
            client
        });
        let err = agent.read_message::<Request>(IDLE).await.unwrap_err();
        assert!(err.is_recoverable());
        let err = agent.read_message::<Request>(IDLE).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Unexpected { got: "data", .. }));
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (_client, mut agent) = pair();
        let err = agent.read_frame(Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Timeout(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_stalls_every_kind_of_write() {
        let (_client, mut agent) = pair();
        let body = vec![7u8; 4 * MAX_CHUNK_LEN];
        // Without a write timeout the write waits as long as the stream does.
        let waiting =
            tokio::time::timeout(Duration::from_secs(600), agent.write_chunk(&body)).await;
        assert!(waiting.is_err(), "the pipe is full and nobody reads");
        agent.set_write_timeout(Duration::from_secs(30));
        let err = agent.write_chunk(&body).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Stalled(d) if d == Duration::from_secs(30)));
        assert!(matches!(
            agent.write_message(&Reply::Pong).await,
            Err(ProtocolError::Stalled(_))
        ));
        assert!(matches!(
            agent.write_end().await,
            Err(ProtocolError::Stalled(_))
        ));
        assert!(matches!(
            agent.write_chunk_hearing(&body, true).await,
            Err(ProtocolError::Stalled(_))
        ));
    }
}
