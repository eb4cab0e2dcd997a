//! The agent's side of a pairing connection (ALPN `fileagent-pair/1`, no
//! client certificate). Such a connection may only pair: the first request
//! must be `pair`, the second `pair_confirm`, and the connection ends after
//! the certificate is issued or anything goes wrong. Every attempt is
//! logged with its outcome.

pub mod ticket;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

use self::ticket::Outcome;
use crate::agent::pki::registry::Authority;
use crate::wire::pairing::{
    Exchange, MAX_ATTEMPTS, MAX_REQUESTS_PER_ADDRESS, RATE_WINDOW, Role, exporter,
};
use crate::wire::protocol::{Connection, ErrorCode, Issued, Reply, Request};

/// What pairing connections share: the certificate authority, the
/// per-address rate limit and a lock that serialises updates of the codes.
#[derive(Debug)]
pub struct Desk {
    authority: Arc<Authority>,
    recent: Arc<Mutex<HashMap<IpAddr, VecDeque<Instant>>>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Desk {
    /// A desk issuing through `authority`.
    pub fn new(authority: Arc<Authority>) -> Desk {
        Desk {
            authority,
            recent: Arc::default(),
            lock: Arc::default(),
        }
    }

    /// The same desk (rate limit, lock) with a new authority, after a reload.
    pub(crate) fn with_authority(&self, authority: Arc<Authority>) -> Desk {
        Desk {
            authority,
            recent: self.recent.clone(),
            lock: self.lock.clone(),
        }
    }

    /// Counts a request from `ip`; false when it is over the limit.
    fn admit(&self, ip: IpAddr) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        recent.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = recent.entry(ip).or_default();
        if times.len() >= MAX_REQUESTS_PER_ADDRESS {
            return false;
        }
        times.push_back(now);
        true
    }
}

/// A refusal: what the workstation is told.
struct Refusal(ErrorCode, String);

/// Serves one pairing connection from `peer`.
pub async fn serve<IO>(
    mut conn: Connection<tokio_rustls::server::TlsStream<IO>>,
    desk: &Desk,
    peer: SocketAddr,
    timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    conn.set_write_timeout(timeout);
    let result = exchange(&mut conn, desk, peer, timeout).await;
    if let Err(Refusal(code, message)) = result {
        let reply = Reply::Error { code, message };
        // Best effort: the workstation may be gone already.
        let _ = conn.write_message(&reply).await;
    }
    let _ = conn.shutdown().await;
}

async fn exchange<IO>(
    conn: &mut Connection<tokio_rustls::server::TlsStream<IO>>,
    desk: &Desk,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<(), Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (ticket_id, requested, spake) = match next(conn, timeout).await? {
        Request::Pair {
            ticket,
            name,
            spake,
        } => (ticket.to_ascii_uppercase(), name, spake),
        _ => return Err(only_pairing()),
    };
    if !desk.admit(peer.ip()) {
        warn!(outcome = %"rate_limited", ticket = %ticket_id, "pairing attempt refused: too many from this address");
        return Err(Refusal(
            ErrorCode::RateLimited,
            format!(
                "too many pairing attempts from this address (at most {MAX_REQUESTS_PER_ADDRESS} per {}s): wait a minute",
                RATE_WINDOW.as_secs()
            ),
        ));
    }
    let spake = hex::decode(&spake).map_err(|_| {
        Refusal(
            ErrorCode::BadRequest,
            "the pairing message is not hex".into(),
        )
    })?;
    let (ticket, name) = count_attempt(desk, &ticket_id, requested).await?;
    let result = confirm_and_issue(conn, desk, peer, timeout, &ticket, name, &spake).await;
    if result.is_err() && ticket.attempts >= MAX_ATTEMPTS {
        void(desk, &ticket).await?;
    }
    result
}

