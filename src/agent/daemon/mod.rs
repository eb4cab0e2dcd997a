//! Wiring of the agent process: `serve` prepares what it serves with
//! ([`prepare`]), binds the listener and runs the main loop, which turns
//! SIGINT/SIGTERM into a graceful shutdown and SIGHUP into a reload, renews
//! the server certificate before it expires, keeps systemd's status line
//! current (`status`) and feeds its watchdog.
//!
//! A reload re-reads the config and the certificates and applies them to
//! new connections; transfers already running finish on what they started
//! with. A new config that does not parse, validate or yield a working TLS
//! setup is refused with a logged error and the old one stays in force.
//! Keys that shape what is already open (listen address, state and spool
//! directories, connection limit) need a restart; a reload says so.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::agent::config::{Config, Source};
use crate::agent::forward;
use crate::agent::pki;
use crate::agent::server::{self, Live};
use crate::agent::systemd;
use crate::logging::Logging;

mod prepare;
mod status;

pub(crate) use prepare::log_init;
pub use prepare::{Prepared, prepare};
use prepare::{load_tls, reloaded};
use status::StatusLine;

/// How often the status line is refreshed under a service manager without
/// a watchdog (with one, at each of its beats).
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the agent checks whether its server certificate needs renewing.
pub(crate) const SERVER_CERT_CHECK: Duration = Duration::from_secs(6 * 3600);

/// `fileagent serve`: prepares, binds and serves until SIGINT or SIGTERM;
/// reloads on SIGHUP.
pub async fn serve(config: Config, source: Source, logging: &Logging) -> Result<()> {
    announce(&config, &source, logging)?;
    // Registered before anything slow, so an early signal is not lost.
    let mut signals = Signals::new()?;
    let prepared = prepare(&config, true)?;
    log_init(&config, &prepared.report);
    let listener = bind(&config).await?;
    let mut agent = Agent::start(listener, prepared, config, source)?;
    let ended = agent.until_stopped(&mut signals, logging).await;
    agent.stop(ended).await
}

/// Applies the log level and says where the config came from.
fn announce(config: &Config, source: &Source, logging: &Logging) -> Result<()> {
    logging.set_level(&config.log_level)?;
    if *source == Source::BuiltIn {
        warn!(
            data = %crate::agent::config::LOCAL_DATA_DIR,
            listen = %config.listen,
            "no config file: running on built-in defaults, data under ./{}, loopback only",
            crate::agent::config::LOCAL_DATA_DIR
        );
    } else {
        info!(config = %source, "config loaded");
    }
    Ok(())
}

async fn bind(config: &Config) -> Result<TcpListener> {
    TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another fileagent running, or is `listen` wrong?)",
            config.listen
        )
    })
}

/// Why the main loop ended.
enum Ended {
    /// SIGINT or SIGTERM.
    Requested,
    /// The server task ended by itself: a failure.
    ServerFailed(anyhow::Error),
}

/// The running agent: the server task and what it serves with, forwarding,
/// and what the main loop keeps.
struct Agent {
    config: Config,
    source: Source,
    live: watch::Sender<Live>,
    server: JoinHandle<std::io::Result<()>>,
    stop_server: oneshot::Sender<()>,
    forwarder: Option<forward::Running>,
    status: StatusLine,
    watchdog: Option<Duration>,
}

