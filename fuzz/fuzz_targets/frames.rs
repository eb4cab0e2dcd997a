//! The wire decoder as the agent and the workstation run it: any bytes
//! after the TLS handshake are read as frames (with both ends' header
//! limits), every header is decoded as a request and as a reply, and the
//! body after a `send` is streamed as the agent reads it. It must
//! never panic, hang or allocate beyond the frame limits.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use fileagent::wire::protocol::{Connection, MAX_REPLY_HEADER_LEN, MAX_REQUEST_HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads from the input in small pieces; writes go nowhere.
struct Input<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Input<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.data.len().min(buf.remaining()).min(self.step);
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
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

fn decode(data: &[u8], max_header: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let step = 1 + data.first().copied().unwrap_or(0) as usize % 97;
    runtime.block_on(async {
        let mut conn = Connection::new(Input { data, step }, max_header);
        fileagent::wire::protocol::drain_for_fuzzing(&mut conn).await;
    });
}

fuzz_target!(|data: &[u8]| {
    decode(data, MAX_REQUEST_HEADER_LEN);
    decode(data, MAX_REPLY_HEADER_LEN);
});
