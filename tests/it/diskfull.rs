//! A full disk: the agent's spool on an 8 MiB tmpfs of its own (a private
//! mount namespace made with `unshare`, so the test needs no mount of its
//! own). A file larger than the disk is refused before its body; a disk
//! that fills up after an upload was accepted (another process writes a
//! filler) gives the client a clear `no_space` when its body comes, leaves
//! nothing behind, and the agent keeps serving; once space is freed, files
//! are stored again; and an upload whose body has begun holds its blocks,
//! so a disk filling under it fails the filler, not the upload.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fileagent::wire::identity::Identity;
use fileagent::wire::protocol::{ErrorCode, Reply, Request};
use fileagent::workstation::{Client, ClientError, Compression};

use crate::cli::{Home, Served};
use crate::support::{GUARD, content, fileagent_command, poll, sha256};

/// Runs the agent with its spool on a fresh 8 MiB tmpfs. On `fill` in
/// `signals/` the wrapper writes a 7 MiB filler into the spool (as much of
/// it as fits) and answers `filled`; on `free` it removes the filler and
/// answers `freed`; as often as asked.
fn serve_on_tmpfs(home: &Home, signals: &Path) -> Served {
    let agent = fileagent_command();
    let spool = home.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let script = r#"
        set -e
        mount -t tmpfs -o size=8m fileagent-test "$SPOOL"
        "$@" &
        agent=$!
        # Stopped (SIGTERM) or done: the agent goes too, not left behind.
        trap 'kill $agent 2>/dev/null' EXIT
        trap 'exit 143' TERM INT
        while :; do
            until [ -e "$SIGNALS/fill" ]; do kill -0 $agent || exit 1; sleep 0.02; done
            rm "$SIGNALS/fill"
            head -c 7340032 /dev/zero > "$SPOOL/filler" 2>/dev/null || true
            touch "$SIGNALS/filled"
            until [ -e "$SIGNALS/free" ]; do kill -0 $agent || exit 1; sleep 0.02; done
            rm "$SIGNALS/free" "$SPOOL/filler"
            touch "$SIGNALS/freed"
        done
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

/// The agent's answer to a `send` on `conn`, which must be `continue`: the
/// offset it resumes from.
async fn accepted<S>(conn: &mut fileagent::wire::protocol::Connection<S>) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match conn.expect_message::<Reply>(GUARD).await.unwrap() {
        Reply::Continue { offset, .. } => offset as usize,
        other => panic!("expected continue, got {other:?}"),
    }
}

fn signal_and_wait(signals: &Path, send: &str, answer: &str) {
    std::fs::write(signals.join(send), b"").unwrap();
    let deadline = std::time::Instant::now() + GUARD;
    while !signals.join(answer).exists() {
        assert!(std::time::Instant::now() < deadline, "no {answer}");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(signals.join(answer)).unwrap();
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
    let tls = fileagent::wire::tls::client_config(identity).unwrap();
    let raw = || async {
        let stream = crate::support::tls_connect(served.addr.parse().unwrap(), tls.clone())
            .await
            .unwrap();
        fileagent::wire::protocol::Connection::new(
            stream,
            fileagent::wire::protocol::MAX_REPLY_HEADER_LEN,
        )
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
        confirm: false,
        progress: false,
        print: None,
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

    // The disk fills once a 6 MiB upload is accepted, before its body.
    conn.write_message(&request("mid.gcode", &body))
        .await
        .unwrap();
    assert_eq!(accepted(&mut conn).await, 0);
    signal_and_wait(signals.path(), "fill", "filled");
    conn.write_chunk(&body).await.unwrap();
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
    let incoming =
        || -> Vec<std::fs::DirEntry> { std::fs::read_dir(&inside).unwrap().flatten().collect() };
    let left: Vec<_> = incoming().iter().map(|e| e.file_name()).collect();
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

    // A 4 MiB upload whose first megabyte is in holds the blocks of all of
    // it: the filler that comes next gets the rest of the disk.
    let held = content(4, 4 << 20);
    let mut cut = raw().await;
    cut.write_message(&request("held.gcode", &held))
        .await
        .unwrap();
    assert_eq!(accepted(&mut cut).await, 0);
    cut.write_chunk(&held[..1 << 20]).await.unwrap();
    cut.flush().await.unwrap();
    let reserved = poll(GUARD, Duration::from_millis(10), async || {
        incoming()
            .iter()
            .any(|e| e.metadata().unwrap().blocks() * 512 >= held.len() as u64)
            .then_some(())
    })
    .await;
    assert!(reserved.is_some(), "no blocks reserved");
    signal_and_wait(signals.path(), "fill", "filled");
    let filler = std::fs::metadata(inside.parent().unwrap().join("filler"))
        .unwrap()
        .len();
    assert!(filler < 3 << 20, "the filler got {filler} bytes");

    // Cut off there, its partial file keeps the blocks: sent again on the
    // full disk, it resumes (what the partial holds is not asked for
    // twice) and is stored whole.
    drop(cut);
    let idle = poll(GUARD, Duration::from_millis(10), async || {
        (client.status().await.unwrap().incoming == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "the cut upload still runs");
    conn.write_message(&request("held.gcode", &held))
        .await
        .unwrap();
    let offset = accepted(&mut conn).await;
    assert!(offset > 0, "nothing kept");
    conn.write_chunk(&held[offset..]).await.unwrap();
    conn.write_end().await.unwrap();
    match conn.expect_message::<Reply>(GUARD).await.unwrap() {
        Reply::Stored {
            size, sha256: got, ..
        } => assert_eq!((size, got), (held.len() as u64, sha256(&held))),
        other => panic!("expected stored, got {other:?}"),
    }
    client
        .get("held.gcode", &back, true, &mut ())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), held);
    let log = served.log();
    assert!(!log.contains("panicked"), "{log}");
}
