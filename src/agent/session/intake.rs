//! A body being received, apart from the session's I/O: its decoder, the
//! first failure (a body is read to its end anyway), the scratch buffer,
//! decoding into the upload, and when to tell the client how far it came.

use std::time::Instant;

use crate::agent::spool::{SpoolError, Upload};
use crate::wire::codec::Decompressor;
use crate::wire::protocol::{Encoding, PROGRESS_INTERVAL};

/// A body being received: its decoder, the first thing that went wrong
/// (the body is read to its end anyway), what crossed the network, and the
/// buffer for compressed pieces and the rest of a failed body.
pub(super) struct Intake {
    inflate: Option<Decompressor>,
    failure: Option<SpoolError>,
    pub(super) wire_bytes: u64,
    pub(super) scratch: Vec<u8>,
}

impl Intake {
    pub(super) fn new(encoding: Option<Encoding>) -> Intake {
        let mut intake = Intake {
            inflate: None,
            failure: None,
            wire_bytes: 0,
            scratch: Vec::new(),
        };
        match encoding.map(|Encoding::Zstd| Decompressor::new()) {
            Some(Ok(decoder)) => intake.inflate = Some(decoder),
            Some(Err(e)) => intake.fail(SpoolError::io("cannot start a zstd decoder")(e)),
            None => {}
        }
        intake
    }

    /// Keeps the first failure.
    pub(super) fn fail(&mut self, e: SpoolError) {
        self.failure.get_or_insert(e);
    }

    /// Plain and all well: pieces go straight into the upload's buffers.
    pub(super) fn direct(&self) -> bool {
        self.failure.is_none() && self.inflate.is_none()
    }

    /// Takes `n` bytes just read: committed to the upload (read into its
    /// buffers), or decoded from the scratch buffer into it.
    pub(super) async fn accept(&mut self, n: usize, upload: &mut Upload) {
        self.wire_bytes += n as u64;
        if self.failure.is_some() {
            return;
        }
        let accepted = match self.inflate.as_mut() {
            Some(decoder) => inflate_into(decoder, &self.scratch[..n], upload).await,
            None => upload.commit(n).await,
        };
        if let Err(e) = accepted {
            self.fail(e);
        }
    }

    /// What went wrong with the body, now that it ended.
    pub(super) fn ended(self) -> Option<SpoolError> {
        match self.failure {
            None if self.inflate.as_ref().is_some_and(|d| !d.is_complete()) => Some(
                SpoolError::BadEncoding("the body ends inside a zstd frame".into()),
            ),
            failure => failure,
        }
    }
}

/// When to tell the client how far the body has come: at most every
/// [`PROGRESS_INTERVAL`], and only if it moved.
pub(super) struct Told {
    wanted: bool,
    at: Instant,
    received: u64,
}

impl Told {
    pub(super) fn new(wanted: bool, offset: u64) -> Told {
        Told {
            wanted,
            at: Instant::now(),
            received: offset,
        }
    }

    /// The figure to send now, if one is due.
    pub(super) fn due(&mut self, received: u64) -> Option<u64> {
        if !self.wanted || received == self.received || self.at.elapsed() < PROGRESS_INTERVAL {
            return None;
        }
        self.at = Instant::now();
        self.received = received;
        Some(received)
    }
}

/// Decompresses one received piece of a body into the upload.
async fn inflate_into(
    decoder: &mut Decompressor,
    compressed: &[u8],
    upload: &mut Upload,
) -> Result<(), SpoolError> {
    decoder.feed(compressed);
    loop {
        match decoder.next_piece() {
            Ok(Some(piece)) => upload.write(piece).await?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(SpoolError::BadEncoding(e.to_string())),
        }
    }
}
