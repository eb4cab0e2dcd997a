//! The print server's table, `[octoprint]` or `[moonraker]` (the same keys,
//! meaning the same): where the local server is, its API key (kept out of
//! `Debug` output and logs), when prints start, and how often it is polled
//! and retried; with its own checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Default OctoPrint URL.
pub(crate) const DEFAULT_OCTOPRINT_URL: &str = "http://127.0.0.1:5000";
/// Default file holding the OctoPrint API key.
pub(crate) const DEFAULT_API_KEY_FILE: &str = "/etc/fileagent/octoprint.key";
/// Default Moonraker URL (its own default port).
pub(crate) const DEFAULT_MOONRAKER_URL: &str = "http://127.0.0.1:7125";
/// Default file holding the Moonraker API key, if it asks for one.
pub(crate) const DEFAULT_MOONRAKER_KEY_FILE: &str = "/etc/fileagent/moonraker.key";
/// Default interval between printer state polls.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Default first retry delay after OctoPrint failed.
pub(crate) const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default longest retry delay.
pub(crate) const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// Which kind of print server the agent forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// OctoPrint (`[octoprint]`, the default).
    OctoPrint,
    /// Moonraker in front of Klipper (`[moonraker]`).
    Moonraker,
}

impl Server {
    /// Its name, as messages say it.
    pub fn name(self) -> &'static str {
        match self {
            Server::OctoPrint => "OctoPrint",
            Server::Moonraker => "Moonraker",
        }
    }

    /// Its table in the agent's config.
    pub fn table(self) -> &'static str {
        match self {
            Server::OctoPrint => "octoprint",
            Server::Moonraker => "moonraker",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Server::OctoPrint => DEFAULT_OCTOPRINT_URL,
            Server::Moonraker => DEFAULT_MOONRAKER_URL,
        }
    }

    fn default_key_file(self) -> &'static str {
        match self {
            Server::OctoPrint => DEFAULT_API_KEY_FILE,
            Server::Moonraker => DEFAULT_MOONRAKER_KEY_FILE,
        }
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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

/// When the agent starts prints (`auto_print`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AutoPrint {
    /// Start only if the printer is operational and idle; else queue it.
    #[default]
    WhenIdle,
    /// Always ask the server to print (it refuses while busy; then queued).
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

/// The `[octoprint]` or `[moonraker]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrinterConfig {
    /// Forward at all.
    pub enabled: bool,
    /// Base URL of the local server (default: `http://127.0.0.1:5000` for
    /// OctoPrint, `http://127.0.0.1:7125` for Moonraker).
    pub url: Option<String>,
    /// API key (prefer `api_key_file`); never logged or shown by `Debug`.
    pub api_key: Option<ApiKey>,
    /// File holding the API key, used when `api_key` is not set (default:
    /// `/etc/fileagent/octoprint.key`, `/etc/fileagent/moonraker.key`).
    pub api_key_file: Option<PathBuf>,
    /// Folder in the server's storage to upload into ("" = top level).
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

impl Default for PrinterConfig {
    fn default() -> Self {
        PrinterConfig {
            enabled: true,
            url: None,
            api_key: None,
            api_key_file: None,
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

impl PrinterConfig {
    /// The server's base URL: `url`, or the server's default.
    pub fn url(&self, server: Server) -> &str {
        self.url.as_deref().unwrap_or(server.default_url())
    }

    /// The file the API key is read from: `api_key_file`, or the server's
    /// default.
    pub fn key_file(&self, server: Server) -> PathBuf {
        (self.api_key_file.clone()).unwrap_or_else(|| PathBuf::from(server.default_key_file()))
    }

    /// Checks values serde cannot, in the table of `server`: returns the
    /// offending key and the problem.
    pub(super) fn validate(&self, server: Server) -> Result<(), (&'static str, String)> {
        let key = |name: &'static str| table_key(server, name);
        for (name, value) in [
            ("poll_interval", self.poll_interval),
            ("retry_initial", self.retry_initial),
        ] {
            let key = key(name);
            if value.is_zero() {
                return Err((key, "must be longer than zero, e.g. \"2s\"".into()));
            }
        }
        if self.retry_max < self.retry_initial {
            return Err((
                key("retry_max"),
                "must not be shorter than retry_initial".into(),
            ));
        }
        let url = self.url(server);
        if let Err(why) = super::BaseUrl::parse(url) {
            let example = server.default_url();
            return Err((
                key("url"),
                format!("must be an http:// URL of the local {server}, e.g. \"{example}\" ({why})"),
            ));
        }
        Ok(())
    }
}

/// `octoprint.KEY` or `moonraker.KEY`, for the keys [`PrinterConfig::validate`] checks.
fn table_key(server: Server, key: &'static str) -> &'static str {
    match (server, key) {
        (Server::OctoPrint, "poll_interval") => "octoprint.poll_interval",
        (Server::OctoPrint, "retry_initial") => "octoprint.retry_initial",
        (Server::OctoPrint, "retry_max") => "octoprint.retry_max",
        (Server::OctoPrint, "url") => "octoprint.url",
        (Server::Moonraker, "poll_interval") => "moonraker.poll_interval",
        (Server::Moonraker, "retry_initial") => "moonraker.retry_initial",
        (Server::Moonraker, "retry_max") => "moonraker.retry_max",
        (Server::Moonraker, "url") => "moonraker.url",
        (_, other) => other,
    }
}
