//! Pairing by one-time code, revocation, listing and renewal of client
//! certificates: with the real binaries where the user would type the
//! commands, and through the library for the refusals that need a precise
//! setup (a fake agent, an expired code, a flood of attempts).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fileagent::agent::pairing::ticket::{self, Outcome};
use fileagent::wire::pairing::{DEFAULT_TTL, MAX_ATTEMPTS, MAX_REQUESTS_PER_ADDRESS, PairingCode};
use fileagent::wire::protocol::{
    Connection, ErrorCode, MAX_REPLY_HEADER_LEN, PAIR_ALPN, Reply, Request,
};
use fileagent::workstation::{Client, ClientError, pair};

use crate::cli::{Home, Served, assert_exit, assert_ok, stderr, stdout};
use crate::support::{Agent, GUARD, data, tls_connect};

/// `fileagent pair` on the agent, running: its code, and its output so far.
struct PairAgent {
    child: Child,
    code: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PairAgent {
    fn start(home: &Home, extra: &[&str]) -> PairAgent {
        let config = home.config();
        let mut args = vec!["pair", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut child = home
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        let code = loop {
            let line = lines
                .recv_timeout(GUARD)
                .expect("`fileagent pair` printed no code");
            if let Some(code) = line.strip_prefix("pairing code") {
                break code.trim().to_string();
            }
        };
        PairAgent { child, code, lines }
    }

    /// Waits for the command to end; its exit code and everything it printed after the code.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let mut text = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            text.push(line);
        }
        (status.code(), text.join("\n"))
    }
}

#[test]
fn a_workstation_pairs_with_a_code_and_sends_at_once() {
    let home = Home::new();
    let served = Served::start(&home);
    let agent_side = PairAgent::start(&home, &[]);
    assert_eq!(agent_side.code.len(), 19, "{}", agent_side.code);

    let paired = home.run(&[
        "pair",
        &served.addr,
        &agent_side.code,
        "--name",
        "pi",
        "--as",
        "lab-pc",
    ]);
    assert_ok(&paired);
    let out = stdout(&paired);
    assert!(
        out.contains("paired with") && out.contains("\"lab-pc\""),
        "{out}"
    );
    assert!(out.contains("the default agent"), "{out}");
    let (code, said) = agent_side.finish();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("paired \"lab-pc\""), "{said}");

    // The identity is private, and its key never was on the agent.
    let identity = home.path().join("xdg/fileagent/pi.pem");
    // (Unix: mode 0600; on Windows the profile's ACL guards it.)
    if !crate::support::foreign_workstation() {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&identity).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let text = std::fs::read_to_string(&identity).unwrap();
    let key = &text
        [text.find("-----BEGIN PRIVATE KEY").unwrap()..text.find("-----END PRIVATE KEY").unwrap()];
    let body: String = key.lines().skip(1).collect();
    for entry in walk(&home.path().join("state")) {
        let content = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&content)
                .replace('\n', "")
                .contains(&body),
            "{} holds the key",
            entry.display()
        );
    }

    // `--agent NAME` and the default agent both work right away.
    let cube = data("tiny.gcode");
    assert_ok(&home.run(&["send", cube.to_str().unwrap(), "--agent", "pi"]));
    assert_ok(&home.run(&["ping"]));
    let list = home.run(&[
        "client",
        "list",
        "--json",
        "--config",
        home.config().to_str().unwrap(),
    ]);
    assert_ok(&list);
    let records: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let record = &records[0];
    assert_eq!(record["name"], "lab-pc");
    assert!(record["last_seen"].is_string(), "{records}");
    assert!(record["revoked"].is_null());
    assert_eq!(record["fingerprint"].as_str().unwrap().len(), 64);
    let table = stdout(&home.run(&[
        "client",
        "list",
        "--config",
        home.config().to_str().unwrap(),
    ]));
    assert!(
        table.contains("lab-pc") && table.contains("valid"),
        "{table}"
    );
    let log = served.log();
    assert!(
        log.contains("paired a new client") && log.contains("lab-pc"),
        "{log}"
    );

    // The code is single-use.
    let again = home.run(&[
        "pair",
        &served.addr,
        &agent_side_code(&home),
        "--name",
        "pi2",
    ]);
    assert_exit(&again, 1, "used already");
}

