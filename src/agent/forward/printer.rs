//! The print server the agent forwards to, behind one small interface:
//! OctoPrint ([`super::octoprint`]) or Moonraker with Klipper
//! ([`super::moonraker`]), chosen by the agent's config. The forwarder,
//! the print policy, the queue and the state stream only see what is here:
//! the printer's state, whether the server holds a file with our digest,
//! an upload (printing it or not) and starting a stored file; and one
//! error type whose variants say what to do next (wait, retry, give up).

use std::path::Path;
use std::time::Duration;

use super::moonraker::Moonraker;
use super::octoprint::OctoPrint;

pub use crate::agent::config::Server;

/// Time for the print server to answer a state request or a print start.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the server may stay silent while answering; bounds an upload whose
/// answer never comes (the server hung) without limiting big, slow uploads.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Time to connect to the server.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest piece of a non-JSON error body quoted in an error.
pub(super) const MAX_ERROR_TEXT: usize = 200;
/// Read size when streaming a file to the server.
pub(super) const UPLOAD_CHUNK: usize = 256 * 1024;

/// Why a request to the print server failed.
#[derive(Debug, thiserror::Error)]
pub enum PrinterError {
    /// No connection (the server down, starting, or a wrong URL).
    #[error("{server} at {url} is unreachable ({reason}): check that it runs and that [{table}] url points at it", table = server.table())]
    Unreachable {
        /// Which server.
        server: Server,
        /// Base URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server refused the API key (401; OctoPrint also 403).
    #[error("{server} refused the API key ({status}): check [{table}] api_key or api_key_file", table = server.table())]
    Forbidden {
        /// Which server.
        server: Server,
        /// HTTP status.
        status: u16,
    },
    /// A 5xx answer, or one the agent could not read.
    #[error("{server} failed with {status}: {message}")]
    Failed {
        /// Which server.
        server: Server,
        /// HTTP status.
        status: u16,
        /// The server's error text.
        message: String,
    },
    /// Not possible right now (printer busy, file in use): wait.
    #[error("{server} cannot do it now: {message}")]
    Conflict {
        /// Which server.
        server: Server,
        /// The server's error text.
        message: String,
    },
    /// Not a file type the server accepts.
    #[error("{server} does not accept this file type (415): {message}")]
    Unsupported {
        /// Which server.
        server: Server,
        /// The server's error text.
        message: String,
    },
    /// 400 or another 4xx: the request or the file is bad.
    #[error("{server} rejected the request ({status}): {message}")]
    Rejected {
        /// Which server.
        server: Server,
        /// HTTP status.
        status: u16,
        /// The server's error text.
        message: String,
    },
    /// The local file could not be read.
    #[error("cannot read {path}: {error}")]
    Local {
        /// The file.
        path: String,
        /// The error (in the message, so not its `source()`).
        error: std::io::Error,
    },
}

impl PrinterError {
    /// True when trying again later can succeed; false when the file itself
    /// is the problem.
    pub(crate) fn is_transient(&self) -> bool {
        !matches!(
            self,
            PrinterError::Unsupported { .. }
                | PrinterError::Rejected { .. }
                | PrinterError::Local { .. }
        )
    }
}

/// What the forwarder needs to know about the printer, in OctoPrint's
/// terms (Moonraker's are mapped to them).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterState {
    /// The state as the server words it ("Operational", "Printing",
    /// "Offline"; for Klipper "Ready", "Printing", "Complete", ...).
    pub text: String,
    /// Connected and able to take a job.
    pub operational: bool,
    /// A job is running, paused or being cancelled.
    pub busy: bool,
    /// Path (in the server's storage) of the current or last job's file.
    pub job_path: Option<String>,
    /// Job progress in percent, if there is a job.
    pub completion: Option<f64>,
    /// State flags (`operational`, `printing`, `paused`, `ready`, ...;
    /// empty while the printer is not connected).
    pub flags: std::collections::BTreeMap<String, bool>,
    /// Seconds the job has printed.
    pub print_time: Option<u64>,
    /// The estimate of the seconds left.
    pub print_time_left: Option<u64>,
    /// The heaters (`tool0`, `bed`, ...).
    pub temperatures: std::collections::BTreeMap<String, crate::wire::protocol::Temperature>,
}

/// Result of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Path of the file in the server's storage.
    pub path: String,
    /// The server started printing it.
    pub printing: bool,
}

/// The print server, as configured.
#[derive(Debug, Clone)]
pub enum Printer {
    /// OctoPrint's REST API.
    OctoPrint(OctoPrint),
    /// Moonraker's API (Klipper behind it).
    Moonraker(Moonraker),
}

impl Printer {
    /// Which kind of server.
    pub fn server(&self) -> Server {
        match self {
            Printer::OctoPrint(_) => Server::OctoPrint,
            Printer::Moonraker(_) => Server::Moonraker,
        }
    }

