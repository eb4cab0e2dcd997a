//! What both print servers' clients share: requests with bounded
//! connect and read times (a server that hangs must not hang forwarding),
//! the base URL and API paths built from percent-encoded segments (a file
//! name may hold spaces, `#`, `?` or `%`), the API key in `X-Api-Key`
//! (never logged: [`ApiKey`]'s `Debug` hides it), a connection failure
//! mapped to [`PrinterError::Unreachable`], and a file streamed from disk
//! as a multipart part. The HTTP exchange itself is [`super::http`]'s.

use std::path::Path;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use super::http::{self, Form, Limits, Method, Request, Response};
use super::printer::{
    CONNECT_TIMEOUT, MAX_ERROR_TEXT, PrinterError, READ_TIMEOUT, Server, UPLOAD_CHUNK,
};
use crate::agent::config::{ApiKey, BaseUrl};

/// What a path segment percent-encodes (as URLs' path-segment set does):
/// a file name may hold spaces, `#`, `?`, `%` or `/`-free anything.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');
/// What a query value percent-encodes: all but letters, digits and `-._~`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One print server's HTTP API.
#[derive(Debug, Clone)]
pub(super) struct Api {
    server: Server,
    base: BaseUrl,
    key: Option<ApiKey>,
}

impl Api {
    /// The API of `server` at `base` (a proxy's path is kept).
    pub(super) fn new(server: Server, base: &str, key: Option<ApiKey>) -> anyhow::Result<Api> {
        let base = BaseUrl::parse(base)
            .map_err(|why| anyhow::anyhow!("invalid {server} URL {base:?}: {why}"))?;
        Ok(Api { server, base, key })
    }

    /// Base URL, without a trailing `/`.
    pub(super) fn url(&self) -> &str {
        self.base.as_str()
    }

    /// `host[:port]`, as the `Host` header says it.
    #[cfg(test)]
    pub(super) fn authority(&self) -> String {
        self.base.authority()
    }

    /// The path of an API endpoint given as its segments, each
    /// percent-encoded, after the base's own path.
    pub(super) fn endpoint<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> String {
        let mut path = self.base.path().to_string();
        for segment in segments {
            path.push('/');
            path.extend(utf8_percent_encode(segment, SEGMENT));
        }
        path
    }

    /// A request to an API path given as its segments, with the key.
    pub(super) fn request<'a>(
        &self,
        method: Method,
        segments: impl IntoIterator<Item = &'a str>,
    ) -> Request {
        self.request_to(method, self.endpoint(segments))
    }

    /// A request to `target` (an [`endpoint`](Api::endpoint), maybe with
    /// a query), with the key.
    pub(super) fn request_to(&self, method: Method, target: String) -> Request {
        let request = Request::new(method, target);
        match &self.key {
            Some(key) => request.header("x-api-key", key.secret()),
            None => request,
        }
    }

    /// Sends `request`; no answer at all is [`PrinterError::Unreachable`].
    pub(super) async fn send(&self, request: Request) -> Result<Response, PrinterError> {
        let limits = Limits {
            connect: CONNECT_TIMEOUT,
            silence: READ_TIMEOUT,
        };
        http::send(&self.base, limits, request)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    /// The server cannot be reached (or stopped answering), because of
    /// `e`: said by its root cause ("Connection refused (os error 111)",
    /// "operation timed out"); the request's URL and the HTTP client's
    /// layers in between say nothing a person can act on.
    pub(super) fn unreachable(&self, e: &http::HttpError) -> PrinterError {
        PrinterError::Unreachable {
            server: self.server,
            url: self.url().to_string(),
            reason: root_cause(e),
        }
    }
}

/// `name=value` with `value` percent-encoded, for a query string.
pub(super) fn query_pair(name: &str, value: &str) -> String {
    format!("{name}={}", utf8_percent_encode(value, QUERY_VALUE))
}

/// `form` with the opened `handle` (the file at `file`) added as the part
/// `field` named `name`, streamed from disk in [`UPLOAD_CHUNK`] reads
/// with its length declared.
pub(super) async fn with_file(
    form: Form,
    field: &'static str,
    handle: tokio::fs::File,
    file: &Path,
    name: &str,
) -> Result<Form, PrinterError> {
    let size = handle
        .metadata()
        .await
        .map_err(|error| PrinterError::Local {
            path: file.display().to_string(),
            error,
        })?
        .len();
    Ok(form.file(field, name, handle, size, UPLOAD_CHUNK))
}

/// A failed answer's status and what went wrong, in the server's words:
/// the message its JSON carries (OctoPrint's `error`, Moonraker's
/// `error.message`), else the start of the body.
pub(super) async fn failure(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let json = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
    let error = &json["error"];
    let message = (error.as_str().or_else(|| error["message"].as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| text.chars().take(MAX_ERROR_TEXT).collect());
    (status, message)
}

/// The innermost cause of an error.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment_and_the_key_never_shows() {
        let key = Some(ApiKey::new(" secret-key\n"));
        for base in ["http://pi/octoprint", "http://pi/octoprint/"] {
            let api = Api::new(Server::OctoPrint, base, key.clone()).unwrap();
            let path = api.endpoint(["api", "files", "local", "Benchy v2 (0.2mm)#1?%.gcode"]);
            assert_eq!(
                path,
                "/octoprint/api/files/local/Benchy%20v2%20(0.2mm)%231%3F%25.gcode"
            );
            assert_eq!(api.url(), "http://pi/octoprint");
            assert!(!format!("{api:?}").contains("secret"));
        }
        let e = Api::new(Server::Moonraker, "mailto:x@y", None).unwrap_err();
        assert!(e.to_string().contains("invalid Moonraker URL"), "{e}");
        assert!(Api::new(Server::OctoPrint, "not a url", None).is_err());
        assert_eq!(
            query_pair("filename", "queue/Benchy v2 (0.2mm)#1?&=%.gcode"),
            "filename=queue%2FBenchy%20v2%20%280.2mm%29%231%3F%26%3D%25.gcode"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_said_by_its_root_cause_and_what_to_check() {
        // A loopback port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let api = Api::new(Server::Moonraker, &base, None).unwrap();
        let e = api
            .send(api.request(Method::GET, ["server", "info"]))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with(&format!("Moonraker at {base} is unreachable (")),
            "{e}"
        );
        assert!(e.contains("refused"), "{e}");
        assert!(!e.contains("/server/info"), "{e}");
        assert!(
            e.ends_with("check that it runs and that [moonraker] url points at it"),
            "{e}"
        );
    }
}
