//! Resuming interrupted sends: the agent keeps the partial body under the
//! file's digest and size, the client sends only the rest, the whole-file
//! SHA-256 is still checked; a damaged partial body is dropped and the file
//! sent whole; with resuming off nothing is kept; a partial body nobody
//! resumes goes once its time is up; over a slow link a large send is
//! resumable long before its end; Ctrl-C in `fileagent send` says when
//! sending again resumes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fileagent::wire::protocol::{DIGEST_LEN, ErrorCode, Reply, Request};
use fileagent::workstation::{Client, ClientError, Compression};

use crate::support::{Agent, GUARD, SlowLink, content, data, poll, reply, sha256};

/// A plain `send` of `content` that offers to resume.
fn resumable_send(name: &str, content: &[u8]) -> Request {
    Request::Send {
        name: name.into(),
        size: content.len() as u64,
        sha256: Some(sha256(content)),
        overwrite: false,
        encoding: None,
        resume: true,
        confirm: false,
        progress: false,
        print: None,
    }
}

/// Starts a resumable send of `content` on a raw connection, delivers the
/// first `part` bytes and drops the connection; returns once the agent
/// holds them and has let go of the partial file.
async fn interrupt(agent: &Agent, name: &str, content: &[u8], part: usize) {
    let mut conn = agent.raw("flaky-wifi").await;
    conn.write_message(&resumable_send(name, content))
        .await
        .unwrap();
    assert!(matches!(
        reply(&mut conn).await,
        Reply::Continue {
            offset: 0,
            keeps: true,
            ..
        }
    ));
    conn.write_chunk(&content[..part]).await.unwrap();
    conn.flush().await.unwrap();
    drop(conn);
    let partial = partial_of(agent, content);
    let held = held_once_idle(agent, &partial).await;
    assert_eq!(held, part as u64, "bytes kept in {}", partial.display());
}

/// Where the agent keeps the partial body of an upload of `content`.
fn partial_of(agent: &Agent, content: &[u8]) -> PathBuf {
    let name = format!("{}-{}.partial", sha256(content), content.len());
    agent.config.spool_dir.join("incoming").join(name)
}

/// Waits until the agent runs no upload and holds `partial`; returns its
/// size.
async fn held_once_idle(agent: &Agent, partial: &Path) -> u64 {
    let mut client = agent.client("observer").await;
    let held = poll(GUARD, Duration::from_millis(20), async || {
        let receiving = client.status().await.unwrap().incoming;
        let held = std::fs::metadata(partial).map(|m| m.len());
        (receiving == 0).then_some(held).and_then(Result::ok)
    })
    .await;
    held.unwrap_or_else(|| panic!("the agent kept no {}", partial.display()))
}