/// The code of the one (ended) ticket in this home's agent.
fn agent_side_code(home: &Home) -> String {
    let dir = home.path().join("state/pairing");
    let entry = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap();
    let ticket: ticket::Ticket =
        serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
    ticket.code().to_string()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn wrong_codes_are_counted_and_void_the_code() {
    let home = Home::new();
    let served = Served::start(&home);
    let agent_side = PairAgent::start(&home, &["--name", "forced-name"]);
    let good = PairingCode::parse(&agent_side.code).unwrap();
    let mut wrong = good.clone();
    wrong.secret = if good.secret.starts_with('0') {
        "1".into()
    } else {
        "0".into()
    };
    wrong.secret.push_str(&good.secret[1..]);

    for left in (0..MAX_ATTEMPTS).rev() {
        let out = home.run(&["pair", &served.addr, &wrong.to_string()]);
        assert_exit(&out, 1, &format!("{left} left"));
    }
    let (code, said) = agent_side.finish();
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("void after 3 failed attempts"), "{said}");
    // Now even the right code is refused, and nothing was issued.
    assert_exit(
        &home.run(&["pair", &served.addr, &good.to_string()]),
        1,
        "void",
    );
    assert!(!home.path().join("xdg/fileagent/127.0.0.1.pem").exists());
    let list = stdout(&home.run(&[
        "client",
        "list",
        "--json",
        "--config",
        home.config().to_str().unwrap(),
    ]));
    assert_eq!(list.trim(), "[]");
    let log = served.log();
    assert!(
        log.contains("wrong code") || log.contains("gave up"),
        "{log}"
    );
    assert!(log.contains("pairing code void"), "{log}");
}

/// A code for `agent`, made as `fileagent pair` does.
fn code_for(agent: &Agent, name: Option<&str>) -> PairingCode {
    let report = fileagent::agent::pki::init(&agent.config).unwrap();
    ticket::create(
        &agent.config.state_dir,
        &report.ca_fingerprint,
        name.map(String::from),
        DEFAULT_TTL,
    )
    .unwrap()
    .code()
}

fn refused(result: Result<pair::Paired, ClientError>, want: ErrorCode) -> String {
    match result {
        Err(ClientError::Refused { code, message }) if code == want => message,
        other => panic!("expected {want}, got {other:?}"),
    }
}

#[tokio::test]
async fn expired_and_unknown_codes_are_refused() {
    let agent = Agent::start().await;
    let code = code_for(&agent, None);
    let mut t = ticket::load(&agent.config.state_dir, &code.ticket)
        .unwrap()
        .unwrap();
    t.expires = ticket::now() - 1;
    ticket::store(&agent.config.state_dir, &t).unwrap();
    let message = refused(
        pair::pair(&agent.agent_arg(), &code, "late").await,
        ErrorCode::PairingRefused,
    );
    assert!(message.contains("expired"), "{message}");
    // Expiry is checked before an attempt is counted.
    assert_eq!(
        ticket::load(&agent.config.state_dir, &code.ticket)
            .unwrap()
            .unwrap()
            .attempts,
        0
    );

    let mut unknown = code_for(&agent, None);
    unknown.ticket = if unknown.ticket == "ZZZZ" {
        "YYYY".into()
    } else {
        "ZZZZ".into()
    };
    let message = refused(
        pair::pair(&agent.agent_arg(), &unknown, "x").await,
        ErrorCode::PairingRefused,
    );
    assert!(message.contains("no pending pairing code"), "{message}");
}

#[tokio::test]
async fn the_agent_can_force_the_client_name_and_the_identity_works() {
    let agent = Agent::start().await;
    let code = code_for(&agent, Some("shop-floor"));
    let paired = pair::pair(&agent.agent_arg(), &code, "asked-for")
        .await
        .unwrap();
    assert_eq!(paired.issued.name, "shop-floor");
    let identity =
        fileagent::wire::identity::Identity::parse(paired.identity_pem.as_bytes()).unwrap();
    assert_eq!(identity.name(), "shop-floor");
    let mut client = Client::connect(&agent.agent_arg(), identity).await.unwrap();
    assert_eq!(client.status().await.unwrap().client, "shop-floor");
    let t = ticket::load(&agent.config.state_dir, &code.ticket)
        .unwrap()
        .unwrap();
    assert!(
        matches!(t.outcome, Some(Outcome::Paired { ref client, .. }) if client == "shop-floor")
    );
    // Used: refused, and an attempt on a used code is not counted.
    let message = refused(
        pair::pair(&agent.agent_arg(), &code, "again").await,
        ErrorCode::PairingRefused,
    );
    assert!(message.contains("used already"), "{message}");
}

