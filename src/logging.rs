//! Where log lines go and at what level.
//!
//! Under systemd, when stderr is the journal (`JOURNAL_STREAM` names
//! stderr's device and inode), events go to journald as structured
//! entries: every field becomes a journal field (`client_cn` becomes
//! `CLIENT_CN`, `file_name` `FILE_NAME`, span fields too), so
//! `journalctl -u fileagent FILE_NAME=part.gcode` finds a file's story.
//! Anywhere else, human-readable lines go to stderr, coloured only on a
//! terminal.
//!
//! The level comes from `RUST_LOG` when it is set; otherwise from the
//! config's `log_level`, which a reload can change.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tracing::warn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Control over the installed logger.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` is set and wins over the config.
    from_env: bool,
    /// Events go to journald.
    pub journald: bool,
}

impl Logging {
    /// Installs the global logger with `default_level` (e.g. `"info"`) unless
    /// `RUST_LOG` says otherwise.
    pub fn init(default_level: &str) -> Logging {
        let (filter, from_env) = match EnvFilter::try_from_default_env() {
            Ok(filter) => (filter, true),
            Err(_) => (EnvFilter::new(default_level), false),
        };
        let (filter, handle) = reload::Layer::new(filter);
        let journald = journald_layer();
        let is_journald = journald.is_some();
        let fmt = (!is_journald).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .with(fmt)
            .init();
        Logging {
            filter: handle,
            from_env,
            journald: is_journald,
        }
    }

    /// Applies the config's `log_level` (already validated), unless
    /// `RUST_LOG` is set.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
    pub(crate) fn set_level(&self, directives: &str) -> Result<()> {
        if self.from_env {
            return Ok(());
        }
        let filter = EnvFilter::try_new(directives)
            .with_context(|| format!("invalid log_level {directives:?}"))?;
        if let Err(e) = self.filter.reload(filter) {
            warn!(error = %e, "cannot change the log level");
        }
        Ok(())
    }
}

/// The journald layer, when stderr is the journal.
#[cfg(target_os = "linux")]
fn journald_layer() -> Option<tracing_journald::Layer> {
    stderr_is_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|layer| layer.with_field_prefix(None))
}

/// No journal outside Linux: log lines go to stderr.
#[cfg(not(target_os = "linux"))]
fn journald_layer() -> Option<tracing_subscriber::layer::Identity> {
    None
}

/// Whether stderr is connected to the journal, as systemd says through
/// `JOURNAL_STREAM=<device>:<inode>` (a child with its own stderr inherits
/// the variable but not the stream, hence the comparison).
#[cfg(target_os = "linux")]
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse().ok() == Some(stat.st_dev) && ino.parse().ok() == Some(stat.st_ino)
}
