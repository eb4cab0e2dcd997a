//! Compression of file bodies on the wire: zstd, negotiated per `send`
//! (see `docs/protocol.md`). The size and SHA-256 in a `send` are always
//! those of the uncompressed file, so the agent verifies what it stores,
//! whatever crossed the network.
//!
//! The workstation compresses (level `LEVEL`); the Pi only decompresses,
//! which costs about the same at any level. Both ends use a window of
//! 2^`WINDOW_LOG` bytes, and the agent refuses frames that ask for more,
//! so one upload never costs the Pi more than about a megabyte of decoder
//! memory, whatever a client sends. Output is produced in pieces of at most
//! [`PIECE_LEN`], so a small frame that expands hugely (a "zip bomb") is
//! written piece by piece and stopped by the declared size.

use std::io;

use zstd::stream::raw::{CParameter, DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

/// zstd level used by the workstation: about 4 to 6 times smaller G-code at
/// hundreds of MB/s on one core of a workstation.
pub(crate) const LEVEL: i32 = 3;
/// Largest window (log2 bytes) either end uses: 1 MiB.
pub(crate) const WINDOW_LOG: u32 = 20;
/// Largest piece of decompressed output handed on at once.
pub const PIECE_LEN: usize = 256 * 1024;

/// Streaming compressor for one body.
pub struct Compressor(Encoder<'static>);

impl Compressor {
    /// A compressor at `LEVEL` with a `WINDOW_LOG` window.
    pub fn new() -> io::Result<Compressor> {
        Compressor::with_window(WINDOW_LOG)
    }

    fn with_window(window_log: u32) -> io::Result<Compressor> {
        let mut encoder = Encoder::new(LEVEL)?;
        encoder.set_parameter(CParameter::WindowLog(window_log))?;
        encoder.set_parameter(CParameter::ChecksumFlag(false))?;
        Ok(Compressor(encoder))
    }

    /// Compresses `input`, appending what is ready to `out`.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut input = InBuffer::around(input);
        while input.pos() < input.src.len() {
            out.reserve(PIECE_LEN);
            let mut output = OutBuffer::around_pos(out, out.len());
            self.0.run(&mut input, &mut output)?;
        }
        Ok(())
    }

    /// Ends the frame, appending the rest to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            out.reserve(PIECE_LEN);
            let mut output = OutBuffer::around_pos(out, out.len());
            if self.0.finish(&mut output, true)? == 0 {
                return Ok(());
            }
        }
    }
}

/// Streaming decompressor for one body: [`feed`](Self::feed) it what
/// arrives, then take [`next_piece`](Self::next_piece) until it says `None`.
pub struct Decompressor {
    decoder: Decoder<'static>,
    input: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    frame_done: bool,
}

impl Decompressor {
    /// A decompressor that refuses windows over `WINDOW_LOG`.
    pub fn new() -> io::Result<Decompressor> {
        let mut decoder = Decoder::new()?;
        decoder.set_parameter(DParameter::WindowLogMax(WINDOW_LOG))?;
        Ok(Decompressor {
            decoder,
            input: Vec::new(),
            pos: 0,
            out: vec![0; PIECE_LEN],
            frame_done: false,
        })
    }

    /// Adds compressed input.
    pub fn feed(&mut self, data: &[u8]) {
        self.input.drain(..self.pos);
        self.pos = 0;
        self.input.extend_from_slice(data);
    }

    /// The next piece of output, or `None` when everything fed so far is
    /// decompressed. Malformed data is an `InvalidData` error.
    pub fn next_piece(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let mut input = InBuffer::around(&self.input[self.pos..]);
            let mut output = OutBuffer::around(&mut self.out[..]);
            let hint = self
                .decoder
                .run(&mut input, &mut output)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let (read, written) = (input.pos(), output.pos());
            self.pos += read;
            if read > 0 || written > 0 {
                // With nothing to do, zstd hints at the next frame's header.
                self.frame_done = hint == 0;
            }
            if written > 0 {
                return Ok(Some(&self.out[..written]));
            }
            if self.pos >= self.input.len() || read == 0 {
                return Ok(None);
            }
        }
    }

    /// Whether the input ended exactly at the end of a complete frame.
    pub fn is_complete(&self) -> bool {
        self.frame_done && self.pos >= self.input.len()
    }
}

/// Files smaller than this go as they are under `--compress auto`: zstd
/// could save less than a KiB, a millisecond even over a slow link.
pub(crate) const MIN_COMPRESS_LEN: u64 = 1024;

/// Bytes at the start of a file that [`looks_like_text`] is given (git's
/// choice for the same question).
pub(crate) const SNIFF_LEN: usize = 8000;

/// Whether the start of a file looks like text, by git's rule: no NUL byte.
/// Random or compressed data of [`SNIFF_LEN`] bytes lacks one with odds of
/// about e^-31; G-code, thumbnails included (base64), never has one.
pub(crate) fn looks_like_text(head: &[u8]) -> bool {
    !head.contains(&0)
}

/// What `--compress auto` decides for a file of this name and size that
/// starts with `head` (its first [`SNIFF_LEN`] bytes, or all of a shorter
/// one): compressed if it is text, of [`MIN_COMPRESS_LEN`] or more, and not
/// of a format that is compressed already.
pub(crate) fn auto_compresses(name: &str, size: u64, head: &[u8]) -> bool {
    size >= MIN_COMPRESS_LEN && worth_compressing(name) && looks_like_text(head)
}

