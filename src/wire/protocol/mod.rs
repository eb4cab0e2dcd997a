//! The wire format between `fileagent` workstations and the agent.
//!
//! Everything that crosses the network is defined here and described in
//! `docs/protocol.md`: the frame layout, the limits and the frame check in
//! this file, the typed request and reply messages and the error codes in
//! `messages`, and the [`Connection`] that reads and writes frames in
//! `connection`. The transport under it is a mutually authenticated TLS 1.3
//! stream negotiated with ALPN [`ALPN`].
//!
//! A frame is a one-byte tag, a big-endian `u32` payload length and the
//! payload. Headers (`H`) carry one JSON message; a file body is a run of data
//! frames (`D`) closed by an end frame (`E`), so both sides always know where a
//! body stops and a body that is shorter or longer than declared is detected
//! without guessing.

use std::io;
use std::time::Duration;

use bytes::Bytes;

mod connection;
mod messages;

pub use connection::{Connection, drain_for_fuzzing};

pub use messages::{
    AgentStatus, BUSY_FLAGS, Encoding, ErrorCode, FileEntry, Issued, PrinterReport, Reply, Request,
    Temperature, Watched,
};

/// ALPN protocol id; a future incompatible protocol gets a new id.
pub const ALPN: &[u8] = b"fileagent/1";
/// Default TCP port of the agent.
pub(crate) const DEFAULT_PORT: u16 = 7341;
/// Bytes before a frame's payload: tag (1) and length (4).
pub(crate) const FRAME_PREFIX_LEN: usize = 5;
/// Largest header a client may send; anything larger is refused.
pub const MAX_REQUEST_HEADER_LEN: usize = 16 * 1024;
/// Largest header the agent may send (a `list` of many files).
pub const MAX_REPLY_HEADER_LEN: usize = 16 * 1024 * 1024;
/// ALPN id of a pairing connection: a workstation without a certificate
/// that may only run the pairing exchange (see `docs/pairing.md`).
pub const PAIR_ALPN: &[u8] = b"fileagent-pair/1";
/// Largest data frame either side accepts.
pub(crate) const MAX_CHUNK_LEN: usize = 1024 * 1024;
/// A body must arrive at this rate at least, measured over windows of
/// `body_idle_timeout`; slower senders (slowloris) are cut off.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub(crate) const MIN_BODY_RATE: u64 = 1024;
/// A client reopens a connection left idle longer than this before its next
/// request; the agent's `header_timeout` may not be shorter (a contract of
/// both ends).
pub(crate) const RECONNECT_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// Size of the data frames fileagent itself sends.
pub(crate) const CHUNK_LEN: usize = 256 * 1024;
/// Least time between two [`Reply::Progress`] of one body: often enough
/// for a steady progress bar, rare enough to cost nothing.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub(crate) const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// During a `watch`, the agent reports at least this often, changed or
/// not, so each side can tell the other is still there.
pub const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);
/// During a `watch`, changes that come this close together are reported
/// as one.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub(crate) const WATCH_COALESCE: std::time::Duration = std::time::Duration::from_millis(200);
/// Read buffer of a connection: enough for headers and frame prefixes
/// (grown for a larger frame); body data goes straight to its destination
/// ([`Connection::read_body`]).
const READ_BUF_LEN: usize = 4 * 1024;
/// Write buffer of a connection, for headers and frame prefixes; larger
/// body pieces bypass it.
const WRITE_BUF_LEN: usize = 16 * 1024;

const TAG_HEADER: u8 = b'H';
const TAG_DATA: u8 = b'D';
const TAG_END: u8 = b'E';
const TAG_DIGEST: u8 = b'S';
/// Payload of a digest frame: a raw SHA-256.
pub const DIGEST_LEN: usize = 32;

/// What went wrong while reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The underlying stream failed (in the message, so not its
    /// `source()`).
    #[error("connection error: {0}")]
    Io(io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a message")]
    UnexpectedEof,
    /// Nothing arrived within the allowed time.
    #[error("no data for {0:?}")]
    Timeout(Duration),
    /// A write did not finish within the allowed time: the peer stopped
    /// reading (see `Connection::set_write_timeout`).
    #[error("the peer took in nothing for {0:?}: it stopped reading")]
    Stalled(Duration),
    /// A body arrived slower than the minimum rate (a slowloris).
    #[error("sending too slowly: {got} bytes in {window:?}, at least {need} needed")]
    TooSlow {
        /// Bytes received in the window.
        got: u64,
        /// The window.
        window: Duration,
        /// Bytes the minimum rate asks for in it.
        need: u64,
    },
    /// A frame started with a tag this protocol does not know.
    #[error("not a fileagent frame (tag byte {0:#04x})")]
    BadTag(u8),
    /// A header frame was longer than allowed.
    #[error("header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// Declared length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// A data frame was empty or longer than `MAX_CHUNK_LEN`.
    #[error("data frame of {0} bytes is outside 1..={MAX_CHUNK_LEN}")]
    BadChunkLen(usize),
    /// An end frame carried a payload.
    #[error("end frame carries {0} bytes; it must be empty")]
    BadEndLen(usize),
    /// A digest frame was not exactly [`DIGEST_LEN`] bytes.
    #[error("digest frame carries {0} bytes; it must carry {DIGEST_LEN}")]
    BadDigestLen(usize),
    /// A header was not the JSON message expected here (in the message,
    /// so not its `source()`).
    #[error("malformed message: {0}")]
    BadMessage(serde_json::Error),
    /// A frame arrived that is not allowed at this point.
    #[error("unexpected {got} frame, expected {expected}")]
    Unexpected {
        /// What arrived.
        got: &'static str,
        /// What was expected.
        expected: &'static str,
    },
}

