//! Wiring of the agent process: first-start initialisation (PKI and spool),
//! binding the listener, and the main loop, which turns SIGINT/SIGTERM into
//! a graceful shutdown and SIGHUP into a reload, keeps systemd's status
//! line current and feeds its watchdog.
//!
//! A reload re-reads the config and the certificates and applies them to
//! new connections; transfers already running finish on what they started
//! with. A new config that does not parse, validate or yield a working TLS
//! setup is refused with a logged error and the old one stays in force.
//! Keys that shape what is already open (listen address, state and spool
//! directories, connection limit) need a restart; a reload says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::agent::config::{Config, Source};
use crate::agent::pairing::Desk;
use crate::agent::pki::registry::Authority;
use crate::agent::pki::{self, InitReport, ServerCertAction};
use crate::agent::server::{self, Live, ServerOptions};
use crate::agent::session::Shared;
use crate::agent::spool::{Limits, Spool};
use crate::logging::Logging;

/// How often the status line is refreshed when no watchdog asks for more.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

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
    let (tls, pair_tls, report) = load_tls(config)?;
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
    let shared = Shared {
        spool,
        header_timeout: config.header_timeout,
        body_idle_timeout: config.body_idle_timeout,
        max_file_size: config.max_file_size.as_u64(),
        started: Instant::now(),
        forward: handle,
        authority: authority.clone(),
    };
    Ok(Prepared {
        live: Live {
            tls,
            pair_tls,
            pairing: Arc::new(Desk::new(authority)),
            shared: Arc::new(shared),
            options: options(config),
        },
        report,
        forwarder,
    })
}

/// Initialises (or renews) the PKI and loads the server's TLS configs: the
/// authenticated one and the pairing one.
fn load_tls(
    config: &Config,
) -> Result<(
    Arc<rustls::ServerConfig>,
    Arc<rustls::ServerConfig>,
    InitReport,
)> {
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
    Ok((tls, pair_tls, report))
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
fn reloaded(old: &Config, mut new: Config, live: &Live) -> Result<(Config, Live, InitReport)> {
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
    let (tls, pair_tls, report) = load_tls(&new)?;
    let authority = Arc::new(Authority::new(&new));
    let shared = Shared {
        spool: live.shared.spool.with_limits(limits(&new)),
        header_timeout: new.header_timeout,
        body_idle_timeout: new.body_idle_timeout,
        max_file_size: new.max_file_size.as_u64(),
        started: live.shared.started,
        forward: live.shared.forward.clone(),
        authority: authority.clone(),
    };
    let live = Live {
        tls,
        pair_tls,
        pairing: Arc::new(live.pairing.with_authority(authority)),
        shared: Arc::new(shared),
        options: options(&new),
    };
    Ok((new, live, report))
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

/// `fileagent serve`: prepares, binds and serves until SIGINT or SIGTERM;
/// reloads on SIGHUP.
pub async fn serve(config: Config, source: Source, logging: &Logging) -> Result<()> {
    logging.set_level(&config.log_level)?;
    if source == Source::BuiltIn {
        warn!(
            data = %crate::agent::config::LOCAL_DATA_DIR,
            listen = %config.listen,
            "no config file: running on built-in defaults, data under ./{}, loopback only",
            crate::agent::config::LOCAL_DATA_DIR
        );
    } else {
        info!(config = %source, "config loaded");
    }
    // Registered before anything slow, so an early signal is not lost.
    let mut signals = Signals::new()?;
    let prepared = prepare(&config, true)?;
    log_init(&config, &prepared.report);
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another fileagent running, or is `listen` wrong?)",
            config.listen
        )
    })?;
    let addr = listener.local_addr()?;
    info!(
        %addr,
        spool = %config.spool_dir.display(),
        ca_fingerprint = %prepared.report.ca_fingerprint,
        tls = crate::wire::tls::Preference::detect().describe(),
        "listening"
    );
    let forwarder = prepared.forwarder;
    let (live_tx, live_rx) = watch::channel(prepared.live);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut server = tokio::spawn(server::run(listener, live_rx, async {
        let _ = stop_rx.await;
    }));

    let mut status = StatusLine::new(addr);
    status.ready(&live_tx.borrow());
    let watchdog = crate::agent::systemd::watchdog_interval();
    if let Some(every) = watchdog {
        info!(every = ?every, "feeding the systemd watchdog");
    }
    let mut tick =
        tokio::time::interval(watchdog.map_or(STATUS_INTERVAL, |w| w.min(STATUS_INTERVAL)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cert_check = tokio::time::interval(SERVER_CERT_CHECK);
    cert_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut config = config;
    let mut server_ended = false;
    let outcome = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Received::Reload => {
                    crate::agent::systemd::reloading();
                    reload(&source, &mut config, &live_tx, forwarder.as_ref(), logging);
                    status.ready(&live_tx.borrow());
                }
                Received::Stop(name) => {
                    info!(signal = name, "shutdown requested");
                    break Ok(());
                }
            },
            _ = cert_check.tick() => {
                if let Err(e) = renew_server_cert(&config, &live_tx) {
                    error!(error = %format!("{e:#}"), "cannot renew the server certificate; will try again");
                }
            }
            _ = tick.tick() => {
                // The watchdog is fed from here, and only while the server
                // and the forwarder are alive and the state they share can
                // be read: a wedged agent stops feeding it and is restarted.
                let text = status.text(&live_tx.borrow());
                if status.changed(&text) {
                    crate::agent::systemd::status(&text);
                }
                let healthy = !server.is_finished() && forwarder.as_ref().is_none_or(|f| !f.is_finished());
                if watchdog.is_some() && healthy {
                    crate::agent::systemd::watchdog();
                }
            }
            ended = &mut server => {
                server_ended = true;
                break match ended {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the server stopped by itself")),
                    Ok(Err(e)) => Err(anyhow::Error::new(e).context("the server failed")),
                    Err(e) => Err(anyhow::Error::new(e).context("the server task panicked")),
                };
            }
        }
    };
    crate::agent::systemd::stopping();
    let _ = stop_tx.send(());
    if !server_ended {
        match server.await {
            Ok(result) => result.context("the server failed while stopping")?,
            Err(e) => return Err(anyhow::Error::new(e).context("the server task panicked")),
        }
    }
    if let Some(forwarder) = forwarder {
        forwarder.stop().await;
    }
    outcome
}