/// Whether a file with this name is worth compressing: print files are
/// text, except formats that are compressed already.
pub(crate) fn worth_compressing(name: &str) -> bool {
    const COMPRESSED: &[&str] = &[
        "bgcode", "gz", "tgz", "zip", "3mf", "zst", "xz", "bz2", "7z", "br", "lz4", "png", "jpg",
        "jpeg", "webp",
    ];
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    !ext.is_some_and(|e| COMPRESSED.contains(&e.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decompress_all(compressed: &[u8], feed_by: usize) -> (Vec<u8>, bool) {
        let mut d = Decompressor::new().unwrap();
        let mut out = Vec::new();
        for part in compressed.chunks(feed_by) {
            d.feed(part);
            while let Some(piece) = d.next_piece().unwrap() {
                assert!(piece.len() <= PIECE_LEN);
                out.extend_from_slice(piece);
            }
        }
        (out, d.is_complete())
    }

    #[test]
    fn round_trips_real_gcode_in_any_pieces() {
        let gcode = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/cube-20mm.gcode"
        ))
        .unwrap();
        let mut c = Compressor::new().unwrap();
        let mut wire = Vec::new();
        for part in gcode.chunks(100_000) {
            c.compress(part, &mut wire).unwrap();
        }
        c.finish(&mut wire).unwrap();
        assert!(
            wire.len() * 3 < gcode.len(),
            "ratio {}",
            gcode.len() as f64 / wire.len() as f64
        );
        for feed_by in [7, 4096, 1 << 20] {
            let (out, complete) = decompress_all(&wire, feed_by);
            assert!(
                out == gcode && complete,
                "feeding {feed_by} bytes at a time: complete {complete}"
            );
        }
        // Cut short: not complete.
        let (_, complete) = decompress_all(&wire[..wire.len() - 10], 4096);
        assert!(!complete);
    }

    #[test]
    fn garbage_and_oversized_windows_are_refused() {
        let mut d = Decompressor::new().unwrap();
        d.feed(b"this is not zstd at all");
        assert_eq!(
            d.next_piece().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A frame that needs a 16 MiB window.
        let mut big = Compressor::with_window(24).unwrap();
        let mut wire = Vec::new();
        big.compress(&vec![b'x'; 1 << 16], &mut wire).unwrap();
        big.finish(&mut wire).unwrap();
        let mut d = Decompressor::new().unwrap();
        d.feed(&wire);
        let result = (|| {
            while d.next_piece()?.is_some() {}
            Ok::<_, io::Error>(())
        })();
        assert!(result.is_err(), "a 16 MiB window was accepted");
    }

    #[test]
    fn a_bomb_comes_out_in_bounded_pieces() {
        let zeros = vec![0u8; 64 << 20];
        let mut c = Compressor::new().unwrap();
        let mut wire = Vec::new();
        c.compress(&zeros, &mut wire).unwrap();
        c.finish(&mut wire).unwrap();
        assert!(wire.len() < 64 << 10, "{}", wire.len());
        let mut d = Decompressor::new().unwrap();
        d.feed(&wire);
        let first = d.next_piece().unwrap().unwrap().len();
        assert!(first <= PIECE_LEN);
    }

    #[test]
    fn compressed_formats_are_sent_as_they_are() {
        assert!(worth_compressing("part.gcode"));
        assert!(worth_compressing("PART.GCO"));
        assert!(worth_compressing("noext"));
        assert!(!worth_compressing("part.bgcode"));
        assert!(!worth_compressing("plate.3MF"));
        assert!(!worth_compressing("a.gcode.gz"));
    }

    #[test]
    fn gcode_looks_like_text_and_compressed_data_does_not() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        for file in ["cube-20mm.gcode", "tiny.gcode"] {
            let gcode = std::fs::read(format!("{data}{file}")).unwrap();
            let head = &gcode[..SNIFF_LEN.min(gcode.len())];
            assert!(looks_like_text(head), "{file}");
            let mut c = Compressor::new().unwrap();
            let mut wire = Vec::new();
            c.compress(&gcode, &mut wire).unwrap();
            c.finish(&mut wire).unwrap();
            assert!(
                !looks_like_text(&wire[..SNIFF_LEN.min(wire.len())]),
                "{file}"
            );
        }
        // A binary G-code header (libbgcode: "GCDE", version 1, CRC32).
        assert!(!looks_like_text(b"GCDE\x01\x00\x00\x00\x01\x00"));
        assert!(looks_like_text(b""));
    }

    #[test]
    fn auto_compresses_text_print_files_from_a_kib() {
        let text = b"G28\nG1 X10 Y10\n";
        assert!(auto_compresses("cube.gcode", MIN_COMPRESS_LEN, text));
        assert!(!auto_compresses("cube.gcode", MIN_COMPRESS_LEN - 1, text));
        assert!(!auto_compresses("cube.bgcode", 1 << 20, text));
        assert!(!auto_compresses(
            "firmware.gcode",
            1 << 20,
            b"\x7fELF\x02\x01\x00"
        ));
    }
}