#[tokio::test]
async fn a_fake_agent_is_detected_by_the_workstation() {
    let real = Agent::start().await;
    let fake = Agent::start().await;
    let code = code_for(&real, None);

    // Another agent (another CA) at the address: refused during the
    // handshake, before anything about the code is sent.
    let err = pair::pair(&fake.agent_arg(), &code, "victim")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ClientError::Tls { .. }) && text.contains("not the one that made the code"),
        "{text}"
    );

    // Even a fake that knows the ticket and whose CA matches the check
    // group cannot prove the secret: the exchange fails on both ends.
    let fake_fp = fileagent::wire::identity::fingerprint(&fake.identity("probe").ca);
    let fake_ticket = ticket::create(&fake.config.state_dir, &fake_fp, None, DEFAULT_TTL).unwrap();
    let mut forged = fake_ticket.clone();
    forged.ticket = code.ticket.clone();
    forged.secret = if code.secret == "00000000" {
        "11111111".into()
    } else {
        "00000000".into()
    };
    ticket::store(&fake.config.state_dir, &forged).unwrap();
    let lured = PairingCode {
        ca_check: fileagent::wire::pairing::ca_check(&fake_fp),
        ..code.clone()
    };
    let message = refused(
        pair::pair(&fake.agent_arg(), &lured, "victim").await,
        ErrorCode::WrongCode,
    );
    assert!(message.contains("does not match"), "{message}");

    // The real agent still pairs with the real code.
    pair::pair(&real.agent_arg(), &code, "victim")
        .await
        .unwrap();
}

