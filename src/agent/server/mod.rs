//! The accept loop: admission of unauthenticated connections, TLS handshake
//! under a timeout, the session limit, one task per connection, and
//! graceful shutdown.
//!
//! The caller binds the listener and passes a shutdown future, so tests can
//! bind `127.0.0.1:0` and stop the server when they like. What new
//! connections are served with ([`Live`]: TLS config, spool settings,
//! timeouts) comes through a watch channel, so a reload applies to the
//! next connection while running ones finish on what they started with.
//! Every connection is accepted at once and admitted to the budget of
//! unauthenticated ones ([`admission`]: per address and overall, with
//! stale handshakes making room), so idle connections from anyone cannot
//! keep paired workstations out; once authenticated, a session waits for
//! one of `max_connections` permits. On shutdown the
//! listener is closed, idle sessions end at once, running uploads get
//! `shutdown_grace` to finish, and what is still running after that is
//! aborted (its temp file removed by the spool's drop guard). Beside the
//! accept loop, partial uploads nobody resumed in time are swept from
//! `incoming/`, so an abandoned one gives its space back without waiting
//! for the next upload or restart.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::Acceptor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::agent::pairing::Desk;
use crate::agent::session::{Session, Shared};
use crate::wire::identity::common_name;
use crate::wire::protocol::{ALPN, Connection, MAX_REQUEST_HEADER_LEN, PAIR_ALPN};

pub mod admission;

use admission::{Admission, Event, SUMMARY_EVERY};

/// Longest pause between retries when `accept` keeps failing (e.g. EMFILE).
pub(crate) const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(2);

/// Connection-level settings of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Simultaneous authenticated sessions.
    pub max_connections: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time running sessions get after shutdown begins.
    pub shutdown_grace: Duration,
}

/// What new connections are served with; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Live {
    /// TLS configuration with the agent's certificate and client verifier.
    pub tls: Arc<ServerConfig>,
    /// TLS configuration of pairing connections (no client certificate).
    pub pair_tls: Arc<ServerConfig>,
    /// Where pairing connections are served.
    pub pairing: Arc<Desk>,
    /// Spool and per-session settings.
    pub shared: Arc<Shared>,
    /// Connection-level settings (`max_connections` is taken once, at start).
    pub options: ServerOptions,
}

impl Live {
    /// A channel that never changes, for servers that are not reloaded.
    pub fn fixed(self) -> watch::Receiver<Live> {
        let (tx, rx) = watch::channel(self);
        // Without a sender the receiver keeps the last value for good.
        drop(tx);
        rx
    }
}

/// Serves `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    listener: TcpListener,
    live: watch::Receiver<Live>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let options = live.borrow().options;
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let admission = Arc::new(Admission::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Stops with the server, also when `run` is dropped instead of shut down.
    let sweeper = AbortOnDropHandle::new(tokio::spawn(sweep_partials(live.clone())));
    // The end of the window in which turned-away connections are summed
    // up; none while nothing was turned away.
    let mut window_end: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let summary_due = async {
            match window_end {
                Some(end) => tokio::time::sleep_until(end).await,
                None => std::future::pending().await,
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = admission.first_note(), if window_end.is_none() => {
                window_end = Some(tokio::time::Instant::now() + SUMMARY_EVERY);
                continue;
            }
            () = summary_due => {
                admission.summarize();
                window_end = None;
                continue;
            }
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let current = live.borrow().clone();
        let stop = stop_rx.clone();
        let span = info_span!("conn", %peer);
        let gates = (admission.clone(), permits.clone());
        tasks.spawn(handle(tcp, peer, current, stop, gates).instrument(span));
    }
    admission.summarize();
    drop(listener);
    drop(sweeper);
    let options = live.borrow().options;
    stop_tx.send_replace(true);
    while tasks.try_join_next().is_some() {}
    if !tasks.is_empty() {
        info!(connections = tasks.len(), grace = ?options.shutdown_grace, "shutting down, waiting for running transfers");
    }
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = tasks.len(),
            "shutdown grace expired, discarding unfinished transfers"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    info!("server stopped");
    Ok(())
}

/// Removes expired partial uploads from time to time, on the spool and
/// keep time of the latest config (a reload restarts the wait).
async fn sweep_partials(mut live: watch::Receiver<Live>) {
    loop {
        let every = live.borrow_and_update().shared.spool.sweep_interval();
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            // Never ready once the sender is gone (a server that is not reloaded).
            Ok(()) = live.changed() => continue,
        }
        let shared = live.borrow().shared.clone();
        match shared.spool.sweep_expired().await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "removed partial uploads not resumed in time"),
            Err(e) => {
                warn!(error = %e, "cannot sweep expired partial uploads from incoming/; will try again")
            }
        }
    }
}

