//! A tiny in-process HTTP server speaking just enough of OctoPrint's API to
//! produce faults a real OctoPrint will not produce on demand: 5xx answers
//! and connections reset in the middle of an upload, or a server that
//! accepts and never answers. It never replaces the real OctoPrint in the
//! other forwarding tests.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::forward::forwarding;
use crate::support::{Agent, GUARD, data, poll};

/// How often the tests look at the agent's state.
const EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// What the fake does with each upload attempt, in order; afterwards it
/// accepts.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answer 503.
    Unavailable,
    /// Drop the connection without answering.
    Reset,
    /// Read the body, then answer 201 only once the test releases it (a
    /// slow OctoPrint).
    Hold,
}

#[derive(Debug, Default)]
struct Seen {
    attempts: usize,
    accepted: Vec<usize>,
    /// Lets a held upload answer.
    release: Arc<tokio::sync::Notify>,
}

async fn serve(listener: TcpListener, faults: Vec<Fault>, seen: Arc<Mutex<Seen>>) {
    let faults = Arc::new(faults);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (faults, seen) = (faults.clone(), seen.clone());
        tokio::spawn(async move {
            let _ = handle(stream, &faults, &seen).await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    faults: &[Fault],
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let request_line = head.lines().next().unwrap_or("").to_string();
    let (status, body) = if request_line.starts_with("get /api/job") {
        (
            "200 OK",
            r#"{"state":"Operational","job":{"file":{"path":null,"origin":null}},"progress":{"completion":null}}"#,
        )
    } else if request_line.starts_with("get /api/printer") {
        (
            "200 OK",
            r#"{"state":{"text":"Operational","flags":{"operational":true,"printing":false}}}"#,
        )
    } else if request_line.starts_with("get /api/files") {
        ("404 Not Found", r#"{"error":"not found"}"#)
    } else if request_line.starts_with("post /api/files/local") {
        let attempt = {
            let mut seen = seen.lock().unwrap();
            seen.attempts += 1;
            seen.attempts
        };
        match faults.get(attempt - 1) {
            Some(Fault::Reset) => {
                // Vanish mid-request. (Waiting for more of the body here
                // could wait forever: a small body may already be read.)
                return Ok(());
            }
            Some(Fault::Unavailable) => {
                ("503 Service Unavailable", r#"{"error":"busy starting up"}"#)
            }
            Some(Fault::Hold) | None => {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("uploads carry a Content-Length");
                let mut body = buf[head_end..].to_vec();
                while body.len() < length {
                    let mut chunk = [0u8; 65536];
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                let release = {
                    let mut seen = seen.lock().unwrap();
                    seen.accepted.push(body.len());
                    seen.release.clone()
                };
                if matches!(faults.get(attempt - 1), Some(Fault::Hold)) {
                    release.notified().await;
                }
                (
                    "201 Created",
                    r#"{"done":true,"effectivePrint":false,"files":{"local":{"path":"tiny.gcode"}}}"#,
                )
            }
        }
    } else {
        ("404 Not Found", "{}")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_reset_uploads_are_retried_and_delivered_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let faults = vec![
        Fault::Unavailable,
        Fault::Reset,
        Fault::Unavailable,
        Fault::Reset,
    ];
    tokio::spawn(serve(listener, faults, seen.clone()));

    let mut agent = Agent::start_with(forwarding(url, "key".into(), false)).await;
    let mut client = agent.client("unlucky").await;
    client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    let entry = poll(GUARD, EVERY, async || {
        let files = client.list().await.unwrap();
        files
            .into_iter()
            .find(|f| f.state.as_deref() == Some("uploaded"))
    })
    .await
    .unwrap_or_else(|| panic!("never delivered: {:?}", seen.lock().unwrap()));
    assert_eq!(entry.name, "tiny.gcode");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.attempts, 5, "four faults, then success: {seen:?}");
        assert_eq!(seen.accepted.len(), 1, "exactly one complete upload");
        assert!(seen.accepted[0] > std::fs::metadata(data("tiny.gcode")).unwrap().len() as usize);
    }
    client.close().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_files_are_removed_after_keep_done() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        Vec::new(),
        Arc::new(Mutex::new(Seen::default())),
    ));
    let mut agent = Agent::start_with(|c| {
        forwarding(url, "key".into(), false)(c);
        c.keep_done = std::time::Duration::ZERO;
    })
    .await;
    let mut client = agent.client("tidy").await;
    client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    let done = agent.config.spool_dir.join("done").join("tiny.gcode");
    // Uploaded, moved to done/, and (with keep_done = 0) gone a second later.
    let mut was_done = false;
    let mut listed = Vec::new();
    let cleaned = poll(GUARD, EVERY, async || {
        listed = client.list().await.unwrap();
        was_done |= done.exists()
            || listed
                .iter()
                .any(|f| f.state.as_deref() == Some("uploaded"));
        (was_done && listed.is_empty() && !done.exists()).then_some(())
    })
    .await;
    assert!(cleaned.is_some(), "not cleaned up: {listed:?}");
    client.close().await;
    agent.stop().await;
    let queue = std::fs::read_to_string(agent.config.spool_dir.join("queue.json")).unwrap();
    assert!(!queue.contains("tiny.gcode"), "{queue}");
}

/// An agent (`auto_print = never`) forwarding to a fake whose first upload
/// is held until the test releases it; and the fake's record.
async fn holding_first_upload() -> (Agent, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(serve(listener, vec![Fault::Hold], seen.clone()));
    let agent = Agent::start_with(|c| {
        forwarding(url, "key".into(), false)(c);
        c.octoprint.auto_print = fileagent::agent::config::AutoPrint::Never;
    })
    .await;
    (agent, seen)
}

/// Waits until the fake holds the first upload.
async fn until_held(seen: &Mutex<Seen>) {
    let held = poll(GUARD, EVERY, async || {
        (!seen.lock().unwrap().accepted.is_empty()).then_some(())
    })
    .await;
    assert!(held.is_some(), "the first upload never arrived");
}

/// Two versions of a print file in `dir`: (old, new).
fn versions(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (old, new) = (dir.join("old.gcode"), dir.join("new.gcode"));
    std::fs::write(&old, "G28 ; old\n").unwrap();
    std::fs::write(&new, "G28 ; new, longer\n").unwrap();
    (old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_during_its_upload_is_forwarded_too() {
    let (mut agent, seen) = holding_first_upload().await;
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = versions(tmp.path());
    let mut client = agent.client("editor").await;
    client
        .send_file(&old, "part.gcode", false, &mut ())
        .await
        .unwrap();

    // While OctoPrint sits on the first upload, a new version replaces it.
    until_held(&seen).await;
    client
        .send_file(&new, "part.gcode", true, &mut ())
        .await
        .unwrap();
    let release = seen.lock().unwrap().release.clone();
    release.notify_one();

    // Both versions reach OctoPrint, done/ holds the newest, and `list`
    // shows one row for the name: the newest version.
    let done = agent.config.spool_dir.join("done").join("part.gcode");
    let mut listed = Vec::new();
    let both = poll(GUARD, EVERY, async || {
        listed = client.list().await.unwrap();
        let uploaded = seen.lock().unwrap().accepted.len();
        let states: Vec<_> = listed.iter().map(|f| f.state.as_deref()).collect();
        (uploaded == 2 && states == [Some("uploaded")]).then_some(())
    })
    .await;
    assert!(both.is_some(), "not both uploaded: {listed:?}");
    assert_eq!(seen.lock().unwrap().accepted.len(), 2);
    assert_eq!(listed[0].size, std::fs::metadata(&new).unwrap().len());
    assert_eq!(std::fs::read(&done).unwrap(), std::fs::read(&new).unwrap());
    assert!(agent.ready().is_empty());
    client.close().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_replaced_before_its_upload_is_not_uploaded_in_its_name() {
    // Found through the bridge: a PUT and a PUT with Overwrite a moment
    // later, while the forwarder was busy, had the newer file uploaded
    // under the older one's digest and the newer one forgotten.
    let (mut agent, seen) = holding_first_upload().await;
    let tmp = tempfile::tempdir().unwrap();
    let busy = tmp.path().join("busy.gcode");
    std::fs::copy(data("tiny.gcode"), &busy).unwrap();
    let (old, new) = versions(tmp.path());
    let mut client = agent.client("slicer").await;
    client
        .send_file(&busy, "busy.gcode", false, &mut ())
        .await
        .unwrap();
    until_held(&seen).await;
    // While the forwarder waits on OctoPrint, a file and its new version.
    client
        .send_file(&old, "part.gcode", false, &mut ())
        .await
        .unwrap();
    client
        .send_file(&new, "part.gcode", true, &mut ())
        .await
        .unwrap();
    let release = seen.lock().unwrap().release.clone();
    release.notify_one();

    let mut listed = Vec::new();
    let settled = poll(GUARD, EVERY, async || {
        listed = client.list().await.unwrap();
        let part = listed.iter().find(|f| f.name == "part.gcode")?;
        (part.state.as_deref() == Some("uploaded")).then_some(())
    })
    .await;
    assert!(settled.is_some(), "part.gcode not uploaded: {listed:?}");
    let part = listed.iter().find(|f| f.name == "part.gcode").unwrap();
    assert_eq!(
        part.size,
        std::fs::metadata(&new).unwrap().len(),
        "{listed:?}"
    );
    // OctoPrint got busy.gcode and the new version, once each.
    assert_eq!(seen.lock().unwrap().accepted.len(), 2);
    let queue = std::fs::read_to_string(agent.config.spool_dir.join("queue.json")).unwrap();
    assert!(
        !queue.contains(&fileagent_sha(&old)),
        "the old version stays forgotten: {queue}"
    );
    client.close().await;
    agent.stop().await;
}

fn fileagent_sha(path: &std::path::Path) -> String {
    crate::support::sha256(&std::fs::read(path).unwrap())
}

/// A print server that accepts connections and never answers (hung, or a
/// wrong port holding something else): the agent stops at once anyway,
/// not after the request's time runs out (longer than systemd's stop
/// timeout for a stalled upload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stops_at_once_while_the_print_server_hangs() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", hung.local_addr().unwrap());
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in hung.incoming().flatten() {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let mut agent = Agent::start_with(forwarding(url, "k".into(), false)).await;
    let mut client = agent.client("sender").await;
    client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    client.close().await;
    // The forwarder's request is in flight, and will not be answered.
    tokio::task::spawn_blocking(move || accepted.recv_timeout(GUARD).unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    agent.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "stopping took {:?} (the state request's timeout is 10 s)",
        started.elapsed()
    );
    assert_eq!(agent.ready(), vec!["tiny.gcode".to_string()]);
}