    /// Base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        match self {
            Printer::OctoPrint(o) => o.url(),
            Printer::Moonraker(m) => m.url(),
        }
    }

    /// Printer and job state; a printer the server cannot reach (not
    /// connected, klippy down) is reported as not operational.
    pub async fn state(&self) -> Result<PrinterState, PrinterError> {
        match self {
            Printer::OctoPrint(o) => o.state().await,
            Printer::Moonraker(m) => m.state().await,
        }
    }

    /// The SHA-256 of the file the server holds at `path` (as far as it
    /// knows it: "" for an OctoPrint file another tool uploaded), or
    /// `None` when it has no file there.
    pub async fn stored_digest(&self, path: &str) -> Result<Option<String>, PrinterError> {
        match self {
            Printer::OctoPrint(o) => o.stored_digest(path).await,
            Printer::Moonraker(m) => m.stored_digest(path).await,
        }
    }

    /// Uploads the opened `handle` (the file `file` describes), streamed
    /// from disk.
    pub async fn upload(
        &self,
        handle: tokio::fs::File,
        file: &Outgoing<'_>,
    ) -> Result<Uploaded, PrinterError> {
        match self {
            Printer::OctoPrint(o) => o.upload(handle, file).await,
            Printer::Moonraker(m) => m.upload(handle, file).await,
        }
    }

    /// Starts printing the stored file at `path`.
    pub async fn print(&self, path: &str) -> Result<(), PrinterError> {
        match self {
            Printer::OctoPrint(o) => o.print(path).await,
            Printer::Moonraker(m) => m.print(path).await,
        }
    }
}

/// A file the forwarder uploads, as either server needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The spool file (named in errors).
    pub file: &'a Path,
    /// Its name on the server.
    pub name: &'a str,
    /// The folder it goes into (see [`folder`]); `None`: the top level.
    pub folder: Option<&'a str>,
    /// Ask the server to start it.
    pub print: bool,
    /// Its SHA-256, as the agent verified it when it arrived.
    pub sha256: &'a str,
    /// The sender's certificate name, for a file sent through fileagent.
    pub client: Option<&'a str>,
}

impl Outgoing<'_> {
    /// Its path in the server's storage.
    pub fn path(&self) -> String {
        join(self.folder, self.name)
    }
}

/// The `upload_folder` setting as a folder: without surrounding `/`,
/// `None` for the top level.
pub fn folder(setting: &str) -> Option<&str> {
    Some(setting.trim_matches('/')).filter(|f| !f.is_empty())
}

/// `folder/name`, or `name` without a folder.
pub fn join(folder: Option<&str>, name: &str) -> String {
    match folder.and_then(self::folder) {
        Some(folder) => format!("{folder}/{name}"),
        None => name.to_string(),
    }
}

/// A printer state for tests: operational, printing `job` when `busy`.
#[cfg(test)]
pub(crate) fn printer_for_test(
    busy: bool,
    job: Option<&str>,
    completion: Option<f64>,
) -> PrinterState {
    PrinterState {
        text: if busy { "Printing" } else { "Operational" }.into(),
        operational: true,
        busy,
        job_path: job.map(str::to_owned),
        completion,
        flags: [("operational", true), ("printing", busy), ("ready", !busy)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        print_time: None,
        print_time_left: None,
        temperatures: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_problems_are_permanent() {
        let server = Server::Moonraker;
        let message = || "x".to_string();
        assert!(
            !PrinterError::Unsupported {
                server,
                message: message()
            }
            .is_transient()
        );
        let rejected = PrinterError::Rejected {
            server,
            status: 400,
            message: message(),
        };
        assert!(!rejected.is_transient());
        assert!(
            PrinterError::Forbidden {
                server,
                status: 401
            }
            .is_transient()
        );
        assert!(
            PrinterError::Conflict {
                server,
                message: message()
            }
            .is_transient()
        );
        let failed = PrinterError::Failed {
            server,
            status: 503,
            message: message(),
        };
        assert!(failed.is_transient());
    }

    #[test]
    fn errors_name_the_server_and_its_table() {
        let e = PrinterError::Forbidden {
            server: Server::Moonraker,
            status: 401,
        };
        assert_eq!(
            e.to_string(),
            "Moonraker refused the API key (401): check [moonraker] api_key or api_key_file"
        );
        let e = PrinterError::Forbidden {
            server: Server::OctoPrint,
            status: 403,
        };
        assert!(e.to_string().contains("[octoprint]"), "{e}");
    }

    #[test]
    fn folders_join_names() {
        assert_eq!(join(Some("/fileagent/"), "a.gcode"), "fileagent/a.gcode");
        assert_eq!(join(Some(""), "a.gcode"), "a.gcode");
        assert_eq!(join(None, "a.gcode"), "a.gcode");
    }
}
