//! The table-driven hostile-input suite: well over 100 cases across names,
//! frames, JSON, sizes, digests, bodies, compression, operations a
//! connection may not use, and TLS. Each case runs on a fresh connection to
//! one agent and asserts the exact error the client sees (an error code, or
//! the TLS alert), whether the connection stays usable, and that nothing was
//! written: `ready/` and `incoming/` stay empty after every case.

use std::sync::Arc;
use std::time::Duration;

use fileagent::wire::codec::Compressor;
use fileagent::wire::protocol::{
    Connection, ErrorCode, MAX_REPLY_HEADER_LEN, MAX_REQUEST_HEADER_LEN, Reply, Request,
    frame_prefix,
};
use rustls::ClientConfig;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Agent, GUARD, poll, sha256, tls_connect};

/// Largest file the suite's agent accepts.
const MAX_FILE: u64 = 1 << 20;

/// One protocol case: raw bytes written after the handshake.
struct Case {
    label: String,
    bytes: Vec<u8>,
    want: ErrorCode,
    /// The agent closes the connection after answering.
    closes: bool,
}

fn header(json: &[u8]) -> Vec<u8> {
    let mut out = frame_prefix(b'H', json.len() as u32).to_vec();
    out.extend_from_slice(json);
    out
}

fn data(bytes: &[u8]) -> Vec<u8> {
    let mut out = frame_prefix(b'D', bytes.len() as u32).to_vec();
    out.extend_from_slice(bytes);
    out
}

fn end() -> Vec<u8> {
    frame_prefix(b'E', 0).to_vec()
}

/// A digest frame carrying `raw`.
fn digest_frame(raw: &[u8]) -> Vec<u8> {
    let mut out = frame_prefix(b'S', raw.len() as u32).to_vec();
    out.extend_from_slice(raw);
    out
}

fn send_header(name: &str, size: u64, digest: &str, encoding: Option<&str>) -> Vec<u8> {
    let mut json = serde_json::json!({"op": "send", "name": name, "size": size, "sha256": digest});
    if let Some(encoding) = encoding {
        json["encoding"] = encoding.into();
    }
    header(json.to_string().as_bytes())
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut c = Compressor::new().unwrap();
    let mut out = Vec::new();
    c.compress(bytes, &mut out).unwrap();
    c.finish(&mut out).unwrap();
    out
}

fn case(label: impl Into<String>, bytes: Vec<u8>, want: ErrorCode, closes: bool) -> Case {
    Case {
        label: label.into(),
        bytes,
        want,
        closes,
    }
}

/// Names that must never reach `ready/` (for `send`, `get` and `delete`).
fn hostile_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "",
        ".",
        "..",
        "../etc/passwd",
        "../../root/.ssh/authorized_keys",
        "/etc/passwd",
        "a/b.gcode",
        "a\\b.gcode",
        "..\\windows\\system32",
        "C:\\part.gcode",
        ".hidden.gcode",
        ".gcode",
        "./part.gcode",
        "part.gcode/",
        "/",
        "\\",
        "part.gcode.part",
        "part.gcode.tmp",
        "part.gcode~",
        "nul\0byte.gcode",
        "new\nline.gcode",
        "carriage\rreturn.gcode",
        "tab\there.gcode",
        "del\x7f.gcode",
        "\x1b[31mred.gcode",
        "bell\x07.gcode",
        "nel\u{85}.gcode",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("a".repeat(256));
    names.push("é".repeat(128)); // 256 bytes
    names
}

