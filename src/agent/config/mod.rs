//! The agent's configuration: a TOML file with human units, its defaults and
//! its validation.
//!
//! Parsing and validation are separate steps: serde checks the shape
//! (`deny_unknown_fields`, types, units), [`Config::validate`] checks the
//! values. Both kinds of error name the file, the line and the key.
//! `config/fileagent.toml` is the shipped example; a unit test parses it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::wire::protocol::DEFAULT_PORT;

mod base_url;
mod printer;

pub use base_url::BaseUrl;
pub use printer::{ApiKey, AutoPrint, PrinterConfig, Server};

/// Where the agent looks for its config when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/fileagent/config.toml";
/// Data directory used when there is no config file at all (try-it-now mode).
pub(crate) const LOCAL_DATA_DIR: &str = "fileagent-data";
/// Default TLS handshake timeout.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed for each request header (including the wait for it).
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Shortest `header_timeout` allowed: clients reuse connections idle up to
/// [`crate::wire::protocol::RECONNECT_AFTER_IDLE`].
pub(crate) const MIN_HEADER_TIMEOUT: Duration = crate::wire::protocol::RECONNECT_AFTER_IDLE;
/// Default time a body may go without a single byte arriving.
pub(crate) const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time running uploads get to finish after SIGINT/SIGTERM.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Default number of simultaneous connections.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default largest accepted file.
pub(crate) const DEFAULT_MAX_FILE_SIZE: ByteSize = ByteSize::gib(4);
/// Default space that must stay free on the spool's file system.
pub(crate) const DEFAULT_MIN_FREE_SPACE: ByteSize = ByteSize::mib(256);
/// Default lifetime of client certificates issued by the agent.
pub(crate) const DEFAULT_CLIENT_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default time a file from another tool must stay unchanged before it is forwarded.
pub(crate) const DEFAULT_SETTLE_TIME: Duration = Duration::from_secs(2);
/// Default for how long an interrupted upload is kept for resuming.
pub(crate) const DEFAULT_KEEP_PARTIAL_UPLOADS: Duration = Duration::from_secs(24 * 3600);
/// Default time forwarded files are kept in `done/`.
pub(crate) const DEFAULT_KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default interval of the safety-net rescan of `ready/`.
pub(crate) const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Default extensions of print files.
pub(crate) const DEFAULT_PRINT_EXTENSIONS: [&str; 4] = ["gcode", "gco", "g", "bgcode"];
/// Default log level.
pub(crate) const DEFAULT_LOG_LEVEL: &str = "info";
/// The agent's settings. Every key is optional; see `config/fileagent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// DNS names and IP addresses in the server certificate; empty means the
    /// host name, `localhost`, `<hostname>.local` and the listen address.
    pub server_names: Vec<String>,
    /// Keys and certificates (CA, server, issued clients).
    pub state_dir: PathBuf,
    /// Spool root with `incoming/` and `ready/`.
    pub spool_dir: PathBuf,
    /// Largest file accepted.
    pub max_file_size: ByteSize,
    /// Space that must stay free after a file is stored.
    pub min_free_space: ByteSize,
    /// Simultaneous connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time for the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time for each request header, including the wait for it.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a body may go without data.
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Time uploads get to finish on shutdown before they are discarded.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Lifetime of client certificates (pairing, renewal, `client issue`).
    #[serde(with = "humantime_serde")]
    pub client_cert_lifetime: Duration,
    /// Time a file written into `ready/` by another tool must stay unchanged.
    #[serde(with = "humantime_serde")]
    pub settle_time: Duration,
    /// How long the body of an interrupted upload stays in `incoming/` so
    /// that sending the same file again resumes where it stopped.
    #[serde(with = "humantime_serde")]
    pub keep_partial_uploads: Duration,
    /// Extensions (without dot, any case) of files forwarded to the print server.
    pub print_extensions: Vec<String>,
    /// Time forwarded files are kept in `done/` (and failed ones in `failed/`).
    #[serde(with = "humantime_serde")]
    pub keep_done: Duration,
    /// Interval of the safety-net rescan of `ready/`.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Log level or `tracing` filter directives; `RUST_LOG` wins.
    pub log_level: String,
    /// Forwarding to OctoPrint (unless `[moonraker]` is there).
    pub octoprint: PrinterConfig,
    /// Forwarding to Moonraker (Klipper) instead.
    pub moonraker: Option<PrinterConfig>,
}

