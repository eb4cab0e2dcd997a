//! The HTTP/1.1 client the forwarder talks to its print server with: one
//! connection per request over hyper's connection API, a bounded connect
//! time, a bounded silence (a server that stops reading or answering fails
//! the request; a big upload that keeps moving does not), an optional
//! deadline for the whole exchange, and bodies that are empty, JSON, or a
//! multipart form streamed from disk with its length declared.
//!
//! Not reqwest: the agent makes a few plain-HTTP calls to a server on this
//! machine, and reqwest's stack (URL parsing with IDNA tables, a pool, a
//! tower service) cost about 0.4 MiB of the 5 MiB the Pi's binary may
//! weigh (docs/performance.md, "Size").

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
pub(super) use hyper::{Method, StatusCode};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::agent::config::BaseUrl;

mod form;
mod watched;

pub(super) use form::Form;
use watched::Watched;

/// What the agent calls itself.
const AGENT: &str = concat!("fileagent/", env!("CARGO_PKG_VERSION"));
/// Largest answer read whole (a state or a file's description; a print
/// server's answers are a few KiB).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// The limits of every exchange.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Time to connect.
    pub connect: Duration,
    /// Time the connection may make no progress either way.
    pub silence: Duration,
}

/// A request on its way out.
pub(super) struct Request {
    method: Method,
    /// Path and query, encoded.
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Body,
    /// The whole exchange, answer included, ends by then.
    timeout: Option<Duration>,
}

/// A request's body.
enum Body {
    Empty,
    Json(Vec<u8>),
    Form(Form),
}

impl Request {
    /// `method` on `target` (path and query, already encoded).
    pub fn new(method: Method, target: String) -> Request {
        Request {
            method,
            target,
            headers: Vec::new(),
            body: Body::Empty,
            timeout: None,
        }
    }

    /// Path and query.
    #[cfg(test)]
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Adds a header (`name` in lower case).
    pub fn header(mut self, name: &'static str, value: &str) -> Request {
        self.headers.push((name, value.to_string()));
        self
    }

    /// The whole exchange must end within `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// `value` as a JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Request {
        self.body = Body::Json(value.to_string().into_bytes());
        self
    }

    /// `form` as a `multipart/form-data` body.
    pub fn multipart(mut self, form: Form) -> Request {
        self.body = Body::Form(form);
        self
    }
}

/// An answer: its status, then its body as it comes.
pub(super) struct Response {
    status: StatusCode,
    body: Incoming,
    /// When the exchange must have ended, and the timeout that set it.
    deadline: Option<(Instant, Duration)>,
}

/// Why an exchange failed: the connection, or the deadline.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("no complete answer within {0:?}")]
    Deadline(Duration),
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body's next piece, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let frame = match self.deadline {
                Some((deadline, timeout)) => tokio::time::timeout_at(deadline, self.body.frame())
                    .await
                    .map_err(|_| HttpError::Deadline(timeout))?,
                None => self.body.frame().await,
            };
            match frame {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The whole body (at most [`MAX_ANSWER`] bytes).
    pub async fn bytes(mut self) -> Result<Vec<u8>, HttpError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            if all.len() + chunk.len() > MAX_ANSWER {
                return Err(HttpError::TooLarge);
            }
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    /// The whole body as text (invalid UTF-8 replaced).
    pub async fn text(self) -> Result<String, HttpError> {
        Ok(String::from_utf8_lossy(&self.bytes().await?).into_owned())
    }

    /// The whole body as JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        let bytes = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// Sends `request` to the server at `base` and waits for the answer's head.
pub(super) async fn send(
    base: &BaseUrl,
    limits: Limits,
    request: Request,
) -> Result<Response, HttpError> {
    let deadline = request.timeout.map(|t| (Instant::now() + t, t));
    let exchange = async {
        let stream = connect(base, limits.connect).await?;
        let io = hyper_util::rt::TokioIo::new(Watched::new(stream, limits.silence));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        // Ends when the answer's body has been read or dropped.
        tokio::spawn(connection);
        let head = sender.send_request(build(base, request)).await?;
        Ok::<_, HttpError>(head)
    };
    let head = match deadline {
        Some((deadline, timeout)) => tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| HttpError::Deadline(timeout))??,
        None => exchange.await?,
    };
    let (parts, body) = head.into_parts();
    Ok(Response {
        status: parts.status,
        body,
        deadline,
    })
}

