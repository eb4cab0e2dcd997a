//! Moonraker's API as fileagent uses it, for printers run by Klipper:
//! printer and job state (`/printer/objects/query`, mapped to OctoPrint's
//! terms in [`PrinterState`]), whether a stored file has our content,
//! streamed uploads to `/server/files/upload` (with the SHA-256 as
//! `checksum`, which Moonraker verifies) and starting a stored file
//! (`/printer/print/start`).
//!
//! Every non-success answer maps to a [`PrinterError`] variant: retry later
//! (unreachable, 5xx, a bad key, klippy busy or a file in use) or give the
//! file up (400; 422, the content no longer matching its digest). The API key, if any, goes in `X-Api-Key` and is never
//! logged; without one, Moonraker must trust the agent's address
//! (`[authorization] trusted_clients`).

use std::path::Path;

use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;
use tokio_util::io::ReaderStream;

use super::octoprint::{REQUEST_TIMEOUT, UPLOAD_CHUNK};
use super::printer::{PrinterError, PrinterState, Server, Uploaded, error_chain};
use crate::agent::config::ApiKey;
use crate::wire::protocol::Temperature;

/// Which server this module speaks to, for errors.
const SERVER: Server = Server::Moonraker;
/// Longest piece of a non-JSON error body quoted in an error.
const MAX_ERROR_TEXT: usize = 200;
/// The Klipper objects a state request asks for.
const OBJECTS: &str = "webhooks&print_stats&virtual_sdcard&extruder&heater_bed";
/// The storage root print files go to.
const ROOT: &str = "gcodes";