impl Default for Config {
    /// Production defaults, used for keys a config file leaves out.
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            server_names: Vec::new(),
            state_dir: PathBuf::from("/var/lib/fileagent"),
            spool_dir: PathBuf::from("/var/spool/fileagent"),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            client_cert_lifetime: DEFAULT_CLIENT_CERT_LIFETIME,
            settle_time: DEFAULT_SETTLE_TIME,
            keep_partial_uploads: DEFAULT_KEEP_PARTIAL_UPLOADS,
            print_extensions: DEFAULT_PRINT_EXTENSIONS.map(String::from).to_vec(),
            keep_done: DEFAULT_KEEP_DONE,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            log_level: DEFAULT_LOG_LEVEL.into(),
            octoprint: PrinterConfig::default(),
            moonraker: None,
        }
    }
}

/// Where the config in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from this file.
    File(PathBuf),
    /// No file: built-in defaults under `LOCAL_DATA_DIR` on 127.0.0.1.
    BuiltIn,
}

impl Source {
    /// Reads the config again from where it came from (for a reload).
    pub fn reload(&self) -> Result<Config, ConfigError> {
        match self {
            Source::File(path) => Config::load(Some(path)).map(|(config, _)| config),
            Source::BuiltIn => Ok(Config::local()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::BuiltIn => write!(f, "built-in defaults (no {DEFAULT_CONFIG_PATH})"),
        }
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not its `source()`).
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the line and the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config file {path}, line {line}: `{key}` {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Line of the key (0 if the key is not in the file).
        line: usize,
        /// The key.
        key: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

impl Config {
    /// Built-in defaults for a machine with no config file: data under
    /// `./fileagent-data`, listening on 127.0.0.1 only.
    pub fn local() -> Config {
        let data = PathBuf::from(LOCAL_DATA_DIR);
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
            state_dir: data.join("state"),
            spool_dir: data.join("spool"),
            octoprint: PrinterConfig {
                api_key_file: Some(data.join("octoprint.key")),
                ..PrinterConfig::default()
            },
            ..Config::default()
        }
    }

    /// The print server files are forwarded to, and its table:
    /// `[moonraker]` when the config has it, else `[octoprint]`.
    pub fn forwarding(&self) -> (Server, &PrinterConfig) {
        match &self.moonraker {
            Some(moonraker) => (Server::Moonraker, moonraker),
            None => (Server::OctoPrint, &self.octoprint),
        }
    }

    /// The print server's table (see [`forwarding`](Config::forwarding)).
    pub fn printer(&self) -> &PrinterConfig {
        self.forwarding().1
    }

    /// Loads the config: `explicit` must exist; without it
    /// `DEFAULT_CONFIG_PATH` is used if present, else [`Config::local`].
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Source), ConfigError> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
            None => return Ok((Config::local(), Source::BuiltIn)),
        };
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
            path: path.clone(),
            error,
        })?;
        let config = Config::parse(&text, &path)?;
        Ok((config, Source::File(path)))
    }

    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config
            .validate()
            .and_then(|()| one_print_server(text))
            .map_err(|(key, problem)| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of_key(text, key),
                key,
                problem,
            })?;
        Ok(config)
    }

    /// Checks values serde cannot: returns the offending key and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.validate_timeouts()?;
        let (server, printer) = self.forwarding();
        printer.validate(server)?;
        self.validate_limits()?;
        self.validate_names()
    }

    fn validate_timeouts(&self) -> Result<(), (&'static str, String)> {
        let nonzero = [
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("body_idle_timeout", self.body_idle_timeout),
            ("client_cert_lifetime", self.client_cert_lifetime),
            ("rescan_interval", self.rescan_interval),
        ];
        for (key, value) in nonzero {
            if value.is_zero() {
                return Err((key, "must be longer than zero, e.g. \"30s\"".into()));
            }
        }
        if self.header_timeout < MIN_HEADER_TIMEOUT {
            return Err((
                "header_timeout",
                format!(
                    "must be at least {}s: clients reuse a connection that was idle up to that long",
                    MIN_HEADER_TIMEOUT.as_secs()
                ),
            ));
        }
        if self.client_cert_lifetime < Duration::from_secs(3600) {
            return Err(("client_cert_lifetime", "must be at least 1h".into()));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == 0 || self.max_connections > 10_000 {
            return Err(("max_connections", "must be between 1 and 10000".into()));
        }
        if self.max_file_size.as_u64() == 0 {
            return Err((
                "max_file_size",
                "must be more than 0 bytes, e.g. \"4 GiB\"".into(),
            ));
        }
        if let Err(e) = crate::logging::parse_filter(&self.log_level) {
            return Err(("log_level", format!("is not a level or filter: {e}")));
        }
        Ok(())
    }

    /// Names and paths: extensions, server names, directories.
    fn validate_names(&self) -> Result<(), (&'static str, String)> {
        if self
            .print_extensions
            .iter()
            .any(|e| e.is_empty() || e.contains(['.', '/']))
        {
            return Err((
                "print_extensions",
                "entries are extensions without a dot, e.g. \"gcode\"".into(),
            ));
        }
        for name in &self.server_names {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(("server_names", format!("has an invalid entry {name:?}")));
            }
        }
        for (key, dir) in [
            ("state_dir", &self.state_dir),
            ("spool_dir", &self.spool_dir),
        ] {
            if dir.as_os_str().is_empty() {
                return Err((key, "must not be empty".into()));
            }
        }
        Ok(())
    }
}