impl From<io::Error> for ProtocolError {
    fn from(e: io::Error) -> Self {
        ProtocolError::Io(e)
    }
}

impl From<serde_json::Error> for ProtocolError {
    fn from(e: serde_json::Error) -> Self {
        ProtocolError::BadMessage(e)
    }
}

impl ProtocolError {
    /// True when the frame stream is still in sync, so the connection can
    /// carry the next request after an error reply.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
    pub(crate) fn is_recoverable(&self) -> bool {
        matches!(self, ProtocolError::BadMessage(_))
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A JSON header.
    Header(Bytes),
    /// A piece of a body.
    Data(Bytes),
    /// The end of a body.
    End,
    /// The file's SHA-256, inside a body whose `send` came without it.
    Digest([u8; DIGEST_LEN]),
}

impl Frame {
    fn kind(&self) -> &'static str {
        match self {
            Frame::Header(_) => "header",
            Frame::Data(_) => "data",
            Frame::End => "end",
            Frame::Digest(_) => "digest",
        }
    }
}

/// What `Connection::read_body` found next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// This many bytes of the body, at the start of the buffer given.
    Data(usize),
    /// The file's digest (a body whose `send` came without it).
    Digest([u8; DIGEST_LEN]),
    /// The end of the body.
    End,
}

/// Checks whether `buf` starts with a whole frame, validating the prefix
/// first so an oversized or bogus frame is refused before its payload is
/// read. Returns the frame's total length when it is complete.
fn check_frame(buf: &[u8], max_header: usize) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < FRAME_PREFIX_LEN {
        return Ok(None);
    }
    let len = payload_len(buf);
    match buf[0] {
        TAG_HEADER if len > max_header => {
            return Err(ProtocolError::HeaderTooLarge {
                len,
                max: max_header,
            });
        }
        TAG_HEADER => {}
        TAG_DATA if len == 0 || len > MAX_CHUNK_LEN => {
            return Err(ProtocolError::BadChunkLen(len));
        }
        TAG_DATA => {}
        TAG_END if len != 0 => return Err(ProtocolError::BadEndLen(len)),
        TAG_END => {}
        TAG_DIGEST if len != DIGEST_LEN => return Err(ProtocolError::BadDigestLen(len)),
        TAG_DIGEST => {}
        tag => return Err(ProtocolError::BadTag(tag)),
    }
    let total = FRAME_PREFIX_LEN + len;
    Ok((buf.len() >= total).then_some(total))
}

/// The payload length a frame prefix (at least [`FRAME_PREFIX_LEN`] bytes) declares.
fn payload_len(prefix: &[u8]) -> usize {
    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize
}

/// Encodes a frame prefix; for tests that build frames by hand.
#[doc(hidden)]
pub fn frame_prefix(tag: u8, len: u32) -> [u8; FRAME_PREFIX_LEN] {
    let mut prefix = [tag, 0, 0, 0, 0];
    prefix[1..].copy_from_slice(&len.to_be_bytes());
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame prefix followed by `have` bytes of its payload.
    fn frame(tag: u8, len: u32, have: usize) -> Vec<u8> {
        let mut bytes = frame_prefix(tag, len).to_vec();
        bytes.resize(FRAME_PREFIX_LEN + have, b'x');
        bytes
    }

    #[test]
    fn a_frame_is_whole_only_once_its_payload_is_buffered() {
        let max = 100;
        assert!(matches!(check_frame(b"H\0\0", max), Ok(None)));
        assert!(matches!(
            check_frame(&frame(TAG_HEADER, 10, 9), max),
            Ok(None)
        ));
        assert!(matches!(
            check_frame(&frame(TAG_HEADER, 10, 10), max),
            Ok(Some(15))
        ));
        // Bytes of the next frame behind it do not count.
        assert!(matches!(
            check_frame(&frame(TAG_DATA, 3, 8), max),
            Ok(Some(8))
        ));
        assert!(matches!(
            check_frame(&frame(TAG_END, 0, 0), max),
            Ok(Some(5))
        ));
        let digest = frame(TAG_DIGEST, DIGEST_LEN as u32, DIGEST_LEN);
        assert!(matches!(check_frame(&digest, max), Ok(Some(37))));
        assert_eq!(
            payload_len(&frame_prefix(TAG_DATA, 0x0102_0304)),
            0x0102_0304
        );
    }

    #[test]
    fn a_bad_prefix_is_refused_before_its_payload_arrives() {
        let max = 100;
        let refused = |tag, len| check_frame(&frame(tag, len, 0), max).unwrap_err();
        assert!(matches!(
            refused(TAG_HEADER, 101),
            ProtocolError::HeaderTooLarge { len: 101, max: 100 }
        ));
        assert!(matches!(
            refused(TAG_DATA, 0),
            ProtocolError::BadChunkLen(0)
        ));
        let over = MAX_CHUNK_LEN as u32 + 1;
        assert!(
            matches!(refused(TAG_DATA, over), ProtocolError::BadChunkLen(n) if n == over as usize)
        );
        assert!(matches!(refused(TAG_END, 1), ProtocolError::BadEndLen(1)));
        assert!(matches!(
            refused(TAG_DIGEST, 31),
            ProtocolError::BadDigestLen(31)
        ));
        assert!(matches!(refused(b'G', 0), ProtocolError::BadTag(b'G')));
        // Only a stream still in sync can carry the next request.
        assert!(!refused(TAG_DATA, 0).is_recoverable());
    }

    #[test]
    fn an_encoding_is_logged_by_its_name_on_the_wire() {
        let wire = serde_json::to_string(&Encoding::Zstd).unwrap();
        assert_eq!(wire, format!("\"{}\"", Encoding::Zstd.name()));
    }
}