/// A Moonraker API client.
#[derive(Debug, Clone)]
pub struct Moonraker {
    http: reqwest::Client,
    base: Url,
    key: Option<ApiKey>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Objects {
    webhooks: Webhooks,
    print_stats: PrintStats,
    virtual_sdcard: VirtualSdcard,
    extruder: Heater,
    heater_bed: Heater,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Webhooks {
    state: String,
    state_message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PrintStats {
    state: String,
    filename: String,
    total_duration: f64,
    print_duration: f64,
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VirtualSdcard {
    progress: f64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Heater {
    temperature: Option<f64>,
    target: Option<f64>,
}

impl Moonraker {
    /// A client for the Moonraker at `base` (e.g. `http://127.0.0.1:7125`);
    /// `key` when Moonraker asks for one.
    pub fn new(base: &str, key: Option<ApiKey>) -> anyhow::Result<Moonraker> {
        use anyhow::Context;
        let base = Url::parse(base).with_context(|| format!("invalid Moonraker URL {base:?}"))?;
        if base.cannot_be_a_base() {
            anyhow::bail!(
                "invalid Moonraker URL {base}: it cannot take a path such as /server/info"
            );
        }
        let http = super::printer::http_client(SERVER)?;
        Ok(Moonraker { http, base, key })
    }

    /// Base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of an API path given as its segments, each percent-encoded.
    fn endpoint<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("a base URL, checked in Moonraker::new")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request<'a>(
        &self,
        method: reqwest::Method,
        segments: impl IntoIterator<Item = &'a str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.endpoint(segments));
        match &self.key {
            Some(key) => request.header("X-Api-Key", key.secret()),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, PrinterError> {
        request.send().await.map_err(|e| PrinterError::Unreachable {
            server: SERVER,
            url: self.url().to_string(),
            reason: error_chain(&e),
        })
    }

    /// Printer and job state. While klippy is not connected (Moonraker
    /// answers 404 before it first connects, 503 after) or not ready
    /// (shut down, in error), the printer is not operational.
    pub async fn state(&self) -> Result<PrinterState, PrinterError> {
        let mut url = self.endpoint(["printer", "objects", "query"]);
        url.set_query(Some(OBJECTS));
        let mut request = self.http.get(url).timeout(REQUEST_TIMEOUT);
        if let Some(key) = &self.key {
            request = request.header("X-Api-Key", key.secret());
        }
        let response = self.send(request).await?;
        if matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
        ) {
            return self.klippy_away().await;
        }
        let value: Value = check(response)
            .await?
            .json()
            .await
            .map_err(|e| unreadable(format!("unreadable state answer: {e}")))?;
        let objects: Objects = serde_json::from_value(value["result"]["status"].clone())
            .map_err(|e| unreadable(format!("unreadable state answer: {e}")))?;
        Ok(state_of(&objects))
    }

    /// The state while `/printer/*` is not served: klippy's state from
    /// `/server/info` (a 404 there too: no Moonraker at this URL).
    async fn klippy_away(&self) -> Result<PrinterState, PrinterError> {
        let request = self
            .request(reqwest::Method::GET, ["server", "info"])
            .timeout(REQUEST_TIMEOUT);
        let info: Value = check(self.send(request).await?)
            .await?
            .json()
            .await
            .map_err(|e| unreadable(format!("unreadable /server/info answer: {e}")))?;
        let klippy = info["result"]["klippy_state"]
            .as_str()
            .unwrap_or("disconnected");
        Ok(not_operational(format!(
            "Klipper not connected (klippy {klippy})"
        )))
    }

    /// The SHA-256 of the file Moonraker stores at `path` (under `gcodes`),
    /// read back and hashed (Moonraker keeps no digest of its own), or
    /// `None` when it has no file there.
    pub(crate) async fn stored_digest(&self, path: &str) -> Result<Option<String>, PrinterError> {
        let segments = ["server", "files", ROOT].into_iter().chain(path.split('/'));
        let mut response = self
            .send(self.request(reqwest::Method::GET, segments))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        response = check(response).await?;
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| PrinterError::Unreachable {
                server: SERVER,
                url: self.url().to_string(),
                reason: format!("reading back {path}: {}", error_chain(&e)),
            })?
        {
            hasher.update(&chunk);
        }
        Ok(Some(hex::encode(hasher.finalize())))
    }

    /// Uploads the opened `handle` (the file at `file`, whose SHA-256 is
    /// `sha256`: Moonraker refuses it with 422 if what arrived differs) as
    /// `name` into `folder` under `gcodes`; `print` asks Moonraker to start
    /// it (it does only if klippy is idle, else stores it unstarted).
    pub async fn upload(
        &self,
        handle: tokio::fs::File,
        file: &Path,
        name: &str,
        folder: Option<&str>,
        print: bool,
        sha256: &str,
    ) -> Result<Uploaded, PrinterError> {
        let local = |error| PrinterError::Local {
            path: file.display().to_string(),
            error,
        };
        let size = handle.metadata().await.map_err(local)?.len();
        let stream = ReaderStream::with_capacity(handle, UPLOAD_CHUNK);
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                .file_name(name.to_string())
                .mime_str("application/octet-stream")
                .map_err(|e| unreadable(e.to_string()))?;
        // The fields before the file: Moonraker reads them as they come.
        let mut form = reqwest::multipart::Form::new()
            .text("root", ROOT)
            .text("checksum", sha256.to_string())
            .text("print", if print { "true" } else { "false" });
        if let Some(folder) = folder
            .map(|f| f.trim_matches('/'))
            .filter(|f| !f.is_empty())
        {
            form = form.text("path", folder.to_string());
        }
        let request = self
            .request(reqwest::Method::POST, ["server", "files", "upload"])
            .multipart(form.part("file", part));
        let response = check(self.send(request).await?).await?;
        let value: Value = response.json().await.unwrap_or(Value::Null);
        let path = value["item"]["path"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| super::printer::join(folder, name));
        Ok(Uploaded {
            path,
            printing: value["print_started"].as_bool().unwrap_or(false),
        })
    }

    /// Starts printing the stored file at `path` (under `gcodes`).
    pub async fn print(&self, path: &str) -> Result<(), PrinterError> {
        let mut url = self.endpoint(["printer", "print", "start"]);
        url.query_pairs_mut().append_pair("filename", path);
        let mut request = self.http.post(url).timeout(REQUEST_TIMEOUT);
        if let Some(key) = &self.key {
            request = request.header("X-Api-Key", key.secret());
        }
        match check(self.send(request).await?).await {
            Ok(_) => Ok(()),
            // klippy refuses a second job while one runs ("SD busy"), and
            // any job while it is not ready: not now, rather than never.
            Err(PrinterError::Rejected { message, .. }) if not_now(&message) => {
                Err(PrinterError::Conflict {
                    server: SERVER,
                    message,
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether klippy's refusal means "not now": a job runs, or klippy is
/// not ready.
fn not_now(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["busy", "not ready", "shutdown", "klippy"]
        .iter()
        .any(|word| message.contains(word))
}

/// The printer state Klipper's objects describe.
fn state_of(objects: &Objects) -> PrinterState {
    let webhooks = &objects.webhooks;
    if webhooks.state != "ready" {
        let why = match webhooks.state_message.trim() {
            "" => String::new(),
            message => format!(": {}", first_line(message)),
        };
        return not_operational(format!("Klipper {}{why}", or_unknown(&webhooks.state)));
    }
    let stats = &objects.print_stats;
    let job = stats.state.as_str();
    let busy = matches!(job, "printing" | "paused");
    let filename = Some(stats.filename.clone()).filter(|f| !f.is_empty());
    let text = match job {
        "standby" => "Ready".to_string(),
        "error" if !stats.message.is_empty() => format!("Error: {}", first_line(&stats.message)),
        other => capitalised(or_unknown(other)),
    };
    let completion = (objects.virtual_sdcard.progress * 100.0).clamp(0.0, 100.0);
    let completion = match job {
        // Klipper's print_stats say "complete" once the file ran to its end.
        "complete" => 100.0,
        _ => completion,
    };
    let elapsed = stats.total_duration.max(stats.print_duration);
    let flags = [
        ("operational", true),
        ("printing", job == "printing"),
        ("paused", job == "paused"),
        ("ready", !busy),
        ("error", job == "error"),
    ];
    PrinterState {
        text,
        operational: true,
        busy,
        completion: filename.as_ref().map(|_| completion),
        job_path: filename,
        flags: flags.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        print_time: (busy || elapsed > 0.0).then_some(elapsed as u64),
        print_time_left: time_left(elapsed, completion).filter(|_| busy),
        temperatures: temperatures(objects),
    }
}

/// A printer that cannot take a job, and why.
fn not_operational(text: String) -> PrinterState {
    PrinterState {
        text,
        operational: false,
        busy: false,
        job_path: None,
        completion: None,
        flags: Default::default(),
        print_time: None,
        print_time_left: None,
        temperatures: Default::default(),
    }
}

/// Seconds left, from the time spent and the share done (Klipper gives no
/// estimate of its own; this is the file-position estimate Mainsail shows
/// as "file").
fn time_left(elapsed: f64, completion: f64) -> Option<u64> {
    (completion > 1.0 && completion < 100.0)
        .then(|| (elapsed * (100.0 - completion) / completion) as u64)
}

/// The heaters, by OctoPrint's names (`tool0`, `bed`) as the rest of
/// fileagent shows them; absent objects (no such heater) are left out.
fn temperatures(objects: &Objects) -> std::collections::BTreeMap<String, Temperature> {
    [("tool0", &objects.extruder), ("bed", &objects.heater_bed)]
        .into_iter()
        .filter(|(_, h)| h.temperature.is_some() || h.target.is_some())
        .map(|(name, h)| {
            let t = Temperature {
                actual: h.temperature,
                target: h.target,
            };
            (name.to_string(), t)
        })
        .collect()
}

fn or_unknown(state: &str) -> &str {
    if state.is_empty() { "unknown" } else { state }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn unreadable(message: String) -> PrinterError {
    PrinterError::Failed {
        server: SERVER,
        status: 200,
        message,
    }
}

/// Maps an HTTP status to success or the matching [`PrinterError`].
async fn check(response: Response) -> Result<Response, PrinterError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(MAX_ERROR_TEXT).collect());
    let server = SERVER;
    Err(match status.as_u16() {
        status @ 401 => PrinterError::Forbidden { server, status },
        // "File is loaded, upload not permitted", "File currently in use":
        // the file is being printed; it can be written once it ends.
        403 | 409 => PrinterError::Conflict { server, message },
        415 => PrinterError::Unsupported { server, message },
        // 422: what Moonraker received does not hash to the digest the
        // agent verified when the file arrived: the spool copy changed
        // since. Sending it again would not help; the sender must.
        422 => PrinterError::Rejected {
            server,
            status: 422,
            message: format!(
                "the agent's copy no longer matches what was sent: Moonraker's SHA-256 \
                 check refused it ({message}); send the file again"
            ),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(webhooks: &str, job: &str, file: &str, progress: f64) -> Objects {
        Objects {
            webhooks: Webhooks {
                state: webhooks.into(),
                state_message: "Printer is ready".into(),
            },
            print_stats: PrintStats {
                state: job.into(),
                filename: file.into(),
                total_duration: 30.0,
                ..Default::default()
            },
            virtual_sdcard: VirtualSdcard { progress },
            ..Default::default()
        }
    }

    #[test]
    fn klipper_states_read_as_the_policy_expects() {
        let idle = state_of(&objects("ready", "standby", "", 0.0));
        assert!(idle.operational && !idle.busy);
        assert_eq!(
            (idle.text.as_str(), idle.job_path, idle.completion),
            ("Ready", None, None)
        );

        let printing = state_of(&objects("ready", "printing", "fileagent/a.gcode", 0.25));
        assert!(printing.busy);
        assert_eq!(printing.job_path.as_deref(), Some("fileagent/a.gcode"));
        assert_eq!(printing.completion, Some(25.0));
        assert_eq!(printing.print_time_left, Some(90));
        assert!(printing.flags["printing"] && !printing.flags["ready"]);

        // A finished job keeps its file: the bed rule sees a finished print.
        let done = state_of(&objects("ready", "complete", "a.gcode", 0.0));
        assert!(!done.busy);
        assert_eq!(
            (done.completion, done.text.as_str()),
            (Some(100.0), "Complete")
        );

        let paused = state_of(&objects("ready", "paused", "a.gcode", 0.5));
        assert!(paused.busy && paused.flags["paused"]);

        let down = state_of(&objects("shutdown", "printing", "a.gcode", 0.5));
        assert!(!down.operational && !down.busy);
        assert_eq!(down.text, "Klipper shutdown: Printer is ready");
    }

    #[test]
    fn busy_and_not_ready_refusals_are_for_later() {
        assert!(not_now("SD busy"));
        assert!(not_now("Printer is not ready"));
        assert!(!not_now("Unable to open file"));
    }

    #[test]
    fn urls_are_encoded_and_the_key_never_shows() {
        let m = Moonraker::new("http://127.0.0.1:7125/", Some(ApiKey::new("secret"))).unwrap();
        assert_eq!(m.url(), "http://127.0.0.1:7125");
        let url = m.endpoint(["server", "files", ROOT, "a b#1.gcode"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7125/server/files/gcodes/a%20b%231.gcode"
        );
        assert!(!format!("{m:?}").contains("secret"));
        assert!(Moonraker::new("mailto:x@y", None).is_err());
    }
}