/// `fileagent send` of the file at `path` (holding `original`) as
/// cube.gcode continues after the `from` bytes the agent kept, and stores
/// the file whole.
async fn sending_again_resumes(agent: &Agent, path: &Path, original: &[u8], from: u64) {
    let mut client = agent.client("flaky-wifi").await;
    client.set_compression(Compression::Never);
    let sent = client
        .send_file(path, "cube.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!(sent.resumed_from, from);
    assert_eq!(sent.wire_bytes, original.len() as u64 - from);
    assert_eq!(agent.read_ready("cube.gcode"), original);
    assert!(agent.incoming().is_empty(), "{:?}", agent.incoming());
}

#[tokio::test]
async fn an_interrupted_send_resumes_where_it_stopped() {
    let agent = Agent::start().await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();
    interrupt(&agent, "cube.gcode", &original, 300_000).await;

    sending_again_resumes(&agent, &path, &original, 300_000).await;
}

#[tokio::test]
async fn a_partial_body_survives_an_agent_restart_and_resumes_compressed() {
    let mut agent = Agent::start().await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();
    interrupt(&agent, "cube.gcode", &original, 500_000).await;
    agent.restart().await;

    let mut client = agent.client("flaky-wifi").await;
    let sent = client
        .send_file(&path, "cube.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!(sent.resumed_from, 500_000);
    assert!(
        sent.encoding.is_some() && sent.wire_bytes < 314_814 / 2,
        "{sent:?}"
    );
    assert_eq!(agent.read_ready("cube.gcode"), original);
}

#[tokio::test]
async fn a_damaged_partial_body_is_dropped_and_the_file_sent_whole() {
    let agent = Agent::start().await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();
    interrupt(&agent, "cube.gcode", &original, 400_000).await;
    let incoming = agent.config.spool_dir.join("incoming");
    let partial = incoming.join(&agent.incoming()[0]);
    // What a power cut can leave: the right length, zeros inside.
    let mut held = std::fs::read(&partial).unwrap();
    held[1000..5000].fill(0);
    std::fs::write(&partial, held).unwrap();

    let mut client = agent.client("flaky-wifi").await;
    client.set_compression(Compression::Never);
    let sent = client
        .send_file(&path, "cube.gcode", false, &mut ())
        .await
        .unwrap();
    assert_eq!(
        (sent.resumed_from, sent.wire_bytes),
        (0, original.len() as u64)
    );
    assert_eq!(agent.read_ready("cube.gcode"), original);
    assert!(agent.incoming().is_empty());
}

#[tokio::test]
async fn with_resuming_off_nothing_is_kept() {
    let agent = Agent::start_with(|c| c.keep_partial_uploads = Duration::ZERO).await;
    let original = std::fs::read(data("cube-20mm.gcode")).unwrap();
    let mut conn = agent.raw("flaky-wifi").await;
    conn.write_message(&resumable_send("cube.gcode", &original))
        .await
        .unwrap();
    // The client is told, so it does not promise a resume.
    assert_eq!(
        reply(&mut conn).await,
        Reply::Continue {
            encoding: None,
            offset: 0,
            keeps: false
        }
    );
    conn.write_chunk(&original[..100_000]).await.unwrap();
    conn.flush().await.unwrap();
    drop(conn);
    let mut client = agent.client("observer").await;
    let gone = poll(GUARD, Duration::from_millis(20), async || {
        (client.status().await.unwrap().incoming == 0 && agent.incoming().is_empty()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "{:?}", agent.incoming());
}

#[tokio::test]
async fn a_partial_body_nobody_resumes_is_removed_once_its_time_is_up() {
    let keep = Duration::from_secs(4);
    let agent = Agent::start_with(|c| c.keep_partial_uploads = keep).await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();
    interrupt(&agent, "cube.gcode", &original, 300_000).await;
    let incoming = agent.config.spool_dir.join("incoming");
    let partial = incoming.join(&agent.incoming()[0]);
    let written = std::fs::metadata(&partial).unwrap().modified().unwrap();

    // No upload and no restart comes: the agent's own sweep removes it.
    let gone = poll(GUARD, Duration::from_millis(100), async || {
        agent.incoming().is_empty().then(std::time::SystemTime::now)
    })
    .await
    .unwrap_or_else(|| panic!("{} is still kept", partial.display()));
    let kept = gone.duration_since(written).unwrap();
    assert!(kept >= keep, "removed after {kept:?}, before its {keep:?}");

    // Sending again starts from the beginning.
    sending_again_resumes(&agent, &path, &original, 0).await;
}

/// Waits until the agent runs no upload and `incoming/` holds `want`.
async fn settle(agent: &Agent, want: &[String]) {
    let mut client = agent.client("observer").await;
    let settled = poll(GUARD, Duration::from_millis(20), async || {
        let receiving = client.status().await.unwrap().incoming;
        (receiving == 0 && agent.incoming() == want).then_some(())
    })
    .await;
    assert!(settled.is_some(), "incoming/ holds {:?}", agent.incoming());
}

#[tokio::test]
async fn a_send_hashed_while_sending_is_resumable_once_its_digest_arrived() {
    let agent = Agent::start().await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();
    let digest = sha256(&original);
    let late_send = Request::Send {
        name: "cube.gcode".into(),
        size: original.len() as u64,
        sha256: None,
        overwrite: false,
        encoding: None,
        resume: true,
        confirm: false,
        progress: false,
        print: None,
    };
    // Cut before the digest frame: nothing to resume from.
    let mut conn = agent.raw("flaky-wifi").await;
    conn.write_message(&late_send).await.unwrap();
    assert!(matches!(
        reply(&mut conn).await,
        Reply::Continue {
            offset: 0,
            keeps: true,
            ..
        }
    ));
    conn.write_chunk(&original[..100_000]).await.unwrap();
    conn.flush().await.unwrap();
    drop(conn);
    settle(&agent, &[]).await;

    // Cut after it: the body so far is the partial file of that digest.
    let mut conn = agent.raw("flaky-wifi").await;
    conn.write_message(&late_send).await.unwrap();
    assert!(matches!(
        reply(&mut conn).await,
        Reply::Continue {
            offset: 0,
            keeps: true,
            ..
        }
    ));
    let mut raw = [0u8; DIGEST_LEN];
    hex::decode_to_slice(&digest, &mut raw).unwrap();
    conn.write_chunk(&original[..200_000]).await.unwrap();
    conn.write_digest(&raw).await.unwrap();
    conn.write_chunk(&original[200_000..300_000]).await.unwrap();
    conn.flush().await.unwrap();
    drop(conn);
    settle(&agent, &[format!("{digest}-{}.partial", original.len())]).await;

    sending_again_resumes(&agent, &path, &original, 300_000).await;
}

#[tokio::test]
async fn the_client_hashes_large_files_while_sending_them() {
    let agent = Agent::start().await;
    let path = data("cube-20mm.gcode");
    let original = std::fs::read(&path).unwrap();
    for compression in [Compression::Never, Compression::Always] {
        // A new client: one that hashed the file already sends the digest first.
        let mut client = agent.client("desk").await;
        client.set_hash_while_sending_min(0);
        client.set_compression(compression);
        let name = format!("{compression:?}.gcode");
        let sent = client
            .send_file(&path, &name, false, &mut ())
            .await
            .unwrap();
        assert_eq!(sent.sha256, sha256(&original));
        assert!(!sent.unchanged);
        assert_eq!(agent.read_ready(&name), original);
    }
    // The same name again: the digest, sent in the header this time,
    // finds the identical file, or refuses a different one.
    let mut again = agent.client("desk").await;
    again.set_hash_while_sending_min(0);
    let sent = again
        .send_file(&path, "Never.gcode", false, &mut ())
        .await
        .unwrap();
    assert!(sent.unchanged);
    let other = agent.config.spool_dir.join("other.gcode");
    std::fs::write(&other, b"G28 ; not the cube\n").unwrap();
    let refused = again
        .send_file(&other, "Never.gcode", false, &mut ())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::Refused {
                code: ErrorCode::Exists,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(agent.read_ready("Never.gcode"), original);
    assert!(agent.incoming().is_empty(), "{:?}", agent.incoming());
}

/// Over a slow uplink, the client's reader hashes ahead of the connection,
/// so a large file's digest reaches the agent early and an outage from then
/// on costs only what had not arrived.
#[tokio::test]
async fn over_a_slow_link_a_large_send_is_resumable_long_before_its_end() {
    const LEN: usize = 32 << 20;
    const RATE: u64 = 2 << 20; // bytes per second: the whole body would take 16 s
    let agent = Agent::start().await;
    let original = content(7, LEN);
    let path = agent.config.spool_dir.join("plate.gcode");
    std::fs::write(&path, &original).unwrap();
    let partial = partial_of(&agent, &original);

    let link = SlowLink::start(agent.addr, RATE).await;
    let mut client = Client::connect(&link.addr.to_string(), agent.identity("flaky-wifi"))
        .await
        .unwrap();
    client.set_hash_while_sending_min(0);
    client.set_compression(Compression::Never);
    let sending = {
        let path = path.clone();
        tokio::spawn(async move { client.send_file(&path, "cube.gcode", false, &mut ()).await })
    };
    // The partial file appears, under the digest, when the digest arrives.
    let arrived_at = poll(GUARD, Duration::from_millis(20), async || {
        std::fs::metadata(&partial).ok().map(|m| m.len())
    })
    .await
    .expect("the digest never reached the agent");
    assert!(
        arrived_at < LEN as u64 / 2,
        "the digest came only after {arrived_at} of {LEN} bytes"
    );
    link.cut();
    let cut_off = sending.await.unwrap();
    assert!(cut_off.is_err(), "{cut_off:?}");

    let held = held_once_idle(&agent, &partial).await;
    assert!(held >= arrived_at && held < LEN as u64, "kept {held} bytes");
    sending_again_resumes(&agent, &path, &original, held).await;
}

/// `fileagent send PATH --agent TO --identity IDENTITY --no-retry MORE...`,
/// its output piped.
fn send_cmd(
    home: &crate::cli::Home,
    path: &Path,
    identity: &Path,
    to: &str,
    more: &[&str],
) -> std::process::Command {
    let mut args = vec![
        "send",
        path.to_str().unwrap(),
        "--agent",
        to,
        "--identity",
        identity.to_str().unwrap(),
        "--no-retry",
    ];
    args.extend_from_slice(more);
    let mut cmd = home.cmd(&args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// How a test stops `fileagent send` in the middle of its body.
enum Stop {
    CtrlC,
    /// The link goes down, and the command does not retry.
    Outage,
}

/// `fileagent send` of an 8 MiB file over a slow link, stopped by `stop`
/// once its body reaches the agent, exits with `code` and says `message`;
/// the same command then resumes where the agent's partial body ends, or
/// (on an agent that does not `keep` partial uploads) sends it whole.
async fn cli_send_stopped(stop: Stop, keep: bool, code: i32, message: &str) {
    const LEN: usize = 8 << 20;
    let agent = if keep {
        Agent::start().await
    } else {
        Agent::start_with(|c| c.keep_partial_uploads = Duration::ZERO).await
    };
    let home = crate::cli::Home::new();
    let identity = home.path().join("id.pem");
    std::fs::write(&identity, agent.identity_pem("impatient")).unwrap();
    let original = content(11, LEN);
    let path = home.path().join("plate.gcode");
    std::fs::write(&path, &original).unwrap();
    let partial = partial_of(&agent, &original);
    // 1 MiB/s: the body would take 8 s.
    let link = SlowLink::start(agent.addr, 1 << 20).await;
    let send = |to: &str| send_cmd(&home, &path, &identity, to, &["--compress", "never"]);
    let child = send(&link.addr.to_string()).spawn().unwrap();
    // The body has begun once the agent writes to the file's partial body
    // (or, not keeping one, to its temp file).
    let incoming = partial.parent().unwrap().to_path_buf();
    poll(GUARD, Duration::from_millis(20), async || {
        let file = if keep {
            Some(partial.clone())
        } else {
            let mut files = std::fs::read_dir(&incoming).ok()?;
            files.next().and_then(Result::ok).map(|f| f.path())
        };
        std::fs::metadata(file?).ok().filter(|m| m.len() > 0)
    })
    .await
    .expect("the body never reached the agent");
    match stop {
        Stop::CtrlC => rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::INT,
        )
        .unwrap(),
        Stop::Outage => link.cut(),
    }
    let stopped = tokio::task::spawn_blocking(|| child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    crate::cli::assert_exit(&stopped, code, message);
    // What the link still held is delivered; then the agent lets go.
    link.cut();
    if keep {
        let held = held_once_idle(&agent, &partial).await;
        assert!(held > 0 && held < LEN as u64, "kept {held} bytes");
    } else {
        let mut client = agent.client("observer").await;
        let gone = poll(GUARD, Duration::from_millis(20), async || {
            (client.status().await.unwrap().incoming == 0 && agent.incoming().is_empty())
                .then_some(())
        })
        .await;
        assert!(gone.is_some(), "{:?}", agent.incoming());
    }

    let mut again = send(&agent.agent_arg());
    let again = tokio::task::spawn_blocking(move || again.output())
        .await
        .unwrap()
        .unwrap();
    crate::cli::assert_ok(&again);
    let said = crate::cli::stdout(&again);
    assert_eq!(said.contains("resumed after"), keep, "{said}");
    assert_eq!(agent.read_ready("plate.gcode"), original);
}

/// Ctrl-C in the middle of a body the agent can resume says so.
#[tokio::test]
async fn ctrl_c_during_a_resumable_send_says_how_to_resume() {
    cli_send_stopped(
        Stop::CtrlC,
        true,
        130,
        "interrupted; nothing was stored; the agent keeps what it received: send the same file again to resume",
    )
    .await;
}

/// A send the network cut off, retries spent, says the same.
#[tokio::test]
async fn a_send_cut_off_after_its_digest_arrived_says_how_to_resume() {
    cli_send_stopped(
        Stop::Outage,
        true,
        3,
        "failed (the agent keeps what it received: send the same file again to resume where it \
         stopped): transfer with the agent failed",
    )
    .await;
}

/// An agent that keeps no partial uploads has the client say so.
#[tokio::test]
async fn ctrl_c_when_the_agent_keeps_nothing_promises_no_resume() {
    cli_send_stopped(
        Stop::CtrlC,
        false,
        130,
        "interrupted; nothing was stored, and nothing partial was kept",
    )
    .await;
}

/// A send cut off by the network promises no resume either.
#[tokio::test]
async fn a_send_cut_off_when_the_agent_keeps_nothing_promises_no_resume() {
    cli_send_stopped(
        Stop::Outage,
        false,
        3,
        "failed: transfer with the agent failed",
    )
    .await;
}

/// Defect 3 of issue 21: Ctrl-C after the whole (compressed) body has left
/// the workstation, while the slow link still holds it. The link delivers
/// every byte afterwards, yet nothing is stored: storing needs the client's
/// final word (`commit` after `verified`). The agent keeps the complete
/// body, and the same send then completes without sending it again.
#[tokio::test]
async fn ctrl_c_after_the_whole_body_left_stores_nothing() {
    let agent = Agent::start().await;
    let home = crate::cli::Home::new();
    let identity = home.path().join("id.pem");
    std::fs::write(&identity, agent.identity_pem("impatient")).unwrap();
    let original = std::fs::read(data("cube-20mm.gcode")).unwrap();
    let path = home.path().join("cube.gcode");
    std::fs::write(&path, &original).unwrap();
    let partial = partial_of(&agent, &original);
    // The handshake, the request and the body's first bytes pass; the rest
    // (the zstd body is about 150 KiB) waits in the link.
    let link = SlowLink::holding(agent.addr, 1 << 20, 24 * 1024).await;
    let send = |to: &str| send_cmd(&home, &path, &identity, to, &[]);
    let mut child = send(&link.addr.to_string())
        .env("RUST_LOG", "fileagent::workstation=debug")
        .spawn()
        .unwrap();
    // The client says when its whole body is handed to the network.
    let stderr = child.stderr.take().unwrap();
    let (seen, said) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("body handed to the network") {
                let _ = seen.send(());
            }
            lines.push(line);
        }
        lines
    });
    let handed = tokio::task::spawn_blocking(move || said.recv_timeout(GUARD))
        .await
        .unwrap();
    assert!(handed.is_ok(), "the client never finished writing its body");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let stopped = tokio::task::spawn_blocking(|| child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let lines = reader.join().unwrap();
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.contains("interrupted; nothing was stored; the agent keeps what it received"),
        "{lines:?}"
    );
    assert_eq!(stopped.status.code(), Some(130));
    // Everything the link held reaches the agent now.
    link.release();
    let held = held_once_idle(&agent, &partial).await;
    assert_eq!(held, original.len() as u64, "the whole body arrived");
    assert!(agent.ready().is_empty(), "stored: {:?}", agent.ready());
    let mut client = agent.client("observer").await;
    assert!(client.list().await.unwrap().is_empty());

    // Sent again: nothing more to send, then stored.
    let mut again = send(&agent.agent_arg());
    let again = tokio::task::spawn_blocking(move || again.output())
        .await
        .unwrap()
        .unwrap();
    crate::cli::assert_ok(&again);
    let said = crate::cli::stdout(&again);
    assert!(said.contains("resumed after 795.7 KiB"), "{said}");
    assert_eq!(agent.read_ready("cube.gcode"), original);
}
