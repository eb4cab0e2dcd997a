//! The OctoPrint REST API as fileagent uses it: printer and job state,
//! file lookup, streamed uploads and starting a print.
//!
//! Every non-success answer is mapped to a [`PrinterError`] variant the
//! forwarder branches on: retry later (unreachable, 5xx, 409, bad API key)
//! or give the file up (400, 415). The API key is sent as `X-Api-Key` and is
//! never logged or shown in errors.

use serde::Deserialize;
use serde_json::Value;

use super::api::Api;
use super::http::{Form, Method, Request, Response, StatusCode};
use super::printer::{Outgoing, PrinterError, PrinterState, REQUEST_TIMEOUT, Server, Uploaded};
use crate::agent::config::ApiKey;

/// Which server this module speaks to, for errors.
const SERVER: Server = Server::OctoPrint;

/// An OctoPrint API client.
#[derive(Debug, Clone)]
pub struct OctoPrint {
    api: Api,
}

#[derive(Deserialize)]
struct JobAnswer {
    state: String,
    job: Option<JobInfo>,
    progress: Option<Progress>,
}

#[derive(Deserialize)]
struct JobInfo {
    file: Option<JobFile>,
}

#[derive(Deserialize)]
struct JobFile {
    path: Option<String>,
    origin: Option<String>,
}

#[derive(Deserialize)]
struct Progress {
    completion: Option<f64>,
    #[serde(rename = "printTime")]
    print_time: Option<f64>,
    #[serde(rename = "printTimeLeft")]
    print_time_left: Option<f64>,
}

impl OctoPrint {
    /// A client for the OctoPrint at `base` (e.g. `http://127.0.0.1:5000`,
    /// or with a path where a proxy serves it). Fails on a URL that cannot
    /// take a path, or when the HTTP client cannot be set up.
    pub fn new(base: &str, key: ApiKey) -> anyhow::Result<OctoPrint> {
        let api = Api::new(SERVER, base, Some(key))?;
        Ok(OctoPrint { api })
    }

