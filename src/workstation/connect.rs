//! Reaching an agent: its address (`HOST[:PORT]`), the TCP connection and
//! TLS handshake within [`CONNECT_TIMEOUT`], and failures turned into their
//! likely cause. One path for the client's connections and for pairing's,
//! which differ only in their TLS configuration and in how they explain a
//! refused handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::BODY_IDLE_TIMEOUT;
use super::error::{ClientError, connect_error, hung_up};
use crate::wire::protocol::{Connection, DEFAULT_PORT, MAX_REPLY_HEADER_LEN};

/// Time to establish the TCP connection and the TLS handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Splits `HOST[:PORT]` (IPv6 as `[addr]:port`); the port defaults to 7341.
pub(crate) fn parse_agent(agent: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::BadAddress(agent.to_string());
    if let Ok(addr) = agent.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = agent
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    let (host, port) = match agent.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (agent, DEFAULT_PORT),
    };
    if host.is_empty() || host.contains([':', '/', ' ']) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The connection to an agent.
pub(crate) type Conn = Connection<TlsStream<TcpStream>>;

/// An agent's address, checked.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `HOST:PORT`, as messages show it.
    pub(crate) addr: String,
    pub(crate) server_name: ServerName<'static>,
}

impl Address {
    /// Parses `HOST[:PORT]` ([`parse_agent`]) into a name TLS can check.
    pub(crate) fn parse(agent: &str) -> Result<Address, ClientError> {
        let (host, port) = parse_agent(agent)?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| ClientError::BadAddress(agent.into()))?;
        Ok(Address {
            addr: format!("{host}:{port}"),
            host,
            port,
            server_name,
        })
    }
}

/// Connects to `address` and completes the TLS handshake under `tls`,
/// within [`CONNECT_TIMEOUT`]. A refused handshake is explained by
/// `refused` unless the agent simply hung up; the connection's writes are
/// bounded by [`BODY_IDLE_TIMEOUT`].
pub(crate) async fn open(
    address: &Address,
    tls: Arc<rustls::ClientConfig>,
    refused: impl FnOnce(&io::Error) -> ClientError,
) -> Result<Conn, ClientError> {
    let connect = async {
        let tcp = TcpStream::connect((address.host.as_str(), address.port))
            .await
            .map_err(|e| connect_error(&e, &address.addr))?;
        tcp.set_nodelay(true).ok();
        TlsConnector::from(tls)
            .connect(address.server_name.clone(), tcp)
            .await
            .map_err(|e| hung_up(&e, &address.addr).unwrap_or_else(|| refused(&e)))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| ClientError::Connect {
            addr: address.addr.clone(),
            reason: format!(
                "no answer within {CONNECT_TIMEOUT:?}: check the address and that port {} is reachable",
                address.port
            ),
        })??;
    let mut conn = Connection::new(stream, MAX_REPLY_HEADER_LEN);
    conn.set_write_timeout(BODY_IDLE_TIMEOUT);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_addresses_parse() {
        assert_eq!(
            parse_agent("pi.local").unwrap(),
            ("pi.local".into(), DEFAULT_PORT)
        );
        assert_eq!(
            parse_agent("pi.local:9000").unwrap(),
            ("pi.local".into(), 9000)
        );
        assert_eq!(parse_agent("127.0.0.1:1").unwrap(), ("127.0.0.1".into(), 1));
        assert_eq!(parse_agent("[::1]:7").unwrap(), ("::1".into(), 7));
        assert_eq!(parse_agent("::1").unwrap(), ("::1".into(), DEFAULT_PORT));
        for bad in ["", ":7341", "pi:port", "pi:99999", "a b", "http://pi"] {
            assert!(parse_agent(bad).is_err(), "{bad:?} accepted");
        }
    }
}
