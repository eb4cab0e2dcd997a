//! Wiring of the agent process: first-start initialisation (PKI and spool),
//! binding the listener, and turning SIGINT/SIGTERM into a graceful shutdown.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::{Config, Source};
use crate::pki::{self, InitReport, ServerCertAction};
use crate::server::{self, ServerOptions};
use crate::session::Shared;
use crate::spool::{Limits, Spool};

/// Everything the server needs, prepared from a config.
pub struct Prepared {
    /// TLS configuration with the agent's certificate and client verifier.
    pub tls: Arc<ServerConfig>,
    /// Spool and per-session settings.
    pub shared: Arc<Shared>,
    /// Connection-level settings.
    pub options: ServerOptions,
    /// What the PKI initialisation did.
    pub report: InitReport,
    /// The forwarding task, if forwarding runs.
    pub forwarder: Option<crate::forward::Running>,
}

/// Creates the state directory, CA and server certificate where absent
/// (idempotent), and the spool directories; removes crash leftovers. With
/// `forward`, also starts forwarding to OctoPrint (needs a Tokio runtime).
pub fn prepare(config: &Config, forward: bool) -> Result<Prepared> {
    let report = pki::init(config).with_context(|| {
        format!(
            "cannot initialise the agent's keys in {} (is it writable by this user?)",
            config.state_dir.display()
        )
    })?;
    let tls = crate::tls::server_config(pki::load_agent(&config.state_dir)?)?;
    let limits = Limits {
        max_file_size: config.max_file_size.as_u64(),
        min_free_space: config.min_free_space.as_u64(),
    };
    let (spool, removed) = Spool::open(&config.spool_dir, limits).with_context(|| {
        format!(
            "cannot open the spool {} (is it writable by this user?)",
            config.spool_dir.display()
        )
    })?;
    if removed > 0 {
        warn!(removed, dir = %config.spool_dir.display(), "removed unfinished uploads left by an earlier run");
    }
    let (handle, forwarder) = if forward {
        crate::forward::start(config)?
    } else {
        (
            crate::forward::Handle::disabled("forwarding is not running"),
            None,
        )
    };
    Ok(Prepared {
        tls,
        shared: Arc::new(Shared {
            spool,
            header_timeout: config.header_timeout,
            body_idle_timeout: config.body_idle_timeout,
            max_file_size: config.max_file_size.as_u64(),
            started: Instant::now(),
            forward: handle,
        }),
        options: ServerOptions {
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
            shutdown_grace: config.shutdown_grace,
        },
        report,
        forwarder,
    })
}

/// Logs what [`prepare`] did to the PKI.
pub fn log_init(config: &Config, report: &InitReport) {
    if report.created_ca {
        info!(state_dir = %config.state_dir.display(), fingerprint = %report.ca_fingerprint, "created a new agent CA");
    }
    match report.server_cert {
        ServerCertAction::Created => info!(names = ?report.names, "created the server certificate"),
        ServerCertAction::Renewed => info!(names = ?report.names, "renewed the server certificate"),
        ServerCertAction::Kept => {}
    }
}

/// `fileagent serve`: prepares, binds and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config, source: Source) -> Result<()> {
    if source == Source::BuiltIn {
        warn!(
            data = %crate::config::LOCAL_DATA_DIR,
            listen = %config.listen,
            "no config file: running on built-in defaults, data under ./{}, loopback only",
            crate::config::LOCAL_DATA_DIR
        );
    } else {
        info!(config = %source, "config loaded");
    }
    let prepared = prepare(&config, true)?;
    log_init(&config, &prepared.report);
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another fileagent running, or is `listen` wrong?)",
            config.listen
        )
    })?;
    info!(
        addr = %listener.local_addr()?,
        spool = %config.spool_dir.display(),
        ca_fingerprint = %prepared.report.ca_fingerprint,
        "listening"
    );
    server::run(
        listener,
        prepared.tls,
        prepared.shared,
        prepared.options,
        shutdown_signal(),
    )
    .await?;
    if let Some(forwarder) = prepared.forwarder {
        forwarder.stop().await;
    }
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested"),
        _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "shutdown requested"),
    }
}
