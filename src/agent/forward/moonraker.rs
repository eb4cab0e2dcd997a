//! Moonraker's API as fileagent uses it, for printers run by Klipper:
//! printer and job state (`/printer/objects/query`, read as the policy's
//! terms in [`super::klipper`]), whether a stored file has our content,
//! streamed uploads to `/server/files/upload` (with the SHA-256 as
//! `checksum`, which Moonraker verifies) and starting a stored file
//! (`/printer/print/start`).
//!
//! Every non-success answer maps to a [`PrinterError`] variant: retry later
//! (unreachable, 5xx, a bad key, klippy busy or a file in use) or give the
//! file up (400; 422, the content no longer matching its digest). The API
//! key, if any, goes in `X-Api-Key` and is never logged; without one, Moonraker must trust the agent's address
//! (`[authorization] trusted_clients`).

use serde_json::Value;
use sha2::Digest;

use super::api::{Api, query_pair};
use super::http::{Form, Method, Request, Response, StatusCode};
use super::klipper::{Objects, not_operational, state_of};
use super::printer::{Outgoing, PrinterError, PrinterState, REQUEST_TIMEOUT, Server, Uploaded};
use crate::agent::config::ApiKey;

/// Which server this module speaks to, for errors.
const SERVER: Server = Server::Moonraker;
/// The Klipper objects a state request asks for.
const OBJECTS: &str = "webhooks&print_stats&virtual_sdcard&extruder&heater_bed";
/// The storage root print files go to.
const ROOT: &str = "gcodes";

/// A Moonraker API client.
#[derive(Debug, Clone)]
pub struct Moonraker {
    api: Api,
}

impl Moonraker {
    /// A client for the Moonraker at `base` (e.g. `http://127.0.0.1:7125`);
    /// `key` when Moonraker asks for one.
    pub fn new(base: &str, key: Option<ApiKey>) -> anyhow::Result<Moonraker> {
        let api = Api::new(SERVER, base, key)?;
        Ok(Moonraker { api })
    }

    /// Base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        self.api.url()
    }

    fn request<'a>(&self, method: Method, segments: impl IntoIterator<Item = &'a str>) -> Request {
        self.api.request(method, segments)
    }

    async fn send(&self, request: Request) -> Result<Response, PrinterError> {
        self.api.send(request).await
    }

    /// Printer and job state. While klippy is not connected (Moonraker
    /// answers 404 before it first connects, 503 after) or not ready
    /// (shut down, in error), the printer is not operational.
    pub async fn state(&self) -> Result<PrinterState, PrinterError> {
        let target = self.api.endpoint(["printer", "objects", "query"]) + "?" + OBJECTS;
        let request = self.api.request_to(Method::GET, target);
        let response = self.send(request.timeout(REQUEST_TIMEOUT)).await?;
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
            .request(Method::GET, ["server", "info"])
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
        let mut response = self.send(self.request(Method::GET, segments)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        response = check(response).await?;
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.api.unreachable(&e))?
        {
            hasher.update(&chunk);
        }
        Ok(Some(hex::encode(hasher.finalize())))
    }

    /// Uploads the opened `handle` as `file` says, under `gcodes`, with its
    /// SHA-256 as `checksum` (Moonraker refuses it with 422 if what arrived
    /// differs); `print` asks Moonraker to start it (it does only if klippy
    /// is idle, else stores it unstarted).
    pub async fn upload(
        &self,
        handle: tokio::fs::File,
        file: &Outgoing<'_>,
    ) -> Result<Uploaded, PrinterError> {
        // The fields before the file: Moonraker reads them as they come.
        let mut form = Form::new()
            .text("root", ROOT)
            .text("checksum", file.sha256)
            .text("print", if file.print { "true" } else { "false" });
        if let Some(folder) = file.folder {
            form = form.text("path", folder);
        }
        let form = super::api::with_file(form, "file", handle, file.file, file.name).await?;
        let request = self
            .request(Method::POST, ["server", "files", "upload"])
            .multipart(form);
        let response = check(self.send(request).await?).await?;
        let value: Value = response.json().await.unwrap_or(Value::Null);
        let path = value["item"]["path"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| file.path());
        Ok(Uploaded {
            path,
            printing: value["print_started"].as_bool().unwrap_or(false),
        })
    }

    /// Starts printing the stored file at `path` (under `gcodes`).
    pub async fn print(&self, path: &str) -> Result<(), PrinterError> {
        let target = self.api.endpoint(["printer", "print", "start"]);
        let target = target + "?" + &query_pair("filename", path);
        let request = self.api.request_to(Method::POST, target);
        match check(self.send(request.timeout(REQUEST_TIMEOUT)).await?).await {
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

fn unreadable(message: String) -> PrinterError {
    PrinterError::Failed {
        server: SERVER,
        status: 200,
        message,
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
        let url = m.api.endpoint(["server", "files", ROOT, "a b#1.gcode"]);
        assert_eq!(url, "/server/files/gcodes/a%20b%231.gcode");
        assert!(!format!("{m:?}").contains("secret"));
        assert!(Moonraker::new("mailto:x@y", None).is_err());
    }
}
