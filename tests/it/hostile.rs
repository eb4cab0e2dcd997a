//! Hostile and broken clients: each must get a clear rejection, leave nothing
//! on disk, and leave the agent serving others.

use std::sync::Arc;
use std::time::Duration;

use fileagent::wire::protocol::{ErrorCode, MAX_REQUEST_HEADER_LEN, Reply, Request, frame_prefix};
use fileagent::workstation::{Client, ClientError};
use rustls::ClientConfig;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    Agent, GUARD, announce, content, reply, send_body, sha256, start_body, tls_connect,
};

/// Stops the agent (waiting for every connection task) and checks that
/// nothing was stored or left behind.
async fn assert_nothing_on_disk(agent: &mut Agent) {
    agent.stop().await;
    assert_eq!(agent.ready(), Vec::<String>::new(), "ready/ must be empty");
    assert_eq!(
        agent.incoming(),
        Vec::<String>::new(),
        "incoming/ must be empty"
    );
}

fn expect_error(reply: Reply, want: ErrorCode) -> String {
    match reply {
        Reply::Error { code, message } if code == want => message,
        other => panic!("expected error {want}, got {other:?}"),
    }
}

/// A client config that trusts the agent but presents `identity` (or none).
fn tls_config(
    agent: &Agent,
    identity: Option<fileagent::wire::identity::Identity>,
) -> ClientConfig {
    let ca = agent.identity("ca-probe").ca;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let builder = ClientConfig::builder_with_provider(fileagent::wire::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert], id.key)
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![fileagent::wire::protocol::ALPN.to_vec()];
    config
}