/// How often the agent checks whether its server certificate needs renewing.
pub const SERVER_CERT_CHECK: Duration = Duration::from_secs(6 * 3600);

/// Renews the server certificate when it nears expiry (or names changed)
/// and serves new connections with it, as a reload would; returns whether
/// it did.
fn renew_server_cert(config: &Config, live: &watch::Sender<Live>) -> Result<bool> {
    if !pki::server_cert_due(config) {
        return Ok(false);
    }
    let (tls, pair_tls, report) = load_tls(config)?;
    log_init(config, &report);
    live.send_modify(|live| {
        live.tls = tls;
        live.pair_tls = pair_tls;
    });
    Ok(true)
}

/// Re-reads the config from `source` and applies it to new connections and
/// to forwarding; a config that fails is logged and `config` stays.
fn reload(
    source: &Source,
    config: &mut Config,
    live: &watch::Sender<Live>,
    forwarder: Option<&crate::agent::forward::Running>,
    logging: &Logging,
) {
    let outcome = source
        .reload()
        .map_err(anyhow::Error::from)
        .and_then(|new| reloaded(config, new, &live.borrow()));
    let (new, next, report) = match outcome {
        Ok(applied) => applied,
        Err(e) => {
            error!(error = %format!("{e:#}"), "reload refused, the old config stays in force: fix the config and reload again");
            return;
        }
    };
    log_init(&new, &report);
    if let Err(e) = logging.set_level(&new.log_level) {
        error!(error = %format!("{e:#}"), "log level not changed");
    }
    if let Some(forwarder) = forwarder {
        forwarder.reconfigure(&new);
    }
    live.send_replace(next);
    *config = new;
    info!(config = %source, "reloaded: new connections use the new config and certificates");
}

/// The text of systemd's status line, e.g. "listening on 0.0.0.0:7341;
/// 2 queued; printer Operational".
struct StatusLine {
    addr: std::net::SocketAddr,
    last: String,
}

impl StatusLine {
    fn new(addr: std::net::SocketAddr) -> StatusLine {
        StatusLine {
            addr,
            last: String::new(),
        }
    }

    fn text(&self, live: &Live) -> String {
        let view = live.shared.forward.view();
        let receiving = live.shared.spool.incoming_count();
        let mut text = format!("listening on {}", self.addr);
        if receiving > 0 {
            text.push_str(&format!("; {receiving} receiving"));
        }
        if view.enabled {
            text.push_str(&format!(
                "; {} queued; printer {}",
                view.queued(),
                view.printer
            ));
        } else {
            text.push_str(&format!("; {}", view.printer));
        }
        text
    }

    /// Tells systemd the agent is ready, with the current status line.
    fn ready(&mut self, live: &Live) {
        let text = self.text(live);
        crate::agent::systemd::ready(&text);
        self.last = text;
    }

    /// Remembers `text`; true if it differs from the last one.
    fn changed(&mut self, text: &str) -> bool {
        if self.last == text {
            return false;
        }
        self.last = text.to_string();
        true
    }
}

/// A signal the agent acts on.
enum Received {
    /// SIGHUP.
    Reload,
    /// SIGINT or SIGTERM, by name.
    Stop(&'static str),
}

/// The agent's signal handlers.
struct Signals {
    hup: Signal,
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        let watch = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot install a handler for {name}"))
        };
        Ok(Signals {
            hup: watch(SignalKind::hangup(), "SIGHUP")?,
            int: watch(SignalKind::interrupt(), "SIGINT")?,
            term: watch(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.hup.recv() => Received::Reload,
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.term.recv() => Received::Stop("SIGTERM"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> Config {
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

    #[tokio::test]
    async fn the_server_certificate_is_renewed_before_it_expires() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path());
        let prepared = prepare(&config, false).unwrap();
        let (tx, rx) = watch::channel(prepared.live);
        assert!(!renew_server_cert(&config, &tx).unwrap());
        crate::agent::pki::tests::age_server_cert(&config, Duration::from_secs(5 * 24 * 3600));
        let before = rx.borrow().tls.clone();
        assert!(renew_server_cert(&config, &tx).unwrap());
        assert!(!Arc::ptr_eq(&before, &rx.borrow().tls));
        assert!(!crate::agent::pki::server_cert_due(&config));
        assert!(!renew_server_cert(&config, &tx).unwrap());
    }

    #[test]
    fn the_status_line_says_where_it_listens_and_what_forwarding_does() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare(&config(dir.path()), false).unwrap();
        let mut status = StatusLine::new("0.0.0.0:7341".parse().unwrap());
        let text = status.text(&prepared.live);
        assert_eq!(text, "listening on 0.0.0.0:7341; forwarding is not running");
        assert!(status.changed(&text));
        assert!(!status.changed(&text), "unchanged text is not sent again");
    }
}
