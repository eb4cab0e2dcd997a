//! The `[octoprint]` table: where the local OctoPrint is, its API key (kept
//! out of `Debug` output and logs), when prints start, and how often it is
//! polled and retried; with its own checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Default OctoPrint URL.
pub(crate) const DEFAULT_OCTOPRINT_URL: &str = "http://127.0.0.1:5000";
/// Default file holding the OctoPrint API key.
pub(crate) const DEFAULT_API_KEY_FILE: &str = "/etc/fileagent/octoprint.key";
/// Default interval between printer state polls.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Default first retry delay after OctoPrint failed.
pub(crate) const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default longest retry delay.
pub(crate) const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// The API key: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (surrounding white space removed).
    pub fn new(key: &str) -> ApiKey {
        ApiKey(key.trim().to_string())
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// The key itself, for the one header that carries it; never log it.
    pub fn secret(&self) -> &str {
        self.0.trim()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// When the agent starts prints (`[octoprint] auto_print`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AutoPrint {
    /// Start only if the printer is operational and idle; else queue it.
    #[default]
    WhenIdle,
    /// Always ask OctoPrint to print (it refuses while busy; then queued).
    Always,
    /// Upload only.
    Never,
}

impl AutoPrint {
    /// The value as written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            AutoPrint::WhenIdle => "when-idle",
            AutoPrint::Always => "always",
            AutoPrint::Never => "never",
        }
    }
}

/// The `[octoprint]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OctoPrintConfig {
    /// Forward at all.
    pub enabled: bool,
    /// Base URL of the local OctoPrint.
    pub url: String,
    /// API key (prefer `api_key_file`); never logged or shown by `Debug`.
    pub api_key: Option<ApiKey>,
    /// File holding the API key, used when `api_key` is not set.
    pub api_key_file: PathBuf,
    /// Folder in OctoPrint's storage to upload into ("" = top level).
    pub upload_folder: String,
    /// When prints are started.
    pub auto_print: AutoPrint,
    /// Start the next uploaded file when the printer is free again after a
    /// job. Only for printers that clear their bed.
    pub queue: bool,
    /// Workstations may start prints: `fileagent print`, and sends that
    /// ask to print. Off, a send's "print" is not honoured (`auto_print`
    /// decides) and `print` is refused; "upload only" is always honoured.
    pub remote_start: bool,
    /// Interval between printer state polls.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// First retry delay while OctoPrint is down.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for OctoPrintConfig {
    fn default() -> Self {
        OctoPrintConfig {
            enabled: true,
            url: DEFAULT_OCTOPRINT_URL.into(),
            api_key: None,
            api_key_file: PathBuf::from(DEFAULT_API_KEY_FILE),
            upload_folder: String::new(),
            auto_print: AutoPrint::WhenIdle,
            queue: false,
            remote_start: true,
            poll_interval: DEFAULT_POLL_INTERVAL,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

impl OctoPrintConfig {
    /// Checks values serde cannot: returns the offending key and the problem.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, value) in [
            ("octoprint.poll_interval", self.poll_interval),
            ("octoprint.retry_initial", self.retry_initial),
        ] {
            if value.is_zero() {
                return Err((key, "must be longer than zero, e.g. \"2s\"".into()));
            }
        }
        if self.retry_max < self.retry_initial {
            return Err((
                "octoprint.retry_max",
                "must not be shorter than retry_initial".into(),
            ));
        }
        if !self.url.starts_with("http://") || reqwest::Url::parse(&self.url).is_err() {
            return Err((
                "octoprint.url",
                "must be an http:// URL of the local OctoPrint, e.g. \"http://127.0.0.1:5000\""
                    .into(),
            ));
        }
        Ok(())
    }
}