/// With TLS 1.3 a refused client certificate shows up on the first read.
async fn refused_after_handshake(agent: &Agent, config: ClientConfig) -> String {
    let mut stream = match tls_connect(agent.addr, Arc::new(config)).await {
        Ok(stream) => stream,
        Err(e) => return e.to_string(),
    };
    let _ = stream.write_all(b"H\0\0\0\x0d{\"op\":\"ping\"}").await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(GUARD, stream.read(&mut buf))
        .await
        .unwrap()
    {
        Err(e) => e.to_string(),
        Ok(n) => panic!("agent answered an unauthenticated client with {n} bytes"),
    }
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let mut agent = Agent::start().await;
    let err = refused_after_handshake(&agent, tls_config(&agent, None)).await;
    assert!(err.contains("CertificateRequired"), "{err}");
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let mut agent = Agent::start().await;
    let other = Agent::start().await;
    let err =
        refused_after_handshake(&agent, tls_config(&agent, Some(other.identity("mallory")))).await;
    assert!(err.contains("UnknownCA"), "{err}");

    // Through the library client the user is told what it means.
    let mut identity = other.identity("mallory");
    identity.ca = agent.identity("x").ca; // trusts the agent, but is not trusted by it
    let mut client = Client::connect(&agent.agent_arg(), identity).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("refused this workstation's certificate"),
        "{err}"
    );
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let mut agent = Agent::start().await;
    let now = OffsetDateTime::now_utc();
    let expired = agent.identity_valid(
        "old",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    assert!(
        expired
            .check_validity()
            .unwrap_err()
            .to_string()
            .contains("expired")
    );
    let err = refused_after_handshake(&agent, tls_config(&agent, Some(expired))).await;
    assert!(err.contains("CertificateExpired"), "{err}");
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn tls_12_only_client_is_refused() {
    let mut agent = Agent::start().await;
    let id = agent.identity("old-tls");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(id.ca.clone()).unwrap();
    // ring's full provider: the agent's own has only TLS 1.3 suites.
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![id.cert], id.key)
            .unwrap();
    let err = tls_connect(agent.addr, Arc::new(config)).await.unwrap_err();
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn wrong_or_missing_alpn_is_refused() {
    let mut agent = Agent::start().await;
    let mut config = tls_config(&agent, Some(agent.identity("http")));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let err = tls_connect(agent.addr, Arc::new(config)).await.unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");

    let mut config = tls_config(&agent, Some(agent.identity("none")));
    config.alpn_protocols.clear();
    let mut stream = tls_connect(agent.addr, Arc::new(config)).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(GUARD, stream.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "agent talked to a client without ALPN: {read:?}"
    );
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn garbage_instead_of_tls_is_dropped() {
    let mut agent = Agent::start().await;
    let mut tcp = TcpStream::connect(agent.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(GUARD, tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    // The agent closes the connection (possibly after a TLS alert record
    // or a reset); reaching here within the guard proves it closed.
    drop(read);
    assert!(
        answer.len() < 16,
        "agent answered garbage with {} bytes",
        answer.len()
    );
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn the_client_detects_a_fake_agent_and_a_wrong_name() {
    let real = Agent::start().await;
    let fake = Agent::start().await;
    let err = Client::connect(&fake.agent_arg(), real.identity("alice"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("not signed by the CA in your identity file"),
        "{err}"
    );

    let renamed = Agent::start_with(|c| c.server_names = vec!["printer.example".into()]).await;
    let err = Client::connect(&renamed.agent_arg(), renamed.identity("alice"))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("not valid for \"127.0.0.1\""),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_header_is_refused_and_the_connection_closed() {
    let mut agent = Agent::start().await;
    let mut conn = agent.raw("big-header").await;
    let len = MAX_REQUEST_HEADER_LEN as u32 + 1;
    conn.write_raw(&frame_prefix(b'H', len)).await.unwrap();
    conn.write_raw(&vec![b' '; 1024]).await.unwrap();
    let message = expect_error(reply(&mut conn).await, ErrorCode::HeaderTooLarge);
    assert!(
        message.contains(&MAX_REQUEST_HEADER_LEN.to_string()),
        "{message}"
    );
    assert!(
        conn.read_frame(GUARD).await.unwrap_or(None).is_none(),
        "connection must close"
    );
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn declared_size_over_the_limit_is_refused_before_the_body() {
    let mut agent = Agent::start_with(|c| c.max_file_size = bytesize::ByteSize::mib(1)).await;
    let mut conn = agent.raw("greedy").await;
    let message = expect_error(
        announce(&mut conn, "big.gcode", (1 << 20) + 1, &"0".repeat(64)).await,
        ErrorCode::TooLarge,
    );
    assert!(message.contains("max_file_size"), "{message}");
    // Same connection, a file within the limit works.
    let body = content(7, 1000);
    let stored = send_body(&mut conn, "ok.gcode", 1000, &sha256(&body), &body).await;
    assert!(matches!(stored, Reply::Stored { .. }), "{stored:?}");
    agent.stop().await;
    assert_eq!(agent.ready(), vec!["ok.gcode".to_string()]);
    assert!(agent.incoming().is_empty());
}

#[tokio::test]
async fn not_enough_free_space_is_refused_before_the_body() {
    let mut agent = Agent::start_with(|c| c.min_free_space = bytesize::ByteSize::pib(1000)).await;
    let mut conn = agent.raw("hungry").await;
    let message = expect_error(
        announce(&mut conn, "a.gcode", 10, &"0".repeat(64)).await,
        ErrorCode::NoSpace,
    );
    assert!(message.contains("free"), "{message}");
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn bodies_shorter_or_longer_than_declared_or_with_a_wrong_digest_are_discarded() {
    let mut agent = Agent::start().await;
    let mut conn = agent.raw("sloppy").await;
    let body = content(3, 300_000);

    // Shorter: the end frame comes early.
    let short = send_body(&mut conn, "short.gcode", 300_001, &sha256(&body), &body).await;
    let message = expect_error(short, ErrorCode::SizeMismatch);
    assert!(message.contains("300001 were declared"), "{message}");

    // Longer: more data than declared.
    let long = send_body(
        &mut conn,
        "long.gcode",
        299_999,
        &sha256(&body[..299_999]),
        &body,
    )
    .await;
    expect_error(long, ErrorCode::SizeMismatch);

    // Wrong digest.
    let corrupt = send_body(&mut conn, "bad.gcode", 300_000, &sha256(b"other"), &body).await;
    let message = expect_error(corrupt, ErrorCode::DigestMismatch);
    assert!(message.contains(&sha256(&body)), "{message}");

    // The connection is still in sync.
    conn.write_message(&Request::Ping).await.unwrap();
    assert_eq!(reply(&mut conn).await, Reply::Pong);
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn a_connection_dropped_mid_body_leaves_nothing() {
    let mut agent = Agent::start().await;
    let mut conn = agent.raw("flaky").await;
    let body = content(4, 1 << 20);
    start_body(&mut conn, "cut.gcode", 2 << 20, &sha256(&body), &body).await;
    drop(conn);
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn hostile_names_are_refused_one_by_one() {
    let mut agent = Agent::start().await;
    let mut conn = agent.raw("namer").await;
    let long = format!("{}.gcode", "x".repeat(250));
    let names = [
        "../escape.gcode",
        "a/b.gcode",
        "a\\b.gcode",
        "..",
        "/etc/passwd",
        "nul\0.gcode",
        "bell\u{7}.gcode",
        "new\nline.gcode",
        ".hidden.gcode",
        "",
        long.as_str(),
    ];
    for name in names {
        let message = expect_error(
            announce(&mut conn, name, 1, &sha256(b"x")).await,
            ErrorCode::BadName,
        );
        assert!(message.contains("invalid file name"), "{name:?}: {message}");
    }
    // Not valid UTF-8: the header is not JSON, the connection stays usable.
    let header = b"{\"op\":\"send\",\"name\":\"\xff\xfe.gcode\",\"size\":1,\"sha256\":\"00\"}";
    conn.write_raw(&frame_prefix(b'H', header.len() as u32))
        .await
        .unwrap();
    conn.write_raw(header).await.unwrap();
    let message = expect_error(reply(&mut conn).await, ErrorCode::BadRequest);
    assert!(message.contains("malformed"), "{message}");
    conn.write_message(&Request::Ping).await.unwrap();
    assert_eq!(reply(&mut conn).await, Reply::Pong);
    // Get and delete refuse the same names.
    conn.write_message(&Request::Get {
        name: "../../etc/passwd".into(),
    })
    .await
    .unwrap();
    expect_error(reply(&mut conn).await, ErrorCode::BadName);
    conn.write_message(&Request::Delete {
        name: "/etc/passwd".into(),
    })
    .await
    .unwrap();
    expect_error(reply(&mut conn).await, ErrorCode::BadName);
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn unknown_operations_and_stray_frames_are_refused() {
    let mut agent = Agent::start().await;
    let mut conn = agent.raw("confused").await;
    let header = br#"{"op":"format_disk"}"#;
    conn.write_raw(&frame_prefix(b'H', header.len() as u32))
        .await
        .unwrap();
    conn.write_raw(header).await.unwrap();
    let message = expect_error(reply(&mut conn).await, ErrorCode::BadRequest);
    assert!(message.contains("format_disk"), "{message}");

    conn.write_chunk(b"stray data").await.unwrap();
    conn.write_end().await.unwrap();
    expect_error(reply(&mut conn).await, ErrorCode::BadRequest);
    assert!(
        conn.read_frame(GUARD).await.unwrap_or(None).is_none(),
        "connection must close"
    );

    let mut conn = agent.raw("garbler").await;
    conn.write_raw(b"\x00garbage after the handshake")
        .await
        .unwrap();
    let message = expect_error(reply(&mut conn).await, ErrorCode::BadRequest);
    assert!(message.contains("not a fileagent frame"), "{message}");
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

fn quick_timeouts(c: &mut fileagent::agent::config::Config) {
    c.handshake_timeout = Duration::from_millis(300);
    c.header_timeout = Duration::from_millis(300);
    c.body_idle_timeout = Duration::from_millis(300);
}

#[tokio::test]
async fn a_silent_tcp_client_is_cut_off_at_the_handshake_timeout() {
    let mut agent = Agent::start_with(quick_timeouts).await;
    let mut tcp = TcpStream::connect(agent.addr).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(GUARD, tcp.read(&mut buf))
        .await
        .expect("agent kept a silent client");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn an_idle_session_is_closed_at_the_header_timeout() {
    let mut agent = Agent::start_with(quick_timeouts).await;
    let mut conn = agent.raw("idle").await;
    expect_error(reply(&mut conn).await, ErrorCode::Timeout);
    assert!(conn.read_frame(GUARD).await.unwrap_or(None).is_none());
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn a_stalled_body_is_discarded_at_the_idle_timeout() {
    let mut agent = Agent::start_with(quick_timeouts).await;
    let mut conn = agent.raw("staller").await;
    let body = content(5, 100_000);
    start_body(&mut conn, "stall.gcode", 200_000, &sha256(&body), &body).await;
    let message = expect_error(reply(&mut conn).await, ErrorCode::Timeout);
    assert!(message.contains("no data"), "{message}");
    agent.assert_serving().await;
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn the_connection_limit_holds_further_clients_until_a_slot_frees() {
    let mut agent = Agent::start_with(|c| c.max_connections = 2).await;
    let first = agent.raw("one").await;
    let mut second = agent.raw("two").await;
    second.write_message(&Request::Ping).await.unwrap();
    assert_eq!(reply(&mut second).await, Reply::Pong);

    // A third client is not accepted while both slots are taken...
    let addr = agent.agent_arg();
    let identity = agent.identity("three");
    let mut third = tokio::spawn(async move {
        let mut client = Client::connect(&addr, identity).await?;
        client.ping().await
    });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(
        early.is_err(),
        "third client was served beyond max_connections: {early:?}"
    );
    // ...and is served as soon as one of them leaves.
    drop(first);
    tokio::time::timeout(GUARD, third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(second);
    assert_nothing_on_disk(&mut agent).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_at_the_idle_timeout() {
    let mut agent = Agent::start_with(|c| {
        c.body_idle_timeout = Duration::from_millis(300);
        c.max_connections = 1;
    })
    .await;
    // Larger than loopback socket buffers, so the agent's writes block.
    let ready = agent.config.spool_dir.join("ready").join("huge.gcode");
    std::fs::write(&ready, content(11, 48 << 20)).unwrap();
    let mut reader = agent.raw("deaf").await;
    reader
        .write_message(&Request::Get {
            name: "huge.gcode".into(),
        })
        .await
        .unwrap();
    // The only connection slot frees once the agent gives up on the deaf client.
    agent.assert_serving().await;
    drop(reader);
    agent.stop().await;
    assert!(agent.incoming().is_empty());
}
