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
//! config's `log_level`, which a reload can change. Both are a level, or
//! `target=level` directives (`info,fileagent::agent::forward=debug`):
//! tracing-subscriber's `Targets`, which needs no regular-expression engine
//! (`EnvFilter`'s span-field filters cost the binary a third of a MiB).

use std::io::IsTerminal;

use anyhow::Result;
use tracing::warn;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// Control over the installed logger.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub struct Logging {
    filter: reload::Handle<Targets, Registry>,
    /// `RUST_LOG` is set and wins over the config.
    from_env: bool,
    /// Events go to journald.
    pub journald: bool,
}

impl Logging {
    /// Installs the global logger with `default_level` (e.g. `"info"`) unless
    /// `RUST_LOG` says otherwise.
    pub fn init(default_level: &str) -> Logging {
        let from_env = std::env::var("RUST_LOG")
            .ok()
            .and_then(|directives| parse_filter(&directives).ok());
        let (filter, from_env) = match from_env {
            Some(filter) => (filter, true),
            None => (
                parse_filter(default_level).unwrap_or_else(|_| Targets::new()),
                false,
            ),
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
        let filter = parse_filter(directives)
            .map_err(|e| anyhow::anyhow!("invalid log_level {directives:?}: {e}"))?;
        if let Err(e) = self.filter.reload(filter) {
            warn!(error = %e, "cannot change the log level");
        }
        Ok(())
    }
}

/// A level (`info`) or `target=level` directives, separated by commas. A
/// bare word must be a level: `verbose` would otherwise name a target and
/// silence everything else.
pub fn parse_filter(directives: &str) -> Result<Targets, String> {
    let directives = directives.trim();
    for directive in directives.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if level.parse::<LevelFilter>().is_err() {
            let place = match level == directive {
                true => String::new(),
                false => format!("in {directive:?}, "),
            };
            return Err(format!(
                "{place}{level:?} is not a level (error, warn, info, debug, trace or off)"
            ));
        }
    }
    directives.parse().map_err(|e| format!("{e}"))
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

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn a_level_or_target_directives_are_filters() {
        let info = parse_filter("info").unwrap();
        assert!(info.would_enable("fileagent::agent", &Level::INFO));
        assert!(!info.would_enable("fileagent::agent", &Level::DEBUG));
        let mixed = parse_filter(" warn,fileagent::agent::forward=debug ").unwrap();
        assert!(mixed.would_enable("fileagent::agent::forward::octoprint", &Level::DEBUG));
        assert!(!mixed.would_enable("fileagent::agent::session", &Level::INFO));
        assert_eq!(mixed.default_level(), Some(LevelFilter::WARN));
    }

    #[test]
    fn a_word_that_is_no_level_is_refused() {
        assert_eq!(
            parse_filter("loud").unwrap_err(),
            "\"loud\" is not a level (error, warn, info, debug, trace or off)"
        );
        let e = parse_filter("info,fileagent=verbose").unwrap_err();
        assert!(
            e.starts_with("in \"fileagent=verbose\", \"verbose\" is not"),
            "{e}"
        );
    }
}