/// A config names one print server: `[octoprint]` or `[moonraker]`.
fn one_print_server(text: &str) -> Result<(), (&'static str, String)> {
    let tables: toml::Table = toml::from_str(text).unwrap_or_default();
    if tables.contains_key("octoprint") && tables.contains_key("moonraker") {
        let problem = "names a second print server: the agent forwards to one, so keep \
                       [octoprint] (OctoPrint) or [moonraker] (Klipper), not both";
        return Err(("moonraker", problem.into()));
    }
    Ok(())
}

/// 1-based line on which `key` (dotted for tables, e.g. `octoprint.url`)
/// is set, or 0 when it is not set.
fn line_of_key(text: &str, key: &str) -> usize {
    let Ok(root) = toml::de::DeTable::parse(text) else {
        return 0;
    };
    let mut table = root.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let Some((k, value)) = table.iter().find(|(k, _)| k.get_ref() == part) else {
            return 0;
        };
        if parts.peek().is_none() {
            return 1 + text[..k.span().start].matches('\n').count();
        }
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses_to_the_production_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fileagent.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut config = Config::parse(&text, &path).unwrap();
        // It spells out the server's URL and key file; their defaults.
        let (server, printer) = config.forwarding();
        assert_eq!(server, Server::OctoPrint);
        assert_eq!(printer.url(server), printer::DEFAULT_OCTOPRINT_URL);
        assert_eq!(
            printer.key_file(server),
            Path::new(printer::DEFAULT_API_KEY_FILE)
        );
        (config.octoprint.url, config.octoprint.api_key_file) = (None, None);
        assert_eq!(config, Config::default());
    }

    #[test]
    fn moonraker_is_the_other_print_server_with_its_own_defaults() {
        let path = Path::new("agent.toml");
        let config = Config::parse("[moonraker]\nqueue = true\n", path).unwrap();
        let (server, printer) = config.forwarding();
        assert_eq!(server, Server::Moonraker);
        assert_eq!(printer.url(server), "http://127.0.0.1:7125");
        assert_eq!(
            printer.key_file(server),
            Path::new("/etc/fileagent/moonraker.key")
        );
        assert!(printer.queue);
        // The switch the shipped config's comment describes.
        let shipped = std::fs::read_to_string("config/fileagent.toml").unwrap();
        let switched = shipped
            .replace("\n[octoprint]\n", "\n[moonraker]\n")
            .replace(
                "url = \"http://127.0.0.1:5000\"",
                "url = \"http://127.0.0.1:7125\"",
            );
        let config = Config::parse(&switched, path).unwrap();
        assert_eq!(config.forwarding().0, Server::Moonraker);
        // Both tables: which one is meant is not guessed.
        let both = "[octoprint]\nqueue = true\n\n[moonraker]\nqueue = true\n";
        let e = Config::parse(both, path).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("not both"), "{e}");
        let e = Config::parse("[moonraker]\nurl = \"ftp://x\"\n", path).unwrap_err();
        assert!(e.to_string().contains("moonraker.url"), "{e}");
    }

    #[test]
    fn human_units_are_understood() {
        let text =
            "max_file_size = \"1.5 GiB\"\nmin_free_space = \"64 MB\"\nheader_timeout = \"2m 5s\"\n";
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(config.max_file_size.as_u64(), 1_610_612_736);
        assert_eq!(config.min_free_space.as_u64(), 64_000_000);
        assert_eq!(config.header_timeout, Duration::from_secs(125));
        assert_eq!(config.listen.port(), DEFAULT_PORT);
    }

    #[test]
    fn auto_print_is_logged_as_it_is_written() {
        for policy in [AutoPrint::WhenIdle, AutoPrint::Always, AutoPrint::Never] {
            let text = format!("[octoprint]\nauto_print = \"{}\"\n", policy.name());
            let config = Config::parse(&text, Path::new("t.toml")).unwrap();
            assert_eq!(config.octoprint.auto_print, policy);
        }
    }

    #[test]
    fn every_invalid_example_is_refused_with_file_line_and_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid-configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // The first line of each example says what the message must contain.
            let want = text
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("# expect: ");
            let err = Config::parse(&text, &path).unwrap_err().to_string();
            assert!(err.contains(&*path.to_string_lossy()), "{err}");
            for part in want.split(" && ") {
                assert!(
                    err.contains(part),
                    "{}: {err:?} lacks {part:?}",
                    path.display()
                );
            }
            seen += 1;
        }
        assert!(seen >= 6, "only {seen} invalid examples");
    }

    #[test]
    fn line_of_key_points_at_the_key() {
        let text = "# c\n\nlisten = \"127.0.0.1:1\"\nmax_connections = 0\n";
        assert_eq!(line_of_key(text, "max_connections"), 4);
        assert_eq!(line_of_key(text, "listen"), 3);
        assert_eq!(line_of_key(text, "absent"), 0);
        let nested = "listen = \"127.0.0.1:1\"\n\n[octoprint]\nqueue = true\nurl = \"ftp://x\"\n";
        assert_eq!(line_of_key(nested, "octoprint.url"), 5);
        assert_eq!(line_of_key(nested, "octoprint.absent"), 0);
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let text = "[octoprint]\napi_key = \"0123456789abcdef\"\n";
        let config = Config::parse(text, Path::new("k.toml")).unwrap();
        assert!(config.octoprint.api_key.is_some());
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn local_defaults_stay_on_loopback() {
        let local = Config::local();
        assert!(local.listen.ip().is_loopback());
        assert!(local.state_dir.starts_with(LOCAL_DATA_DIR));
        assert!(local.validate().is_ok());
    }
}
