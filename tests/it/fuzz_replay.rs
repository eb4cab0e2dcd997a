//! Replays the fuzz seeds and every kept crash (`fuzz/seeds/`,
//! `fuzz/regressions/`) through what the fuzz targets exercise: the frame
//! decoder with both header limits, request and reply decoding, the config
//! parser and the zstd body decoder. None may panic.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use fileagent::wire::codec::{Decompressor, PIECE_LEN};
use fileagent::wire::protocol::{
    Connection, MAX_REPLY_HEADER_LEN, MAX_REQUEST_HEADER_LEN, drain_for_fuzzing,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    files
}

struct Input<'a>(&'a [u8]);

impl AsyncRead for Input<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.0.len().min(buf.remaining()).min(7);
        buf.put_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Input<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn frames_seeds_and_regressions_decode_without_panicking() {
    let files = inputs("frames");
    assert!(files.len() >= 4, "{files:?}");
    let mut headers = 0;
    for file in files {
        let data = std::fs::read(&file).unwrap();
        for limit in [MAX_REQUEST_HEADER_LEN, MAX_REPLY_HEADER_LEN] {
            let mut conn = Connection::new(Input(&data), limit);
            headers += drain_for_fuzzing(&mut conn).await;
        }
    }
    assert!(headers > 0);
}

#[test]
fn config_seeds_and_regressions_parse_or_fail_cleanly() {
    let files = inputs("config");
    assert!(files.len() >= 3, "{files:?}");
    let mut valid = 0;
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Ok(config) = fileagent::agent::config::Config::parse(&text, &file) {
            assert!(config.validate().is_ok(), "{}", file.display());
            valid += 1;
        }
    }
    assert!(valid >= 1, "the packaged config must parse");
}

#[test]
fn zstd_seeds_and_regressions_decode_without_panicking() {
    let files = inputs("zstd_body");
    assert!(!files.is_empty());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let Some((&step, rest)) = data.split_first() else {
            continue;
        };
        let mut d = Decompressor::new().unwrap();
        'feed: for piece in rest.chunks(1 + step as usize * 17) {
            d.feed(piece);
            loop {
                match d.next_piece() {
                    Ok(Some(out)) => assert!(out.len() <= PIECE_LEN),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}
