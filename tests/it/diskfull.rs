//! A full disk: the agent's spool on an 8 MiB tmpfs of its own (a private
//! mount namespace made with `unshare`, so the test needs no mount of its
//! own). A file larger than the disk is refused before its body; a disk
//! that fills up under a running upload (another process writes a filler)
//! gives the client a clear `no_space`, leaves nothing behind, and the
//! agent keeps serving; once space is freed, files are stored again.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fileagent::client::{Client, ClientError, Compression};
use fileagent::identity::Identity;
use fileagent::protocol::{ErrorCode, Reply, Request};

use crate::cli::{Home, Served};
use crate::support::{GUARD, content, fileagent_command, sha256};

/// Runs the agent with its spool on a fresh 8 MiB tmpfs. On `fill` in
/// `signals/` the wrapper writes a 7 MiB filler into the spool and answers
/// `filled`; on `free` it removes the filler and answers `freed`.
fn serve_on_tmpfs(home: &Home, signals: &Path) -> Served {
    let agent = fileagent_command();
    let spool = home.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let script = r#"
        set -e
        mount -t tmpfs -o size=8m fileagent-test "$SPOOL"
        "$@" &
        agent=$!
        trap 'kill $agent 2>/dev/null' EXIT
        until [ -e "$SIGNALS/fill" ]; do kill -0 $agent || exit 1; sleep 0.02; done
        head -c 7340032 /dev/zero > "$SPOOL/filler" 2>/dev/null || true
        touch "$SIGNALS/filled"
        until [ -e "$SIGNALS/free" ]; do kill -0 $agent || exit 1; sleep 0.02; done
        rm -f "$SPOOL/filler"
        touch "$SIGNALS/freed"
        wait $agent
    "#;
    let mut cmd = Command::new("unshare");
    // As root a mount namespace is enough; otherwise map this user to root
    // in a user namespace of its own.
    if !rustix::process::geteuid().is_root() {
        cmd.arg("--map-root-user");
    }
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(agent.get_program())
    .args(agent.get_args())
    .args(["serve", "--config", home.config().to_str().unwrap()])
    .envs(agent.get_envs().filter_map(|(k, v)| Some((k, v?))))
    .env("SPOOL", &spool)
    .env("SIGNALS", signals)
    .env_remove("RUST_LOG")
    .current_dir(home.path());
    Served::spawn(cmd)
}

fn signal_and_wait(signals: &Path, send: &str, answer: &str) {
    std::fs::write(signals.join(send), b"").unwrap();
    let deadline = std::time::Instant::now() + GUARD;
    while !signals.join(answer).exists() {
        assert!(std::time::Instant::now() < deadline, "no {answer}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_a_clear_no_space_and_the_agent_keeps_serving() {
    let home = Home::new();
    let config = home.config();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("min_free_space = \"1 MiB\"", "min_free_space = \"0 B\"");
    std::fs::write(&config, text).unwrap();
    let identity = Identity::load(&home.issue("disk-filler")).unwrap();
    // Made before any connection: slow under emulation.
    let big = content(1, 12 << 20);
    let body = content(2, 6 << 20);
    let signals = tempfile::tempdir().unwrap();
    let served = serve_on_tmpfs(&home, signals.path());
    let tls = fileagent::tls::client_config(identity).unwrap();
    let raw = || async {
        let stream = crate::support::tls_connect(served.addr.parse().unwrap(), tls.clone())
            .await
            .unwrap();
        fileagent::protocol::Connection::new(stream, fileagent::protocol::MAX_REPLY_HEADER_LEN)
    };

    // Larger than the whole disk: refused before the body.
    let mut conn = raw().await;
    let request = |name: &str, body: &[u8]| Request::Send {
        name: name.into(),
        size: body.len() as u64,
        sha256: Some(sha256(body)),
        overwrite: false,
        encoding: None,
        resume: true,
    };
    conn.write_message(&request("big.gcode", &big))
        .await
        .unwrap();
    match conn.expect_message::<Reply>(GUARD).await.unwrap() {
        Reply::Error {
            code: ErrorCode::NoSpace,
            message,
        } => assert!(message.contains("free"), "{message}"),
        other => panic!("{other:?}"),
    }

    // The disk fills while a 6 MiB upload runs.
    conn.write_message(&request("mid.gcode", &body))
        .await
        .unwrap();
    assert!(matches!(
        conn.expect_message::<Reply>(GUARD).await.unwrap(),
        Reply::Continue { .. }
    ));
    conn.write_chunk(&body[..1 << 20]).await.unwrap();
    conn.flush().await.unwrap();
    signal_and_wait(signals.path(), "fill", "filled");
    conn.write_chunk(&body[1 << 20..]).await.unwrap();
    conn.write_end().await.unwrap();
    let message = match conn.expect_message::<Reply>(GUARD).await.unwrap() {
        Reply::Error {
            code: ErrorCode::NoSpace,
            message,
        } => message,
        other => panic!("expected no_space, got {other:?}"),
    };
    assert!(
        message.contains("disk") || message.contains("space"),
        "{message}"
    );

    // Still serving on the same connection; nothing of the upload is left.
    let identity = Identity::load(&home.path().join("disk-filler.pem")).unwrap();
    let mut client = Client::connect(&served.addr, identity).await.unwrap();
    client.set_compression(Compression::Never);
    let status = client.status().await.unwrap();
    assert_eq!((status.incoming, status.ready), (0, 0), "{status:?}");
    assert!(client.list().await.unwrap().is_empty());
    // Seen through the agent's own mount namespace: incoming/ is empty too
    // (no partial body kept on a full disk).
    let inside = Path::new("/proc")
        .join(served.child.id().to_string())
        .join("root")
        .join(home.path().strip_prefix("/").unwrap())
        .join("spool/incoming");
    let left: Vec<_> = std::fs::read_dir(&inside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        inside.parent().unwrap().join("filler").exists(),
        "the filler is on the same tmpfs"
    );
    conn.write_message(&Request::Ping).await.unwrap();
    assert_eq!(
        conn.expect_message::<Reply>(GUARD).await.unwrap(),
        Reply::Pong
    );

    // The CLI's library client is told the same, in words.
    let small = home.path().join("small.gcode");
    std::fs::write(&small, content(3, 2 << 20)).unwrap();
    match client
        .send_file(&small, "small.gcode", false, &mut ())
        .await
    {
        Err(ClientError::Refused {
            code: ErrorCode::NoSpace,
            message,
        }) => {
            assert!(message.contains("free space"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // Space again: stored, and intact.
    signal_and_wait(signals.path(), "free", "freed");
    client
        .send_file(&small, "small.gcode", false, &mut ())
        .await
        .unwrap();
    let back = home.path().join("back.gcode");
    client
        .get("small.gcode", &back, false, &mut ())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&small).unwrap()
    );
    let log = served.log();
    assert!(!log.contains("panicked"), "{log}");
}
