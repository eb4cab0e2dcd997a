//! What both print servers' clients share: the HTTP client with bounded
//! connect and read times (a server that hangs must not hang forwarding),
//! the base URL and API paths built from percent-encoded segments (a file
//! name may hold spaces, `#`, `?` or `%`), the API key in `X-Api-Key`
//! (never logged: [`ApiKey`]'s `Debug` hides it), a connection failure
//! mapped to [`PrinterError::Unreachable`], and a file streamed from disk
//! as a multipart part.

use std::path::Path;

use anyhow::Context;
use reqwest::{Response, Url};
use tokio_util::io::ReaderStream;

use super::printer::{
    CONNECT_TIMEOUT, MAX_ERROR_TEXT, PrinterError, READ_TIMEOUT, Server, UPLOAD_CHUNK,
};
use crate::agent::config::ApiKey;

/// One print server's HTTP API.
#[derive(Debug, Clone)]
pub(super) struct Api {
    server: Server,
    http: reqwest::Client,
    base: Url,
    key: Option<ApiKey>,
}

impl Api {
    /// The API of `server` at `base` (a proxy's path is kept); `example`
    /// is a path of its API, for the message when `base` cannot take one.
    pub(super) fn new(
        server: Server,
        base: &str,
        key: Option<ApiKey>,
        example: &str,
    ) -> anyhow::Result<Api> {
        let base = Url::parse(base).with_context(|| format!("invalid {server} URL {base:?}"))?;
        if base.cannot_be_a_base() {
            anyhow::bail!("invalid {server} URL {base}: it cannot take a path such as {example}");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("fileagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .with_context(|| format!("cannot set up the HTTP client for {server}"))?;
        Ok(Api {
            server,
            http,
            base,
            key,
        })
    }

    /// Base URL, without a trailing `/`.
    pub(super) fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of an API path given as its segments, each percent-encoded.
    pub(super) fn endpoint<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("a base URL, checked in Api::new")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// A request to an API path given as its segments, with the key.
    pub(super) fn request<'a>(
        &self,
        method: reqwest::Method,
        segments: impl IntoIterator<Item = &'a str>,
    ) -> reqwest::RequestBuilder {
        self.request_url(method, self.endpoint(segments))
    }

    /// A request to `url` (an [`endpoint`](Api::endpoint) with a query), with the key.
    pub(super) fn request_url(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.key {
            Some(key) => request.header("X-Api-Key", key.secret()),
            None => request,
        }
    }

    /// Sends `request`; no answer at all is [`PrinterError::Unreachable`].
    pub(super) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, PrinterError> {
        request.send().await.map_err(|e| self.unreachable(&e))
    }

    /// The server cannot be reached (or stopped answering), because of
    /// `e`: said by its root cause ("Connection refused (os error 111)",
    /// "operation timed out"); the request's URL and the HTTP client's
    /// layers in between say nothing a person can act on.
    pub(super) fn unreachable(&self, e: &reqwest::Error) -> PrinterError {
        PrinterError::Unreachable {
            server: self.server,
            url: self.url().to_string(),
            reason: root_cause(e),
        }
    }
}

/// The opened `handle` (the file at `file`) as the multipart part `name`,
/// streamed from disk in [`UPLOAD_CHUNK`] reads with its length declared.
pub(super) async fn file_part(
    handle: tokio::fs::File,
    file: &Path,
    name: &str,
) -> Result<reqwest::multipart::Part, PrinterError> {
    let size = handle
        .metadata()
        .await
        .map_err(|error| PrinterError::Local {
            path: file.display().to_string(),
            error,
        })?;
    let stream = ReaderStream::with_capacity(handle, UPLOAD_CHUNK);
    let body = reqwest::Body::wrap_stream(stream);
    let part = reqwest::multipart::Part::stream_with_length(body, size.len());
    let part = part.file_name(name.to_string());
    Ok(part
        .mime_str("application/octet-stream")
        .expect("a valid MIME type"))
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
            let api = Api::new(Server::OctoPrint, base, key.clone(), "/api/job").unwrap();
            let url = api.endpoint(["api", "files", "local", "Benchy v2 (0.2mm)#1?%.gcode"]);
            assert_eq!(
                url.as_str(),
                "http://pi/octoprint/api/files/local/Benchy%20v2%20(0.2mm)%231%3F%25.gcode"
            );
            assert_eq!(api.url(), "http://pi/octoprint");
            assert!(!format!("{api:?}").contains("secret"));
        }
        let e = Api::new(Server::Moonraker, "mailto:x@y", None, "/server/info").unwrap_err();
        assert!(e.to_string().contains("invalid Moonraker URL"), "{e}");
        assert!(Api::new(Server::OctoPrint, "not a url", None, "/api/job").is_err());
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
        let api = Api::new(Server::Moonraker, &base, None, "/server/info").unwrap();
        let e = api
            .send(api.request(reqwest::Method::GET, ["server", "info"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("Moonraker at {base} is unreachable (")),
            "{e}"
        );
        assert!(e.contains("refused"), "{e}");
        assert!(
            !e.contains("/server/info") && !e.contains("error sending request"),
            "{e}"
        );
        assert!(
            e.ends_with("check that it runs and that [moonraker] url points at it"),
            "{e}"
        );
    }
}