/// The hyper request for `request`, with its host, agent and length.
fn build(base: &BaseUrl, request: Request) -> hyper::Request<UnsyncBoxBody<Bytes, io::Error>> {
    let (body, length, content_type) = match request.body {
        Body::Empty => (
            Empty::new().map_err(|never| match never {}).boxed_unsync(),
            None,
            None,
        ),
        Body::Json(json) => {
            let length = json.len() as u64;
            let body = Full::new(Bytes::from(json)).map_err(|never| match never {});
            (
                body.boxed_unsync(),
                Some(length),
                Some("application/json".to_string()),
            )
        }
        Body::Form(form) => {
            let content_type = form.content_type();
            let (body, length) = form.into_body();
            (body, Some(length), Some(content_type))
        }
    };
    let mut builder = hyper::Request::builder()
        .method(request.method)
        .uri(request.target)
        .header(HOST, base.authority())
        .header(USER_AGENT, AGENT);
    if let Some(length) = length {
        builder = builder.header(CONTENT_LENGTH, length);
    }
    if let Some(content_type) = content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    builder.body(body).expect("a request made of checked parts")
}

/// A TCP connection to the first of `base`'s addresses that answers.
async fn connect(base: &BaseUrl, limit: Duration) -> io::Result<TcpStream> {
    let connecting = async {
        let mut last = None;
        for addr in tokio::net::lookup_host((base.host(), base.port())).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the host name has no address")
        }))
    };
    tokio::time::timeout(limit, connecting).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "no connection within the connect time",
        )
    })?
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A one-shot server on loopback: reads one request whole (head and
    /// declared body), answers `answer`, and hands back what it read.
    /// The connection stays open as long as the task's handle is kept.
    async fn serve_once(
        answer: &'static str,
    ) -> (
        BaseUrl,
        tokio::task::JoinHandle<(Vec<u8>, tokio::net::TcpStream)>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = BaseUrl::parse(&format!("http://{}/prefix", listener.local_addr().unwrap()));
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |l| l.parse::<usize>().unwrap());
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(answer.as_bytes()).await.unwrap();
            (seen, socket)
        });
        (base.unwrap(), task)
    }

    const LIMITS: Limits = Limits {
        connect: Duration::from_secs(5),
        silence: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn a_form_streams_its_parts_in_order_with_its_length_declared() {
        let (base, server) =
            serve_once("HTTP/1.1 201 Created\r\ncontent-length: 11\r\n\r\n{\"ok\":true}").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gcode");
        std::fs::write(&path, b"G28\nG1 X10\n").unwrap();
        let handle = tokio::fs::File::open(&path).await.unwrap();
        let form = Form::new()
            .text("root", "gcodes")
            .file("file", "Benchy \"v2\".gcode", handle, 11, 4)
            .text("print", "true");
        let request = Request::new(Method::POST, "/prefix/server/files/upload".into())
            .header("x-api-key", "k")
            .multipart(form);
        let response = send(&base, LIMITS, request).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["ok"], true);
        let seen = String::from_utf8(server.await.unwrap().0).unwrap();
        let (head, body) = seen.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /prefix/server/files/upload HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("host: {}", base.authority())),
            "{head}"
        );
        assert!(head.contains("x-api-key: k"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let boundary = head
            .split("boundary=")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap();
        let expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"root\"\r\n\r\ngcodes\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"Benchy %22v2%22.gcode\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nG28\nG1 X10\n\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"print\"\r\n\r\ntrue\r\n\
             --{boundary}--\r\n"
        );
        assert_eq!(body, expected);
    }

    #[tokio::test]
    async fn a_silent_server_fails_the_request_after_the_silence_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = BaseUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        // Accepts and never answers.
        let _server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(socket);
        });
        let limits = Limits {
            connect: Duration::from_secs(5),
            silence: Duration::from_millis(200),
        };
        let request = Request::new(Method::GET, "/api/job".into());
        let e = send(&base, limits, request).await.err().unwrap();
        let mut cause: &dyn std::error::Error = &e;
        while let Some(source) = cause.source() {
            cause = source;
        }
        assert!(cause.to_string().contains("no progress"), "{e}: {cause}");
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_whole_exchange() {
        // Answers the head at once and never ends the body.
        let (base, _server) =
            serve_once("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\":").await;
        let request =
            Request::new(Method::GET, "/api/job".into()).timeout(Duration::from_millis(300));
        let response = send(&base, LIMITS, request).await.unwrap();
        let e = response.text().await.unwrap_err();
        assert!(matches!(e, HttpError::Deadline(_)), "{e}");
    }
}