/// Counts the attempt on the code's ticket before any cryptography (an
/// exchange started and never confirmed is a failed guess too), unless
/// the code is unknown, expired, used or void; returns the ticket and the
/// client name to issue.
async fn count_attempt(
    desk: &Desk,
    ticket_id: &str,
    requested: String,
) -> Result<(ticket::Ticket, String), Refusal> {
    let state_dir = desk.authority.state_dir();
    let _lock = desk.lock.lock().await;
    ticket::sweep(state_dir);
    let loaded = ticket::load(state_dir, ticket_id).map_err(internal)?;
    let Some(mut ticket) = loaded else {
        warn!(outcome = %"unknown_code", ticket = %ticket_id, "pairing attempt refused: no such code");
        return Err(refused(
            "no pending pairing code starts with that group: check the code, or run `fileagent pair` on the agent again",
        ));
    };
    if let Some(why) = unusable(&ticket) {
        warn!(outcome = %"refused", ticket = %ticket_id, reason = why, "pairing attempt refused");
        return Err(refused(why));
    }
    let name = ticket.name.clone().unwrap_or(requested);
    if let Err(e) = crate::wire::identity::validate_client_name(&name) {
        return Err(Refusal(ErrorCode::BadRequest, e.to_string()));
    }
    ticket.attempts += 1;
    ticket::store(state_dir, &ticket).map_err(internal)?;
    Ok((ticket, name))
}

/// Why a code can no longer pair, if it cannot.
fn unusable(ticket: &ticket::Ticket) -> Option<&'static str> {
    if ticket.expired() {
        Some("the pairing code has expired: run `fileagent pair` on the agent again")
    } else if matches!(ticket.outcome, Some(Outcome::Paired { .. })) {
        Some("the pairing code was used already: run `fileagent pair` on the agent for a new one")
    } else if ticket.outcome == Some(Outcome::Void) || ticket.attempts >= MAX_ATTEMPTS {
        Some(
            "the pairing code is void after too many wrong attempts: run `fileagent pair` on the agent again",
        )
    } else {
        None
    }
}

/// That was the last attempt: the code is void.
async fn void(desk: &Desk, ticket: &ticket::Ticket) -> Result<(), Refusal> {
    let state_dir = desk.authority.state_dir();
    let _lock = desk.lock.lock().await;
    if let Ok(Some(mut now)) = ticket::load(state_dir, &ticket.ticket)
        && now.outcome.is_none()
    {
        now.outcome = Some(Outcome::Void);
        ticket::store(state_dir, &now).map_err(internal)?;
        warn!(outcome = %"void", ticket = %ticket.ticket, "pairing code void after {MAX_ATTEMPTS} failed attempts");
    }
    Ok(())
}

/// The SPAKE2 exchange and key confirmation of one counted attempt, then
/// the certificate.
async fn confirm_and_issue<IO>(
    conn: &mut Connection<tokio_rustls::server::TlsStream<IO>>,
    desk: &Desk,
    peer: SocketAddr,
    timeout: Duration,
    ticket: &ticket::Ticket,
    name: String,
    spake: &[u8],
) -> Result<(), Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let ca = crate::agent::pki::load_agent(desk.authority.state_dir())
        .map_err(internal)?
        .ca;
    let fingerprint = crate::wire::identity::fingerprint(&ca);
    let exporter = exporter(conn.get_ref().get_ref().1).map_err(internal)?;
    let (state, message) =
        Exchange::start(Role::Agent, &ticket.ticket, &ticket.secret, &fingerprint);
    let key = state
        .finish(spake)
        .map_err(|e| Refusal(ErrorCode::BadRequest, e.to_string()))?;
    let challenge = Reply::PairChallenge {
        spake: hex::encode(message),
        confirm: key.confirm(Role::Agent, &exporter, b""),
        attempts_left: MAX_ATTEMPTS - ticket.attempts,
    };
    send(conn, &challenge).await?;

    let left = MAX_ATTEMPTS - ticket.attempts;
    let (csr, confirm) = match next(conn, timeout).await {
        Ok(Request::PairConfirm { csr, confirm }) => (csr, confirm),
        Ok(_) => return Err(only_pairing()),
        Err(refusal) => {
            // Typically the workstation found the agent's confirmation wrong
            // (a mistyped code) and hung up.
            warn!(outcome = %"abandoned", ticket = %ticket.ticket, client_cn = %name, attempts_left = left, "pairing attempt failed: the workstation gave up (wrong code?)");
            return Err(refusal);
        }
    };
    let csr_digest = sha2::Sha256::digest(csr.as_bytes());
    if !key.verify(Role::Workstation, &exporter, &csr_digest, &confirm) {
        warn!(outcome = %"wrong_code", ticket = %ticket.ticket, client_cn = %name, attempts_left = left, "pairing attempt failed: wrong code");
        return Err(Refusal(
            ErrorCode::WrongCode,
            format!("the pairing code is wrong; {left} attempt(s) left before it becomes void"),
        ));
    }
    let issued = issue(desk, ticket, name, csr, peer).await?;
    send(conn, &Reply::Paired(issued)).await
}