fn protocol_cases() -> Vec<Case> {
    use ErrorCode::*;
    let body = vec![b'G'; 1000];
    let digest = sha256(&body);
    let mut cases = Vec::new();

    // Names.
    for name in hostile_names() {
        cases.push(case(
            format!("send name {name:?}"),
            send_header(&name, 10, &digest, None),
            BadName,
            false,
        ));
    }
    for (op, name) in [
        ("get", "../x"),
        ("get", ".hidden"),
        ("get", ""),
        ("delete", "/etc/passwd"),
        ("delete", "x.part"),
        ("delete", "a/b"),
    ] {
        let json = serde_json::json!({"op": op, "name": name}).to_string();
        cases.push(case(
            format!("{op} name {name:?}"),
            header(json.as_bytes()),
            BadName,
            false,
        ));
    }

    // Sizes.
    cases.push(case(
        "size over max_file_size",
        send_header("big.gcode", MAX_FILE + 1, &digest, None),
        TooLarge,
        false,
    ));
    cases.push(case(
        "size u64::MAX",
        send_header("big.gcode", u64::MAX, &digest, None),
        TooLarge,
        false,
    ));
    for (label, size) in [
        ("negative", "-1"),
        ("float", "1.5"),
        ("exponent", "1e3"),
        ("string", "\"10\""),
        ("null", "null"),
        ("u64 overflow", "18446744073709551616"),
    ] {
        let json = format!(r#"{{"op":"send","name":"a.gcode","size":{size},"sha256":"{digest}"}}"#);
        cases.push(case(
            format!("size {label}"),
            header(json.as_bytes()),
            BadRequest,
            false,
        ));
    }

    // Digests.
    let hex63 = "a".repeat(63);
    for (label, bad) in [
        ("empty", String::new()),
        ("short", "abc".into()),
        ("63 digits", hex63.clone()),
        ("65 digits", "a".repeat(65)),
        ("not hex", "g".repeat(64)),
        ("leading space", format!(" {hex63}")),
        ("0x prefix", format!("0x{}", "a".repeat(62))),
        ("multibyte", "é".repeat(32)),
        ("path", format!("../{}", "a".repeat(61))),
    ] {
        cases.push(case(
            format!("sha256 {label}"),
            send_header("d.gcode", 10, &bad, None),
            BadRequest,
            false,
        ));
    }
    let json = r#"{"op":"send","name":"a.gcode","size":1,"sha256":12}"#;
    cases.push(case(
        "sha256 a number",
        header(json.as_bytes()),
        BadRequest,
        false,
    ));

    // Bodies.
    let with_body = |label: &str, frames: Vec<Vec<u8>>, want, closes| {
        let mut bytes = send_header("body.gcode", 1000, &digest, None);
        frames.into_iter().for_each(|f| bytes.extend(f));
        case(format!("body: {label}"), bytes, want, closes)
    };
    cases.push(with_body(
        "one byte short",
        vec![data(&body[..999]), end()],
        SizeMismatch,
        false,
    ));
    cases.push(with_body(
        "one byte long",
        vec![data(&body), data(b"x"), end()],
        SizeMismatch,
        false,
    ));
    cases.push(with_body(
        "no data at all",
        vec![end()],
        SizeMismatch,
        false,
    ));
    cases.push(with_body(
        "other content",
        vec![data(&[b'H'; 1000]), end()],
        DigestMismatch,
        false,
    ));
    // Digests sent inside the body (a `send` without sha256).
    let raw = hex::decode(&digest).unwrap();
    let late = |label: &str, frames: Vec<Vec<u8>>, want, closes| {
        let json = r#"{"op":"send","name":"late.gcode","size":1000,"resume":true}"#;
        let mut bytes = header(json.as_bytes());
        frames.into_iter().for_each(|f| bytes.extend(f));
        case(format!("late digest: {label}"), bytes, want, closes)
    };
    cases.push(late(
        "never sent",
        vec![data(&body), end()],
        BadRequest,
        false,
    ));
    cases.push(late(
        "of other content",
        vec![
            data(&body[..500]),
            digest_frame(&[7; 32]),
            data(&body[500..]),
            end(),
        ],
        DigestMismatch,
        false,
    ));
    cases.push(late(
        "sent twice",
        vec![digest_frame(&raw), data(&body), digest_frame(&raw), end()],
        BadRequest,
        true,
    ));
    cases.push(late(
        "31 bytes",
        vec![data(&body), digest_frame(&raw[..31]), end()],
        BadRequest,
        true,
    ));
    cases.push(late(
        "and a body too short",
        vec![digest_frame(&raw), data(&body[..999]), end()],
        SizeMismatch,
        false,
    ));
    cases.push(with_body(
        "a digest inside, though the send had one",
        vec![data(&body[..10]), digest_frame(&raw)],
        BadRequest,
        true,
    ));
    cases.push(case(
        "a digest frame outside any body",
        digest_frame(&raw),
        BadRequest,
        true,
    ));
    cases.push(with_body(
        "a header inside",
        vec![data(&body[..10]), header(br#"{"op":"ping"}"#)],
        BadRequest,
        true,
    ));
    cases.push(with_body(
        "an empty data frame",
        vec![data(&body[..10]), data(b"")],
        BadRequest,
        true,
    ));
    cases.push(with_body(
        "a 2 MiB data frame",
        vec![frame_prefix(b'D', 2 << 20).to_vec()],
        BadRequest,
        true,
    ));
    cases.push(with_body(
        "an end frame with a payload",
        vec![data(&body), frame_prefix(b'E', 3).to_vec(), b"abc".to_vec()],
        BadRequest,
        true,
    ));
    cases.push(with_body(
        "an unknown tag",
        vec![
            data(&body[..10]),
            frame_prefix(b'X', 1).to_vec(),
            b"x".to_vec(),
        ],
        BadRequest,
        true,
    ));
    let mut zero = send_header("empty.gcode", 0, &sha256(b""), None);
    zero.extend(data(b"x"));
    zero.extend(end());
    cases.push(case(
        "body: data for an empty file",
        zero,
        SizeMismatch,
        false,
    ));

    // Compressed bodies.
    let compressed = |label: &str, declared: u64, wire: Vec<u8>, want| {
        let mut bytes = send_header("z.gcode", declared, &digest, Some("zstd"));
        bytes.extend(data(&wire));
        bytes.extend(end());
        case(format!("zstd: {label}"), bytes, want, false)
    };
    let good = zstd(&body);
    cases.push(compressed("not zstd", 1000, body.clone(), BadRequest));
    cases.push(compressed(
        "cut in half",
        1000,
        good[..good.len() / 2].to_vec(),
        BadRequest,
    ));
    cases.push(compressed(
        "a bomb: 64 MiB of zeros as 1000 bytes",
        1000,
        zstd(&vec![0; 64 << 20]),
        SizeMismatch,
    ));
    cases.push(compressed(
        "other content",
        1000,
        zstd(&[b'H'; 1000]),
        DigestMismatch,
    ));
    cases.push(compressed(
        "valid frame and trailing garbage",
        1000,
        [good.clone(), b"junk".to_vec()].concat(),
        BadRequest,
    ));
    for encoding in ["gzip", "ZSTD", "", "zstd;level=99"] {
        cases.push(case(
            format!("encoding {encoding:?}"),
            send_header("e.gcode", 10, &digest, Some(encoding)),
            BadRequest,
            false,
        ));
    }

    // Frames and JSON where a request is expected.
    cases.push(case(
        "unknown tag",
        [frame_prefix(b'X', 2).to_vec(), b"{}".to_vec()].concat(),
        BadRequest,
        true,
    ));
    cases.push(case(
        "data frame outside a body",
        data(b"stray"),
        BadRequest,
        true,
    ));
    cases.push(case("end frame outside a body", end(), BadRequest, true));
    cases.push(case(
        "header one byte over 16 KiB",
        frame_prefix(b'H', MAX_REQUEST_HEADER_LEN as u32 + 1).to_vec(),
        HeaderTooLarge,
        true,
    ));
    cases.push(case(
        "header length u32::MAX",
        frame_prefix(b'H', u32::MAX).to_vec(),
        HeaderTooLarge,
        true,
    ));
    cases.push(case(
        "TLS record bytes inside TLS",
        b"\x16\x03\x01\x00\x05hello".to_vec(),
        BadRequest,
        true,
    ));
    let nested = format!(
        r#"{{"op":"ping","x":{}{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    for (label, json) in [
        ("truncated JSON", b"{".to_vec()),
        ("a JSON array", b"[]".to_vec()),
        ("a JSON string", br#""ping""#.to_vec()),
        ("a JSON number", b"42".to_vec()),
        ("no op", b"{}".to_vec()),
        ("unknown op", br#"{"op":"format_disk"}"#.to_vec()),
        ("op in capitals", br#"{"op":"PING"}"#.to_vec()),
        ("op null", br#"{"op":null}"#.to_vec()),
        ("op a number", br#"{"op":7}"#.to_vec()),
        ("send without fields", br#"{"op":"send"}"#.to_vec()),
        ("get without name", br#"{"op":"get"}"#.to_vec()),
        (
            "delete with a numeric name",
            br#"{"op":"delete","name":5}"#.to_vec(),
        ),
        (
            "overwrite not a bool",
            format!(
                r#"{{"op":"send","name":"a.gcode","size":1,"sha256":"{digest}","overwrite":"yes"}}"#
            )
            .into_bytes(),
        ),
        ("300 levels of nesting", nested.into_bytes()),
        ("invalid UTF-8", b"{\"op\":\"\xff\xfe\"}".to_vec()),
        ("an empty header", Vec::new()),
        (
            "a byte order mark",
            b"\xef\xbb\xbf{\"op\":\"ping\"}".to_vec(),
        ),
        ("trailing garbage", br#"{"op":"ping"}x"#.to_vec()),
        ("NUL bytes", b"\0\0\0\0".to_vec()),
        ("duplicate op", br#"{"op":"ping","op":"status"}"#.to_vec()),
    ] {
        cases.push(case(
            format!("JSON: {label}"),
            header(&json),
            BadRequest,
            false,
        ));
    }

    // Operations this connection may not use, or with broken arguments.
    for (label, json, want) in [
        (
            "pair on an authenticated connection",
            r#"{"op":"pair","ticket":"AAAA","name":"x","spake":"00"}"#,
            Forbidden,
        ),
        (
            "pair_confirm on an authenticated connection",
            r#"{"op":"pair_confirm","csr":"x","confirm":"00"}"#,
            Forbidden,
        ),
        (
            "renew with an empty request",
            r#"{"op":"renew","csr":""}"#,
            BadRequest,
        ),
        (
            "renew with garbage",
            r#"{"op":"renew","csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}"#,
            BadRequest,
        ),
    ] {
        cases.push(case(label, header(json.as_bytes()), want, false));
    }
    cases
}

/// Waits until the agent has let go of every connection's files, then
/// checks that nothing was written.
async fn assert_nothing_written(
    agent: &Agent,
    client: &mut fileagent::workstation::Client,
    label: &str,
) {
    let settled = poll(GUARD, Duration::from_millis(10), async || {
        (client.status().await.ok()?.incoming == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "{label}: an upload is still open");
    assert!(
        agent.ready().is_empty(),
        "{label}: wrote {:?}",
        agent.ready()
    );
    assert!(
        agent.incoming().is_empty(),
        "{label}: left {:?}",
        agent.incoming()
    );
}

async fn small_agent() -> Agent {
    Agent::start_with(|c| {
        c.max_file_size = bytesize::ByteSize::b(MAX_FILE);
        c.max_connections = 256;
    })
    .await
}

#[tokio::test]
async fn every_hostile_request_gets_its_exact_error_and_writes_nothing() {
    let agent = small_agent().await;
    let identity = agent.identity("hostile");
    let tls = fileagent::wire::tls::client_config(identity).unwrap();
    let mut observer = agent.client("observer").await;
    let cases = protocol_cases();
    for case in &cases {
        let stream = tls_connect(agent.addr, tls.clone()).await.unwrap();
        let mut conn = Connection::new(stream, MAX_REPLY_HEADER_LEN);
        conn.write_raw(&case.bytes).await.unwrap();
        conn.flush().await.unwrap();
        // A body case is accepted first (`continue`), refused after the body.
        let mut answer = conn.expect_message::<Reply>(GUARD).await;
        if matches!(answer, Ok(Reply::Continue { .. })) {
            answer = conn.expect_message::<Reply>(GUARD).await;
        }
        match answer {
            Ok(Reply::Error { code, .. }) if code == case.want => {}
            other => panic!("{}: expected {}, got {other:?}", case.label, case.want),
        }
        if case.closes {
            let next = conn.read_frame(GUARD).await;
            assert!(
                matches!(next, Ok(None) | Err(_)),
                "{}: connection left open",
                case.label
            );
        } else {
            conn.write_message(&Request::Ping).await.unwrap();
            let pong = conn.expect_message::<Reply>(GUARD).await;
            assert!(
                matches!(pong, Ok(Reply::Pong)),
                "{}: connection unusable: {pong:?}",
                case.label
            );
        }
        drop(conn);
        assert_nothing_written(&agent, &mut observer, &case.label).await;
    }
    eprintln!("{} protocol cases", cases.len());
}

/// What a TLS-level case expects.
enum Refusal {
    /// The TLS error (handshake or first read) mentions this.
    Alert(&'static str),
    /// The agent closes without a word of the protocol.
    Silence,
}

fn tls_config(
    ca: &rustls_pki_types::CertificateDer<'static>,
    cert: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
    alpn: &[u8],
    tls12: bool,
) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    config
}

/// Connects with `config`, sends a ping, and returns what the TLS layer or
/// the agent said (an error text), or "silence".
async fn attempt(agent: &Agent, config: ClientConfig) -> String {
    let mut stream = match tls_connect(agent.addr, Arc::new(config)).await {
        Ok(stream) => stream,
        Err(e) => return e.to_string(),
    };
    let _ = stream.write_all(&header(br#"{"op":"ping"}"#)).await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(GUARD, stream.read(&mut buf))
        .await
        .unwrap()
    {
        Err(e) => e.to_string(),
        Ok(0) => "silence".into(),
        Ok(n) => format!("answered {}", String::from_utf8_lossy(&buf[..n])),
    }
}

#[tokio::test]
async fn every_hostile_tls_client_is_refused_and_writes_nothing() {
    use fileagent::wire::protocol::{ALPN, PAIR_ALPN};
    let agent = small_agent().await;
    let other = Agent::start().await;
    let ca = agent.identity("ca-probe").ca;
    let now = OffsetDateTime::now_utc();
    let id =
        |identity: fileagent::wire::identity::Identity| Some((vec![identity.cert], identity.key));
    let expired = agent.identity_valid(
        "old",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    let future = agent.identity_valid(
        "future",
        now + time::Duration::days(1),
        now + time::Duration::days(30),
    );
    let revoked = agent.identity("revoked-laptop");
    fileagent::agent::pki::registry::revoke(&agent.config, "revoked-laptop").unwrap();
    let foreign = other.identity("mallory");
    let self_signed = {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["laptop".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Some((
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        ))
    };
    let server_as_client = {
        let creds = fileagent::agent::pki::load_agent(&agent.config.state_dir).unwrap();
        Some((vec![creds.cert], creds.key))
    };
    let chain_with_foreign_ca = {
        let f = other.identity("chained");
        Some((vec![f.cert, f.ca], f.key))
    };

    let cases: Vec<(&str, ClientConfig, Refusal)> = vec![
        (
            "no client certificate",
            tls_config(&ca, None, ALPN, false),
            Refusal::Alert("CertificateRequired"),
        ),
        (
            "certificate from another agent's CA",
            tls_config(&ca, id(foreign), ALPN, false),
            Refusal::Alert("UnknownCA"),
        ),
        (
            "foreign chain presenting its own CA",
            tls_config(&ca, chain_with_foreign_ca, ALPN, false),
            Refusal::Alert("UnknownCA"),
        ),
        (
            "self-signed certificate",
            tls_config(&ca, self_signed, ALPN, false),
            Refusal::Alert("UnknownCA"),
        ),
        (
            "expired certificate",
            tls_config(&ca, id(expired), ALPN, false),
            Refusal::Alert("CertificateExpired"),
        ),
        (
            "certificate not valid yet",
            tls_config(&ca, id(future), ALPN, false),
            // TLS has one alert for both ends of the validity period.
            Refusal::Alert("CertificateExpired"),
        ),
        (
            "revoked certificate",
            tls_config(&ca, id(revoked), ALPN, false),
            Refusal::Alert("CertificateRevoked"),
        ),
        (
            "the agent's own server certificate",
            tls_config(&ca, server_as_client, ALPN, false),
            // Server-auth only (extended key usage): not for a client.
            Refusal::Alert("UnsupportedCertificate"),
        ),
        (
            "TLS 1.2 only",
            tls_config(&ca, id(agent.identity("old-tls")), ALPN, true),
            Refusal::Alert("ProtocolVersion"),
        ),
        (
            "ALPN http/1.1",
            tls_config(&ca, id(agent.identity("web")), b"http/1.1", false),
            Refusal::Alert("NoApplicationProtocol"),
        ),
        (
            "ALPN fileagent/2",
            tls_config(
                &ca,
                id(agent.identity("future-proto")),
                b"fileagent/2",
                false,
            ),
            Refusal::Alert("NoApplicationProtocol"),
        ),
        (
            "no ALPN",
            tls_config(&ca, id(agent.identity("no-alpn")), b"", false),
            Refusal::Silence,
        ),
        (
            "pairing ALPN, then a normal request",
            tls_config(&ca, None, PAIR_ALPN, false),
            Refusal::Alert("forbidden"),
        ),
    ];
    let count = cases.len();
    let mut observer = agent.client("observer").await;
    for (label, config, want) in cases {
        let said = attempt(&agent, config).await;
        match want {
            Refusal::Alert(alert) => assert!(
                said.contains(alert),
                "{label}: expected {alert}, got {said}"
            ),
            Refusal::Silence => assert!(
                said == "silence" || said.contains("reset") || said.contains("close"),
                "{label}: {said}"
            ),
        }
        assert_nothing_written(&agent, &mut observer, label).await;
    }

    // Bytes that are not TLS at all.
    let raw_cases: [(&str, &[u8]); 4] = [
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: pi\r\n\r\n"),
        (
            "SSLv2-style hello",
            b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10",
        ),
        ("random bytes", &[0x42; 64]),
        ("a fileagent frame without TLS", br#"H{"op":"ping"}"#),
    ];
    for (label, bytes) in raw_cases {
        let mut tcp = TcpStream::connect(agent.addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(GUARD, tcp.read_to_end(&mut answer))
            .await
            .unwrap();
        assert!(
            answer.len() < 16,
            "{label}: answered {} bytes",
            answer.len()
        );
        assert_nothing_written(&agent, &mut observer, label).await;
    }
    eprintln!("{} TLS cases", count + raw_cases.len());
    observer.ping().await.unwrap();
}

#[test]
fn the_suite_has_at_least_100_cases() {
    let protocol = protocol_cases().len();
    // 13 TLS configurations and 4 raw byte streams, above.
    let total = protocol + 13 + 4;
    assert!(total >= 100, "only {total} hostile cases");
}
