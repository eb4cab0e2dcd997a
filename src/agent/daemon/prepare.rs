//! What the agent serves with, made from a config: the PKI (created or
//! renewed), the spool (crash leftovers removed), forwarding, and the
//! [`Live`] state new connections get, built in one place for a start and
//! for a reload. Which keys a reload may change, and which need a restart.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::agent::config::Config;
use crate::agent::pairing::Desk;
use crate::agent::pki::registry::Authority;
use crate::agent::pki::{self, InitReport, ServerCertAction};
use crate::agent::server::{Live, ServerOptions};
use crate::agent::session::Shared;
use crate::agent::spool::{Limits, Spool};

/// Everything the server needs, prepared from a config.
pub struct Prepared {
    /// What new connections are served with.
    pub live: Live,
    /// What the PKI initialisation did.
    pub report: InitReport,
    /// The forwarding supervisor, if forwarding was asked for.
    pub forwarder: Option<crate::agent::forward::Running>,
}

/// Creates the state directory, CA and server certificate where absent
/// (idempotent), and the spool directories; removes crash leftovers. With
/// `forward`, also starts forwarding to OctoPrint (needs a Tokio runtime).
pub fn prepare(config: &Config, forward: bool) -> Result<Prepared> {
    let (tls, report) = load_tls(config)?;
    let authority = Arc::new(Authority::new(config));
    let (spool, removed) = Spool::open(&config.spool_dir, limits(config)).with_context(|| {
        format!(
            "cannot open the spool {} (is it writable by this user?)",
            config.spool_dir.display()
        )
    })?;
    if removed > 0 {
        warn!(removed, dir = %config.spool_dir.display(), "removed unfinished uploads left by an earlier run");
    }
    let (handle, forwarder) = if forward {
        let (handle, running) = crate::agent::forward::start(config)?;
        (handle, Some(running))
    } else {
        let handle = crate::agent::forward::Handle::disabled("forwarding is not running");
        (handle, None)
    };
    let shared = Shared::new(config, spool, handle, authority.clone(), Instant::now());
    Ok(Prepared {
        live: live(config, tls, Desk::new(authority), shared),
        report,
        forwarder,
    })
}

/// The server's two TLS configurations.
pub(super) struct ServerTls {
    /// Authenticated connections (client certificates, revocations).
    pub(super) tls: Arc<rustls::ServerConfig>,
    /// Pairing connections (no client certificate).
    pub(super) pair_tls: Arc<rustls::ServerConfig>,
}

/// What new connections are served with, from `config`: the one place
/// [`Live`] is put together, for a start and for a reload.
fn live(config: &Config, tls: ServerTls, desk: Desk, shared: Shared) -> Live {
    Live {
        tls: tls.tls,
        pair_tls: tls.pair_tls,
        pairing: Arc::new(desk),
        shared: Arc::new(shared),
        options: options(config),
    }
}

/// Initialises (or renews) the PKI and loads the server's TLS configs: the
/// authenticated one and the pairing one.
pub(super) fn load_tls(config: &Config) -> Result<(ServerTls, InitReport)> {
    let report = pki::init(config).with_context(|| {
        format!(
            "cannot initialise the agent's keys in {} (is it writable by this user?)",
            config.state_dir.display()
        )
    })?;
    let preference = crate::wire::tls::Preference::detect();
    let tls =
        crate::agent::tls::server_config_for(pki::load_agent(&config.state_dir)?, preference)?;
    let pair_tls = crate::agent::tls::pairing_server_config_for(
        pki::load_agent(&config.state_dir)?,
        preference,
    )?;
    Ok((ServerTls { tls, pair_tls }, report))
}

fn limits(config: &Config) -> Limits {
    Limits {
        max_file_size: config.max_file_size.as_u64(),
        min_free_space: config.min_free_space.as_u64(),
        keep_partial: config.keep_partial_uploads,
    }
}

fn options(config: &Config) -> ServerOptions {
    ServerOptions {
        max_connections: config.max_connections,
        handshake_timeout: config.handshake_timeout,
        shutdown_grace: config.shutdown_grace,
    }
}

/// What serving from `old` to `new` changes for new connections, or why
/// `new` is refused. Keys that need a restart keep their old values.
pub(super) fn reloaded(
    old: &Config,
    mut new: Config,
    live: &Live,
) -> Result<(Config, Live, InitReport)> {
    let restart_only = [
        ("listen", old.listen != new.listen),
        ("state_dir", old.state_dir != new.state_dir),
        ("spool_dir", old.spool_dir != new.spool_dir),
        (
            "max_connections",
            old.max_connections != new.max_connections,
        ),
    ];
    for (key, changed) in restart_only {
        if changed {
            warn!(
                key,
                "changed in the config: takes effect only after a restart"
            );
        }
    }
    new.listen = old.listen;
    new.state_dir = old.state_dir.clone();
    new.spool_dir = old.spool_dir.clone();
    new.max_connections = old.max_connections;
    let (tls, report) = load_tls(&new)?;
    let authority = Arc::new(Authority::new(&new));
    let shared = Shared::new(
        &new,
        live.shared.spool.with_limits(limits(&new)),
        live.shared.forward.clone(),
        authority.clone(),
        live.shared.started,
    );
    let desk = live.pairing.with_authority(authority);
    let next = self::live(&new, tls, desk, shared);
    Ok((new, next, report))
}

/// Logs what [`prepare`] did to the PKI.
pub(crate) fn log_init(config: &Config, report: &InitReport) {
    if report.created_ca {
        info!(state_dir = %config.state_dir.display(), fingerprint = %report.ca_fingerprint, "created a new agent CA");
    }
    match report.server_cert {
        ServerCertAction::Created => info!(names = ?report.names, "created the server certificate"),
        ServerCertAction::Renewed => info!(names = ?report.names, "renewed the server certificate"),
        ServerCertAction::Kept => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn config(dir: &std::path::Path) -> Config {
        Config {
            listen: "127.0.0.1:7341".parse().unwrap(),
            state_dir: dir.join("state"),
            spool_dir: dir.join("spool"),
            server_names: vec!["localhost".into()],
            ..Config::default()
        }
    }

    #[test]
    fn a_reload_applies_limits_but_keeps_what_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let old = config(dir.path());
        let prepared = prepare(&old, false).unwrap();
        let new = Config {
            listen: "0.0.0.0:9999".parse().unwrap(),
            spool_dir: dir.path().join("elsewhere"),
            max_connections: 3,
            max_file_size: bytesize::ByteSize::kib(1),
            header_timeout: Duration::from_secs(90),
            handshake_timeout: Duration::from_secs(3),
            server_names: vec!["localhost".into(), "printer.lan".into()],
            ..old.clone()
        };
        let (applied, live, report) = reloaded(&old, new, &prepared.live).unwrap();
        assert_eq!(applied.listen, old.listen);
        assert_eq!(applied.spool_dir, old.spool_dir);
        assert_eq!(applied.max_connections, old.max_connections);
        assert!(!dir.path().join("elsewhere").exists());
        assert_eq!(live.shared.max_file_size, 1024);
        assert_eq!(live.shared.header_timeout, Duration::from_secs(90));
        assert_eq!(live.options.handshake_timeout, Duration::from_secs(3));
        assert_eq!(live.shared.started, prepared.live.shared.started);
        // New names: the server certificate is re-signed, the CA kept.
        assert_eq!(report.server_cert, ServerCertAction::Renewed);
        assert_eq!(report.ca_fingerprint, prepared.report.ca_fingerprint);
    }
}