/// Signs the request of a workstation that proved it knows the code,
/// revokes what it was issued before under that name, and marks the code
/// used.
async fn issue(
    desk: &Desk,
    ticket: &ticket::Ticket,
    name: String,
    csr: String,
    peer: SocketAddr,
) -> Result<Issued, Refusal> {
    let state_dir = desk.authority.state_dir();
    let _lock = desk.lock.lock().await;
    let issued = desk
        .authority
        .sign(name, csr)
        .await
        .map_err(|e| Refusal(ErrorCode::BadRequest, format!("{e:#}")))?;
    // Paired again under a name it had: the earlier certificate stops working.
    let replaced = desk
        .authority
        .revoke_earlier(&issued.name, &issued.serial)
        .await
        .map_err(internal)?;
    if !replaced.is_empty() {
        info!(client_cn = %issued.name, revoked = %replaced.join(","), "revoked the earlier certificates of a client paired again");
    }
    let mut done = ticket::load(state_dir, &ticket.ticket)
        .map_err(internal)?
        .unwrap_or_else(|| ticket.clone());
    done.outcome = Some(Outcome::Paired {
        client: issued.name.clone(),
        serial: issued.serial.clone(),
        address: peer.to_string(),
        replaced,
    });
    ticket::store(state_dir, &done).map_err(internal)?;
    info!(outcome = %"paired", ticket = %done.ticket, client_cn = %issued.name, serial = %issued.serial, "paired a new client");
    Ok(issued)
}

async fn next<IO>(
    conn: &mut Connection<tokio_rustls::server::TlsStream<IO>>,
    timeout: Duration,
) -> Result<Request, Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, conn.expect_message::<Request>(timeout)).await {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(e)) => Err(Refusal(ErrorCode::BadRequest, e.to_string())),
        Err(_) => Err(Refusal(
            ErrorCode::Timeout,
            format!("no request within {timeout:?}"),
        )),
    }
}

async fn send<IO>(
    conn: &mut Connection<tokio_rustls::server::TlsStream<IO>>,
    reply: &Reply,
) -> Result<(), Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    conn.write_message(reply)
        .await
        .map_err(|_| Refusal(ErrorCode::Timeout, "the workstation stopped reading".into()))
}

fn only_pairing() -> Refusal {
    warn!(
        outcome = %"forbidden",
        "a pairing connection asked for something else"
    );
    Refusal(
        ErrorCode::Forbidden,
        "a pairing connection can only pair (pair, then pair_confirm); everything else needs a client certificate"
            .into(),
    )
}

fn refused(why: &str) -> Refusal {
    Refusal(ErrorCode::PairingRefused, why.into())
}

fn internal(e: anyhow::Error) -> Refusal {
    warn!(error = format!("{e:#}"), "pairing failed on the agent");
    Refusal(
        ErrorCode::Internal,
        "the agent could not complete pairing (see its log)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_is_per_address() {
        let tmp = tempfile::tempdir().unwrap();
        let config = crate::agent::config::Config {
            state_dir: tmp.path().to_path_buf(),
            ..crate::agent::config::Config::default()
        };
        let desk = Desk::new(Arc::new(Authority::new(&config)));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_REQUESTS_PER_ADDRESS {
            assert!(desk.admit(a));
        }
        assert!(!desk.admit(a));
        assert!(desk.admit(b));
        // A reloaded desk keeps the count.
        let reloaded = desk.with_authority(Arc::new(Authority::new(&config)));
        assert!(!reloaded.admit(a));
    }
}