    /// Base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        self.api.url()
    }

    fn request<'a>(&self, method: Method, segments: impl IntoIterator<Item = &'a str>) -> Request {
        self.api.request(method, segments)
    }

    /// `/api/files/local/<path>`: a file OctoPrint stores (`path` may hold folders).
    fn file_request(&self, method: Method, path: &str) -> Request {
        self.request(
            method,
            ["api", "files", "local"].into_iter().chain(path.split('/')),
        )
    }

    async fn send(&self, request: Request) -> Result<Response, PrinterError> {
        self.api.send(request).await
    }

    /// Printer and job state. A printer that is not connected is reported
    /// as not operational (OctoPrint answers 409 on `/api/printer` then).
    pub async fn state(&self) -> Result<PrinterState, PrinterError> {
        let job = self
            .send(
                self.request(Method::GET, ["api", "job"])
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        let job: JobAnswer = check(job)
            .await?
            .json()
            .await
            .map_err(|e| PrinterError::Failed {
                server: SERVER,
                status: 200,
                message: format!("unreadable /api/job answer: {e}"),
            })?;
        let printer = self
            .send(
                self.request(Method::GET, ["api", "printer"])
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        let value: Value = match printer.status() {
            StatusCode::CONFLICT => Value::Null,
            _ => check(printer).await?.json().await.unwrap_or(Value::Null),
        };
        let flags: std::collections::BTreeMap<String, bool> =
            serde_json::from_value(value["state"]["flags"].clone()).unwrap_or_default();
        let temperatures = temperatures(&value["temperature"]);
        let flag = |name: &str| flags.get(name).copied().unwrap_or(false);
        let operational = flag("operational");
        let busy_flags = crate::wire::protocol::BUSY_FLAGS
            .iter()
            .any(|name| flag(name));
        let file = job.job.and_then(|j| j.file);
        let job_path = file
            .filter(|f| f.origin.as_deref() == Some("local"))
            .and_then(|f| f.path);
        let busy =
            busy_flags || !matches!(job.state.as_str(), "Operational" | "Offline" | "Closed");
        let seconds = |s: Option<f64>| s.filter(|s| *s >= 0.0).map(|s| s as u64);
        let progress = job.progress;
        Ok(PrinterState {
            text: job.state,
            operational,
            busy: busy && operational,
            job_path,
            completion: progress.as_ref().and_then(|p| p.completion),
            print_time: seconds(progress.as_ref().and_then(|p| p.print_time)),
            print_time_left: seconds(progress.as_ref().and_then(|p| p.print_time_left)),
            flags,
            temperatures,
        })
    }

    /// The `userdata.sha256` stored with a file OctoPrint already has, or
    /// `None` when it has no file at `path`.
    pub(crate) async fn stored_digest(&self, path: &str) -> Result<Option<String>, PrinterError> {
        let response = self
            .send(
                self.file_request(Method::GET, path)
                    .timeout(REQUEST_TIMEOUT),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let value: Value = check(response).await?.json().await.unwrap_or(Value::Null);
        Ok(Some(
            value["userdata"]["sha256"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ))
    }

    /// Uploads the opened `handle` as `file` says, with the digest and the
    /// sender in its userdata; `print` selects it and asks OctoPrint to
    /// start it.
    pub async fn upload(
        &self,
        handle: tokio::fs::File,
        file: &Outgoing<'_>,
    ) -> Result<Uploaded, PrinterError> {
        // Kept beside the file: the digest says later whether OctoPrint
        // already has this content (see `stored_digest`).
        let userdata = serde_json::json!({
            "sha256": file.sha256,
            "client": file.client,
            "agent": concat!("fileagent ", env!("CARGO_PKG_VERSION")),
        });
        let print = if file.print { "true" } else { "false" };
        let form = Form::new();
        let form = super::api::with_file(form, "file", handle, file.file, file.name).await?;
        let mut form = form
            .text("select", print)
            .text("print", print)
            .text("userdata", userdata.to_string());
        if let Some(folder) = file.folder {
            form = form.text("path", folder);
        }
        let response = self
            .send(
                self.request(Method::POST, ["api", "files", "local"])
                    .multipart(form),
            )
            .await?;
        let value: Value = check(response).await?.json().await.unwrap_or(Value::Null);
        let path = value["files"]["local"]["path"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| file.path());
        Ok(Uploaded {
            path,
            printing: value["effectivePrint"].as_bool().unwrap_or(false),
        })
    }

    /// Selects the file at `path` and starts printing it.
    pub async fn print(&self, path: &str) -> Result<(), PrinterError> {
        let body = serde_json::json!({ "command": "select", "print": true });
        let response = self
            .send(
                self.file_request(Method::POST, path)
                    .timeout(REQUEST_TIMEOUT)
                    .json(&body),
            )
            .await?;
        check(response).await.map(drop)
    }
}

/// Maps an HTTP status to success or the matching [`PrinterError`].
async fn check(response: Response) -> Result<Response, PrinterError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let (status, message) = super::api::failure(response).await;
    let server = SERVER;
    Err(match status {
        status @ (403 | 401) => PrinterError::Forbidden { server, status },
        409 => PrinterError::Conflict { server, message },
        415 => PrinterError::Unsupported { server, message },
        status @ 500..=599 => PrinterError::Failed {
            server,
            status,
            message,
        },
        status => PrinterError::Rejected {
            server,
            status,
            message,
        },
    })
}

/// The heaters in OctoPrint's `temperature` object (`tool0`, `bed`, ...;
/// not its `history`).
fn temperatures(
    value: &Value,
) -> std::collections::BTreeMap<String, crate::wire::protocol::Temperature> {
    let Some(heaters) = value.as_object() else {
        return Default::default();
    };
    heaters
        .iter()
        .filter(|(_, t)| t.get("actual").is_some() || t.get("target").is_some())
        .map(|(name, t)| {
            let temperature = crate::wire::protocol::Temperature {
                actual: t["actual"].as_f64(),
                target: t["target"].as_f64(),
            };
            (name.clone(), temperature)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octoprint(base: &str) -> OctoPrint {
        OctoPrint::new(base, ApiKey::new("k")).unwrap()
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        let url = |base, path| {
            let octo = octoprint(base);
            let request = octo.file_request(Method::GET, path);
            format!("http://{}{}", octo.api.authority(), request.target())
        };
        assert_eq!(
            url("http://127.0.0.1:5000", "queue/Benchy v2 (0.2mm)#1?%.gcode"),
            "http://127.0.0.1:5000/api/files/local/queue/Benchy%20v2%20(0.2mm)%231%3F%25.gcode"
        );
        // Behind a proxy, with or without a trailing slash.
        for base in ["http://pi/octoprint", "http://pi/octoprint/"] {
            assert_eq!(
                url(base, "a.gcode"),
                "http://pi/octoprint/api/files/local/a.gcode"
            );
        }
        assert!(OctoPrint::new("not a url", ApiKey::new("k")).is_err());
        assert!(OctoPrint::new("mailto:x@y", ApiKey::new("k")).is_err());
    }

    #[test]
    fn the_key_never_shows() {
        let key = ApiKey::new(" secret-key\n");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        let client = OctoPrint::new("http://127.0.0.1:5000/", key).unwrap();
        assert!(!format!("{client:?}").contains("secret"));
        assert_eq!(client.url(), "http://127.0.0.1:5000");
    }
}