/// A TLS client for pairing connections that trusts `agent`'s CA.
fn pairing_tls(agent: &Agent, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(agent.identity("probe").ca).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(fileagent::wire::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn a_pairing_connection_can_only_pair_and_is_rate_limited() {
    let agent = Agent::start().await;
    let tls = tls_connect(agent.addr, pairing_tls(&agent, PAIR_ALPN))
        .await
        .unwrap();
    let mut conn = Connection::new(tls, MAX_REPLY_HEADER_LEN);
    conn.write_message(&Request::Ping).await.unwrap();
    match conn.expect_message::<Reply>(GUARD).await.unwrap() {
        Reply::Error {
            code: ErrorCode::Forbidden,
            message,
        } => assert!(message.contains("only pair"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(
        conn.read_message::<Reply>(GUARD)
            .await
            .unwrap_or(None)
            .is_none(),
        "connection stays open"
    );
    for op in [
        Request::List,
        Request::Status,
        Request::Renew { csr: String::new() },
    ] {
        let tls = tls_connect(agent.addr, pairing_tls(&agent, PAIR_ALPN))
            .await
            .unwrap();
        let mut conn = Connection::new(tls, MAX_REPLY_HEADER_LEN);
        conn.write_message(&op).await.unwrap();
        assert!(matches!(
            conn.expect_message::<Reply>(GUARD).await.unwrap(),
            Reply::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ));
    }
    // An authenticated connection cannot pair.
    let mut client = agent.raw("paired-already").await;
    client
        .write_message(&Request::Pair {
            ticket: "AAAA".into(),
            name: "x".into(),
            spake: String::new(),
        })
        .await
        .unwrap();
    assert!(matches!(
        client.expect_message::<Reply>(GUARD).await.unwrap(),
        Reply::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));

    // Guessing tickets from one address: refused, then rate limited.
    let mut code = code_for(&agent, None);
    code.ticket = "0000".into();
    for _ in 0..MAX_REQUESTS_PER_ADDRESS {
        refused(
            pair::pair(&agent.agent_arg(), &code, "guess").await,
            ErrorCode::PairingRefused,
        );
    }
    let message = refused(
        pair::pair(&agent.agent_arg(), &code, "guess").await,
        ErrorCode::RateLimited,
    );
    assert!(message.contains("too many pairing attempts"), "{message}");
}

#[test]
fn a_revoked_client_is_refused_while_others_keep_working() {
    let home = Home::new();
    let served = Served::start(&home);
    let alice = home.issue("alice");
    let bob = home.issue("bob");
    let ping = |id: &std::path::Path| {
        home.run(&[
            "ping",
            "--agent",
            &served.addr,
            "--identity",
            id.to_str().unwrap(),
        ])
    };
    assert_ok(&ping(&alice));
    assert_ok(&ping(&bob));

    let config = home.config();
    let revoked = home.run(&[
        "client",
        "revoke",
        "alice",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_ok(&revoked);
    assert!(
        stdout(&revoked).contains("revoked \"alice\""),
        "{}",
        stdout(&revoked)
    );
    // The running agent refuses alice from the next connection on, at the TLS level.
    assert_exit(&ping(&alice), 3, "revoked");
    assert_ok(&ping(&bob));
    let log = served.log();
    assert!(
        log.contains("refused a revoked client certificate") && log.contains("alice"),
        "{log}"
    );

    let list: serde_json::Value = serde_json::from_str(&stdout(&home.run(&[
        "client",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ])))
    .unwrap();
    let by_name = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()
            .clone()
    };
    assert!(by_name("alice")["revoked"].is_string());
    assert!(by_name("bob")["revoked"].is_null() && by_name("bob")["last_seen"].is_string());
    // Again: nothing to do; unknown: a usage error naming the list command.
    assert!(
        stdout(&home.run(&[
            "client",
            "revoke",
            "alice",
            "--config",
            config.to_str().unwrap()
        ]))
        .contains("already revoked")
    );
    assert_exit(
        &home.run(&[
            "client",
            "revoke",
            "carol",
            "--config",
            config.to_str().unwrap(),
        ]),
        2,
        "client list",
    );
}

#[test]
fn a_certificate_near_expiry_is_renewed_by_the_workstation() {
    let home = Home::new();
    let config = home.config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    // Shorter than the 30 days before expiry at which workstations renew.
    text.push_str("client_cert_lifetime = \"20days\"\n");
    std::fs::write(&config, text).unwrap();
    let served = Served::start(&home);
    let identity = home.issue("short-lived");
    let before = std::fs::read_to_string(&identity).unwrap();

    let out = home.run(&[
        "ping",
        "--agent",
        &served.addr,
        "--identity",
        identity.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("renewed this workstation's certificate"),
        "{}",
        stderr(&out)
    );
    let after = std::fs::read_to_string(&identity).unwrap();
    assert_ne!(before, after);
    let old = fileagent::wire::identity::Identity::parse(before.as_bytes()).unwrap();
    let new = fileagent::wire::identity::Identity::parse(after.as_bytes()).unwrap();
    assert_ne!(old.cert, new.cert);
    assert_ne!(
        old.key.secret_der(),
        new.key.secret_der(),
        "a new key with the new certificate"
    );
    assert_eq!(new.name(), "short-lived");
    // The renewed identity works, and the agent lists both certificates.
    assert_ok(&home.run(&[
        "status",
        "--agent",
        &served.addr,
        "--identity",
        identity.to_str().unwrap(),
    ]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&home.run(&[
        "client",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ])))
    .unwrap();
    assert!(list.as_array().unwrap().len() >= 2, "{list}");
    assert!(served.log().contains("renewed the client certificate"));
}

/// Issue 21: pairing a workstation again under its name revokes its
/// earlier certificate (it no longer works, the agent says so); the code's
/// expiry reads as a clock time, and an agent on loopback only is paired
/// from this machine, as the hint says.
#[test]
fn pairing_again_revokes_the_earlier_certificate() {
    let home = Home::new();
    let served = Served::start(&home);
    let pair =
        |code: &str| home.run(&["pair", &served.addr, code, "--name", "pi", "--as", "lab-pc"]);
    let first = PairAgent::start(&home, &[]);
    assert_ok(&pair(&first.code));
    let (code, said) = first.finish();
    assert_eq!(code, Some(0), "{said}");
    let until = said
        .split("(until ")
        .nth(1)
        .and_then(|rest| rest.split(" UTC)").next())
        .unwrap_or_default();
    assert!(
        until.len() == 8 && until.as_bytes()[2] == b':' && until.as_bytes()[5] == b':',
        "{said}"
    );
    assert!(
        said.contains("on this machine (the agent listens on 127.0.0.1:")
            && said.contains("fileagent pair localhost:"),
        "{said}"
    );
    let identity = home.path().join("xdg/fileagent/pi.pem");
    let old = home.path().join("old.pem");
    std::fs::copy(&identity, &old).unwrap();

    let second = PairAgent::start(&home, &[]);
    assert_ok(&pair(&second.code));
    let (code, said) = second.finish();
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("revoked the earlier certificate of \"lab-pc\""),
        "{said}"
    );
    let refused = home.run(&["ping", "--identity", old.to_str().unwrap()]);
    assert_exit(&refused, 3, "revoked");
    assert_ok(&home.run(&["ping"]));
}
