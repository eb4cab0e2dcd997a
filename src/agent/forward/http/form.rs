//! A `multipart/form-data` body as both print servers take uploads:
//! text fields and one file, in the order given, streamed from disk with
//! the body's length known before the first byte goes out.

use std::fmt::Write as _;
use std::io;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt as _, TryStreamExt as _};
use http_body_util::{BodyExt as _, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;

/// A `multipart/form-data` body: text fields and at most one file,
/// in the order given, streamed.
pub(in crate::agent::forward) struct Form {
    boundary: String,
    parts: Vec<Part>,
}

enum Part {
    Text(&'static str, String),
    File {
        field: &'static str,
        file_name: String,
        handle: tokio::fs::File,
        size: u64,
        chunk: usize,
    },
}

impl Form {
    /// An empty form with a boundary of its own.
    pub fn new() -> Form {
        let mut random = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .expect("the system's random source");
        Form {
            boundary: format!("fileagent-{}", hex::encode(random)),
            parts: Vec::new(),
        }
    }

    /// A text field.
    pub fn text(mut self, name: &'static str, value: impl Into<String>) -> Form {
        self.parts.push(Part::Text(name, value.into()));
        self
    }

    /// The file behind `handle` (`size` bytes, read `chunk` bytes at a
    /// time) as the field `field`, named `file_name`.
    pub fn file(
        mut self,
        field: &'static str,
        file_name: &str,
        handle: tokio::fs::File,
        size: u64,
        chunk: usize,
    ) -> Form {
        self.parts.push(Part::File {
            field,
            file_name: file_name.to_string(),
            handle,
            size,
            chunk,
        });
        self
    }

    pub(super) fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body as a stream of pieces, and its length: the text between
    /// files (boundaries, part heads, fields) goes out in one piece each.
    pub(super) fn into_body(self) -> (UnsyncBoxBody<Bytes, io::Error>, u64) {
        let boundary = self.boundary;
        let mut pieces: Vec<BoxStream<'static, io::Result<Bytes>>> = Vec::new();
        let mut length = 0u64;
        // What goes out before the next file, or the end.
        let mut text = String::new();
        for part in self.parts {
            let _ = write!(text, "--{boundary}\r\nContent-Disposition: form-data; ");
            match part {
                Part::Text(name, value) => {
                    let _ = write!(text, "name=\"{name}\"\r\n\r\n{value}\r\n");
                }
                Part::File {
                    field,
                    file_name,
                    handle,
                    size,
                    chunk,
                } => {
                    let _ = write!(
                        text,
                        "name=\"{field}\"; filename=\"{}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n",
                        quoted(&file_name)
                    );
                    length += text.len() as u64 + size;
                    pieces.push(piece(std::mem::take(&mut text)));
                    pieces.push(tokio_util::io::ReaderStream::with_capacity(handle, chunk).boxed());
                    text.push_str("\r\n");
                }
            }
        }
        let _ = write!(text, "--{boundary}--\r\n");
        length += text.len() as u64;
        pieces.push(piece(text));
        let body = stream::iter(pieces).flatten().map_ok(Frame::data);
        (StreamBody::new(body).boxed_unsync(), length)
    }
}

/// `text` as a stream of one piece.
fn piece(text: String) -> BoxStream<'static, io::Result<Bytes>> {
    stream::once(async move { Ok(Bytes::from(text)) }).boxed()
}

/// A file name inside a quoted header parameter, as browsers write it:
/// `"`, CR and LF percent-encoded.
fn quoted(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}