impl Agent {
    /// Starts serving `listener` and tells systemd the agent is ready.
    fn start(
        listener: TcpListener,
        prepared: Prepared,
        config: Config,
        source: Source,
    ) -> Result<Agent> {
        let addr = listener.local_addr()?;
        info!(
            %addr,
            spool = %config.spool_dir.display(),
            ca_fingerprint = %prepared.report.ca_fingerprint,
            tls = crate::wire::tls::Preference::detect().describe().as_str(),
            "listening"
        );
        let (live, live_rx) = watch::channel(prepared.live);
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::run(listener, live_rx, async {
            let _ = stopped.await;
        }));
        let mut status = StatusLine::new(addr);
        status.ready(&live.borrow());
        let watchdog = systemd::watchdog_interval();
        if let Some(every) = watchdog {
            info!(every = ?every, "feeding the systemd watchdog");
        }
        Ok(Agent {
            config,
            source,
            live,
            server,
            stop_server,
            forwarder: prepared.forwarder,
            status,
            watchdog,
        })
    }

    /// The main loop: signals, the certificate check and the heartbeat,
    /// until a stop is asked for or the server fails.
    async fn until_stopped(&mut self, signals: &mut Signals, logging: &Logging) -> Ended {
        // The watchdog's beat, or the status line's for a service manager
        // without one; none at all outside one. What forwarding shows
        // changes the status line when it changes, not on a timer.
        let every = (self.watchdog).or_else(|| systemd::notifying().then_some(STATUS_INTERVAL));
        let mut heartbeat = every.map(|every| {
            let mut beat = tokio::time::interval(every);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            beat
        });
        let mut printer = self.live.borrow().shared.forward.subscribe();
        let mut cert_check = tokio::time::interval(SERVER_CERT_CHECK);
        cert_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                signal = signals.next() => match signal {
                    Received::Reload => self.reload(logging),
                    Received::Stop(name) => {
                        info!(signal = name, "shutdown requested");
                        return Ended::Requested;
                    }
                },
                _ = cert_check.tick() => {
                    if let Err(e) = renew_server_cert(&self.config, &self.live) {
                        error!(error = %format!("{e:#}"), "cannot renew the server certificate; will try again");
                    }
                }
                () = beat(&mut heartbeat) => self.heartbeat(),
                Ok(()) = printer.changed() => self.refresh_status(),
                ended = &mut self.server => return Ended::ServerFailed(server_failure(ended)),
            }
        }
    }

    fn reload(&mut self, logging: &Logging) {
        systemd::reloading();
        reload(
            &self.source,
            &mut self.config,
            &self.live,
            self.forwarder.as_ref(),
            logging,
        );
        self.status.ready(&self.live.borrow());
    }

    /// Refreshes the status line, and feeds the watchdog only while the
    /// server and the forwarder are alive and the state they share can be
    /// read: a wedged agent stops feeding it and is restarted.
    fn heartbeat(&mut self) {
        self.refresh_status();
        let healthy =
            !self.server.is_finished() && self.forwarder.as_ref().is_none_or(|f| !f.is_finished());
        if self.watchdog.is_some() && healthy {
            systemd::watchdog();
        }
    }

    /// Sends the status line to the service manager if it changed.
    fn refresh_status(&mut self) {
        let text = self.status.text(&self.live.borrow());
        if self.status.changed(&text) {
            systemd::status(&text);
        }
    }

    /// Shuts down: running sessions get their grace, forwarding stops
    /// between two steps.
    async fn stop(self, ended: Ended) -> Result<()> {
        systemd::stopping();
        let _ = self.stop_server.send(());
        let outcome = match ended {
            Ended::Requested => match self.server.await {
                Ok(result) => result.context("the server failed while stopping"),
                Err(e) => Err(anyhow::Error::new(e).context("the server task panicked")),
            },
            Ended::ServerFailed(e) => Err(e),
        };
        if let Some(forwarder) = self.forwarder {
            forwarder.stop().await;
        }
        outcome
    }
}

/// What a server task that ended by itself means.
fn server_failure(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok(Ok(())) => anyhow::anyhow!("the server stopped by itself"),
        Ok(Err(e)) => anyhow::Error::new(e).context("the server failed"),
        Err(e) => anyhow::Error::new(e).context("the server task panicked"),
    }
}

/// Renews the server certificate when it nears expiry (or names changed)
/// and serves new connections with it, as a reload would; returns whether
/// it did.
fn renew_server_cert(config: &Config, live: &watch::Sender<Live>) -> Result<bool> {
    if !pki::server_cert_due(config) {
        return Ok(false);
    }
    let (tls, report) = load_tls(config)?;
    log_init(config, &report);
    live.send_modify(|live| {
        live.tls = tls.tls;
        live.pair_tls = tls.pair_tls;
    });
    Ok(true)
}

/// Re-reads the config from `source` and applies it to new connections and
/// to forwarding; a config that fails is logged and `config` stays.
fn reload(
    source: &Source,
    config: &mut Config,
    live: &watch::Sender<Live>,
    forwarder: Option<&forward::Running>,
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

/// The next beat of `heartbeat`; never without one.
async fn beat(heartbeat: &mut Option<tokio::time::Interval>) {
    match heartbeat {
        Some(beat) => {
            beat.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::agent::daemon::prepare::tests::config;

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
}