/// Accepts the next connection, retrying failures with a capped backoff.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                error!(error = %e, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Bytes read from a client's socket at once. rustls asks for at most 4 KiB
/// per read; reading ahead through a buffer this size makes one system call
/// out of the four or five a 16 KiB TLS record would take, while costing
/// each connection little memory (see docs/performance.md).
const SOCKET_READ_LEN: usize = 16 * 1024;

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    live: Live,
    mut stop: watch::Receiver<bool>,
    // What a connection passes on its way in: its place among
    // unauthenticated connections, then a session permit.
    (admission, permits): (Arc<Admission>, Arc<Semaphore>),
) {
    let Some(mut ticket) = admission.enter(peer.ip()).await else {
        if admission.note(peer.ip(), Event::Refused) {
            let (own, all) = admission.counts(peer.ip());
            warn!(
                from_this_address = own,
                in_all = all,
                "unauthenticated connections at their limit: refused (further ones from this address are summed up)"
            );
        }
        return;
    };
    tcp.set_nodelay(true).ok();
    let Some((tls, pairing)) = shake_hands(tcp, &live, &mut ticket, &admission, peer).await else {
        return;
    };
    // Authenticated (or pairing): out of the unauthenticated budget, into
    // the session limit.
    drop(ticket);
    let permit = tokio::select! {
        permit = permits.acquire_owned() => match permit {
            Ok(permit) => permit,
            Err(_) => return,
        },
        _ = stop.wait_for(|&stop| stop) => return,
    };
    serve(tls, pairing, peer, live, stop).await;
    drop(permit);
}

/// An accepted TLS stream, and whether it is a pairing connection.
type Accepted = (
    tokio_rustls::server::TlsStream<tokio::io::BufReader<TcpStream>>,
    bool,
);

/// The handshake within `handshake_timeout`, unless the connection's place
/// is given to a newer one first; each way it can fail is logged (the
/// first time from an address, then summed up).
async fn shake_hands(
    tcp: TcpStream,
    live: &Live,
    ticket: &mut admission::Ticket,
    admission: &Admission,
    peer: SocketAddr,
) -> Option<Accepted> {
    let handshake_timeout = live.options.handshake_timeout;
    let first = |event| admission.note(peer.ip(), event);
    let summed = "further ones from this address are summed up";
    let handshake = tokio::select! {
        done = tokio::time::timeout(handshake_timeout, handshake(tcp, live)) => done,
        _ = &mut ticket.cut => {
            if first(Event::CutOff) {
                info!(summed, "unauthenticated connection cut off to make room for a newer one");
            }
            return None;
        }
    };
    match handshake {
        Ok(Ok(Some(accepted))) => Some(accepted),
        Ok(Ok(None)) => {
            debug!("closed before sending anything (a port check)");
            None
        }
        Ok(Err(e)) => {
            if first(Event::Failed) {
                warn!(error = %e, summed, "TLS handshake refused");
            }
            None
        }
        Err(_) => {
            if first(Event::TimedOut) {
                warn!(timeout = ?handshake_timeout, summed, "TLS handshake timed out");
            }
            None
        }
    }
}

/// The TLS handshake. The ClientHello's ALPN decides: pairing (no client
/// certificate, may only pair) or the normal, mutually authenticated
/// protocol. `None`: closed before its first byte.
async fn handshake(tcp: TcpStream, live: &Live) -> std::io::Result<Option<Accepted>> {
    // A connection closed before its first byte is a port check (`fileagent
    // pair` makes one to see that the agent runs; so do monitoring tools),
    // not a refused handshake worth a warning.
    if tcp.peek(&mut [0u8; 1]).await? == 0 {
        return Ok(None);
    }
    let tcp = tokio::io::BufReader::with_capacity(SOCKET_READ_LEN, tcp);
    let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
    let pairing = start
        .client_hello()
        .alpn()
        .is_some_and(|mut offered| offered.any(|p| p == PAIR_ALPN));
    let config = if pairing {
        live.pair_tls.clone()
    } else {
        live.tls.clone()
    };
    let tls = start.into_stream(config).await?;
    Ok(Some((tls, pairing)))
}

/// Serves an authenticated connection (or a pairing one) to its end.
async fn serve(
    tls: tokio_rustls::server::TlsStream<tokio::io::BufReader<TcpStream>>,
    pairing: bool,
    peer: SocketAddr,
    live: Live,
    stop: watch::Receiver<bool>,
) {
    if pairing {
        info!("pairing connection");
        let conn = Connection::new(tls, MAX_REQUEST_HEADER_LEN);
        crate::agent::pairing::serve(conn, &live.pairing, peer, live.shared.header_timeout).await;
        return;
    }
    let (_, session) = tls.get_ref();
    if session.alpn_protocol() != Some(ALPN) {
        warn!("client did not negotiate ALPN fileagent/1, closing");
        return;
    }
    // The verifier only lets chained certificates through; the CN names the client.
    let cert = session.peer_certificates().and_then(|certs| certs.first());
    let client = cert
        .and_then(|cert| common_name(cert))
        .unwrap_or_else(|| "<no CN>".into());
    if let Some(cert) = cert {
        live.shared.authority.seen.record(cert);
    }
    let suite = session
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".into(), crate::wire::tls::suite_name);
    info!(client_cn = %client, %suite, "connected");
    let session = Session::new(
        Connection::new(tls, MAX_REQUEST_HEADER_LEN),
        live.shared,
        client.clone(),
        stop,
    );
    match session.run().await {
        Ok(()) => debug!(client_cn = %client, "disconnected"),
        Err(e) => warn!(client_cn = %client, error = %e, "connection closed on error"),
    }
}
