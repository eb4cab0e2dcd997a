//! Forwarding end to end against a real OctoPrint and its Virtual Printer:
//! the CLI sends, the agent uploads and prints, busy printers are never
//! disturbed, the queue, OctoPrint outages, a wrong API key, restarts, files
//! from other tools, and files that are not print files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fileagent::agent::config::ApiKey;
use fileagent::agent::config::Config;
use fileagent::wire::protocol::{ErrorCode, FileEntry};
use fileagent::workstation::ClientError;

use crate::octoprint::OctoPrint;
use crate::support::{Agent, data, sha256};

/// Agent settings for talking to `octo`, with short intervals.
pub fn forwarding(url: String, key: String, queue: bool) -> impl FnOnce(&mut Config) {
    move |c| {
        c.octoprint.enabled = true;
        c.octoprint.url = Some(url);
        c.octoprint.api_key = Some(ApiKey::new(&key));
        c.octoprint.queue = queue;
        c.octoprint.poll_interval = Duration::from_millis(200);
        c.octoprint.retry_initial = Duration::from_millis(100);
        c.octoprint.retry_max = Duration::from_millis(800);
        c.settle_time = Duration::from_millis(300);
    }
}

/// The agent's listing.
pub async fn listing(agent: &Agent) -> Vec<FileEntry> {
    let mut client = agent.client("lister").await;
    let files = client.list().await.unwrap();
    client.close().await;
    files
}

/// Waits until the agent lists `name` in one of `states`.
pub async fn wait_state(agent: &Agent, octo: &OctoPrint, name: &str, states: &[&str]) -> FileEntry {
    let what = format!("{name} to be {states:?} in the agent's list");
    octo.wait_for(&what, |_| async {
        listing(agent)
            .await
            .into_iter()
            .find(|f| f.name == name && states.contains(&f.state.as_deref().unwrap_or("")))
    })
    .await
}

/// A print file that keeps the Virtual Printer busy for a few seconds.
pub fn dwell_file(dir: &std::path::Path, name: &str, seconds: u32) -> PathBuf {
    let mut text = std::fs::read_to_string(data("tiny.gcode")).unwrap();
    text.push_str(&format!(
        "G4 S{seconds} ; dwell, so the job lasts a while\n"
    ));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn send_cli(agent: &Agent, identity: &std::path::Path, file: &std::path::Path) {
    send_cli_with(agent, identity, file, &[]);
}

pub fn send_cli_with(
    agent: &Agent,
    identity: &std::path::Path,
    file: &std::path::Path,
    args: &[&str],
) {
    let output = crate::support::fileagent_command()
        .args([
            "send",
            file.to_str().unwrap(),
            "--agent",
            &agent.agent_arg(),
            "--identity",
        ])
        .arg(identity)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A real OctoPrint, an agent forwarding to it (no queue), a workstation
/// identity, and the 20 mm cube as `cube.gcode`, just sent with the CLI.
struct CubeSent {
    octo: OctoPrint,
    agent: Agent,
    tmp: tempfile::TempDir,
    identity: PathBuf,
    cube: PathBuf,
}

async fn cube_sent() -> CubeSent {
    let octo = OctoPrint::start().await;
    let agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), false)).await;
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("bench.pem");
    std::fs::write(&identity, agent.identity_pem("bench-pc")).unwrap();
    // The cube heats bed and nozzle first: it stays Printing for minutes.
    let cube = tmp.path().join("cube.gcode");
    std::fs::copy(data("cube-20mm.gcode"), &cube).unwrap();
    send_cli(&agent, &identity, &cube);
    CubeSent {
        octo,
        agent,
        tmp,
        identity,
        cube,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_file_prints_and_a_second_one_waits_while_busy() {
    let CubeSent {
        octo,
        mut agent,
        tmp,
        identity,
        cube,
    } = cube_sent().await;
    let sent_at = Instant::now();
    octo.wait_for("the cube to print", |octo| async move {
        let (state, file) = octo.job().await?;
        (state == "Printing" && file == "cube.gcode").then_some(())
    })
    .await;
    eprintln!(
        "send returned -> OctoPrint Printing: {:.2}s",
        sent_at.elapsed().as_secs_f64()
    );
    let info = octo.get("/api/files/local/cube.gcode").await.unwrap();
    assert_eq!(
        info["userdata"]["sha256"],
        sha256(&std::fs::read(&cube).unwrap())
    );
    assert_eq!(info["userdata"]["client"], "bench-pc");
    wait_state(&agent, &octo, "cube.gcode", &["printing"]).await;

    // A second file while printing: uploaded, not started, the cube goes on.
    let second = dwell_file(tmp.path(), "second.gcode", 1);
    send_cli(&agent, &identity, &second);
    let waiting = wait_state(&agent, &octo, "second.gcode", &["uploaded"]).await;
    assert!(waiting.reason.unwrap().contains("waiting"));
    assert!(octo.get("/api/files/local/second.gcode").await.is_some());
    assert_eq!(
        octo.job().await.unwrap(),
        ("Printing".to_string(), "cube.gcode".to_string())
    );

    // The spool copies moved to done/.
    let done = agent.config.spool_dir.join("done");
    assert!(done.join("cube.gcode").exists() && done.join("second.gcode").exists());
    assert!(agent.ready().is_empty());
    let mut client = agent.client("watcher").await;
    let status = client.status().await.unwrap();
    assert!(
        status.printer.starts_with("Printing cube.gcode (") && status.printer.ends_with("%)"),
        "{}",
        status.printer
    );

    // What `list` shows, `get` and `delete` find: the agent's copy.
    let back = tmp.path().join("back.gcode");
    client
        .get("cube.gcode", &back, false, &mut ())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&cube).unwrap());
    let printing = client.delete("cube.gcode").await.unwrap_err();
    assert!(
        matches!(&printing, ClientError::Refused { code: ErrorCode::Busy, message }
            if message.contains("is being printed")),
        "{printing:?}"
    );
    assert!(done.join("cube.gcode").exists());
    assert!(client.delete("second.gcode").await.unwrap(), "forwarded");
    assert!(!done.join("second.gcode").exists());
    assert!(
        !listing(&agent)
            .await
            .iter()
            .any(|f| f.name == "second.gcode")
    );
    assert!(octo.get("/api/files/local/second.gcode").await.is_some());
    let gone = client.delete("second.gcode").await.unwrap_err();
    assert!(
        matches!(
            gone,
            ClientError::Refused {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{gone:?}"
    );
    client.close().await;
    octo.command("/api/job", serde_json::json!({"command": "cancel"}))
        .await;
    agent.stop().await;
}

/// A new version of the file being printed (`send --overwrite`): OctoPrint
/// does not overwrite a file it prints, so the new version waits, and the
/// printer is not shown as failing. When the print is cancelled it is
/// uploaded but not started: the bed still holds the cancelled print.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_of_the_printing_file_waits_and_does_not_start_by_itself() {
    let CubeSent {
        octo,
        mut agent,
        tmp,
        identity,
        cube,
    } = cube_sent().await;
    wait_state(&agent, &octo, "cube.gcode", &["printing"]).await;

    let mut fixed = std::fs::read(&cube).unwrap();
    fixed.extend_from_slice(b"; fixed\n");
    let v2 = tmp.path().join("cube-v2.gcode");
    std::fs::write(&v2, &fixed).unwrap();
    send_cli_with(
        &agent,
        &identity,
        &v2,
        &["--as", "cube.gcode", "--overwrite"],
    );
    let what = "the new version to wait for the print";
    let waiting = octo
        .wait_for(what, |_| async {
            listing(&agent).await.into_iter().find(|f| {
                f.name == "cube.gcode"
                    && f.state.as_deref() == Some("received")
                    && f.reason
                        .as_deref()
                        .is_some_and(|r| r.contains("running print"))
            })
        })
        .await;
    assert!(waiting.reason.unwrap().contains("does not start by itself"));
    let mut client = agent.client("watcher").await;
    let printer = client.status().await.unwrap().printer;
    assert!(printer.starts_with("Printing cube.gcode ("), "{printer}");
    client.close().await;
    assert_eq!(
        octo.job().await.unwrap(),
        ("Printing".to_string(), "cube.gcode".to_string())
    );

    octo.command("/api/job", serde_json::json!({"command": "cancel"}))
        .await;
    let uploaded = octo
        .wait_for("the new version to be uploaded", |_| async {
            let info = octo.get("/api/files/local/cube.gcode").await?;
            (info["userdata"]["sha256"] == sha256(&fixed)).then_some(())
        })
        .await;
    let _: () = uploaded;
    let listed = wait_state(&agent, &octo, "cube.gcode", &["uploaded", "printing"]).await;
    assert_eq!(listed.state.as_deref(), Some("uploaded"), "{listed:?}");
    assert!(
        listed
            .reason
            .as_deref()
            .unwrap()
            .contains("waiting for a person"),
        "{listed:?}"
    );
    // One row per name: the new version; the cancelled print of the old
    // one is in the record, behind it.
    let rows = listing(&agent).await;
    assert_eq!(
        rows.iter().filter(|f| f.name == "cube.gcode").count(),
        1,
        "{rows:?}"
    );
    let queue = std::fs::read_to_string(agent.config.spool_dir.join("queue.json")).unwrap();
    assert!(queue.contains("print stopped at"), "{queue}");
    let (state, _) = octo.job().await.unwrap();
    assert_ne!(state, "Printing");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_put_in_place_and_reloaded_turns_forwarding_on() {
    let octo = OctoPrint::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("octoprint.key");
    let setup = forwarding(octo.url(), octo.key.clone(), false);
    let mut agent = Agent::start_with(|c| {
        setup(c);
        c.octoprint.api_key = None;
        c.octoprint.api_key_file = Some(key_file.clone());
    })
    .await;
    let mut client = agent.client("early").await;
    client
        .send_file(&data("tiny.gcode"), "early.gcode", false, &mut ())
        .await
        .unwrap();
    let status = client.status().await.unwrap();
    assert!(
        status.printer.contains("no OctoPrint API key") && status.printer.contains("reload"),
        "{}",
        status.printer
    );
    client.close().await;

    // Meanwhile other tools put files into ready/, longer ago than it.
    let ready = agent.config.spool_dir.join("ready");
    let hours_ago = |h: u64| std::time::SystemTime::now() - Duration::from_secs(h * 3600);
    for (name, age) in [("a-newer.gcode", 1), ("b-older.gcode", 2)] {
        let path = ready.join(name);
        std::fs::copy(data("tiny.gcode"), &path).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(hours_ago(age)).unwrap();
    }

    // What the postinst tells users to do: key into the file, then reload.
    std::fs::write(&key_file, format!("{}\n", octo.key)).unwrap();
    agent.reconfigure(|_| {});
    // Oldest first, each uploaded and none started.
    for name in ["a-newer.gcode", "b-older.gcode"] {
        let row = wait_state(&agent, &octo, name, &["uploaded", "printing"]).await;
        assert_eq!(row.state.as_deref(), Some("uploaded"), "{row:?}");
    }
    let order: Vec<String> = listing(&agent).await.into_iter().map(|f| f.name).collect();
    assert_eq!(order, ["b-older.gcode", "a-newer.gcode", "early.gcode"]);
    let uploaded = |name: &str| {
        let octo = &octo;
        let name = name.to_string();
        async move {
            let info = octo.get(&format!("/api/files/local/{name}")).await.unwrap();
            info["date"].as_i64().unwrap()
        }
    };
    assert!(uploaded("b-older.gcode").await <= uploaded("a-newer.gcode").await);
    // The file sent while forwarding was off is uploaded with its sender,
    // but never started by itself: nobody knows what is on the bed.
    let listed = wait_state(&agent, &octo, "early.gcode", &["uploaded", "printing"]).await;
    assert_eq!(listed.state.as_deref(), Some("uploaded"), "{listed:?}");
    let reason = listed.reason.unwrap_or_default();
    assert!(reason.contains("forwarding was off"), "{reason}");
    assert!(reason.contains("fileagent print early.gcode"), "{reason}");
    let stored = octo.get("/api/files/local/early.gcode").await.unwrap();
    assert_eq!(stored["userdata"]["client"], "early");
    let queue = std::fs::read_to_string(agent.config.spool_dir.join("queue.json")).unwrap();
    assert!(queue.contains("\"client\": \"early\""), "{queue}");
    assert_ne!(octo.job().await.unwrap().0, "Printing");

    // A person starts it.
    let mut client = agent.client("early").await;
    assert_eq!(
        client.print(Some("early.gcode")).await.unwrap(),
        "early.gcode"
    );
    wait_state(&agent, &octo, "early.gcode", &["printing", "printed"]).await;
    client.close().await;
    octo.command("/api/job", serde_json::json!({"command": "cancel"}))
        .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_queue_the_next_file_starts_when_the_printer_is_free() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), true)).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut client = agent.client("farm").await;
    let first = dwell_file(tmp.path(), "first.gcode", 4);
    let second = dwell_file(tmp.path(), "second.gcode", 1);
    client
        .send_file(&first, "first.gcode", false, &mut ())
        .await
        .unwrap();
    wait_state(&agent, &octo, "first.gcode", &["printing"]).await;
    client
        .send_file(&second, "second.gcode", false, &mut ())
        .await
        .unwrap();
    let queued = wait_state(&agent, &octo, "second.gcode", &["uploaded", "printing"]).await;
    assert_eq!(
        queued.state.as_deref(),
        Some("uploaded"),
        "second must wait for the first"
    );

    wait_state(&agent, &octo, "first.gcode", &["printed"]).await;
    wait_state(&agent, &octo, "second.gcode", &["printing", "printed"]).await;
    wait_state(&agent, &octo, "second.gcode", &["printed"]).await;
    client.close().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_octoprint_outage_delays_delivery_which_happens_exactly_once() {
    let _turn = crate::support::heavy();
    let mut octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), false)).await;
    octo.stop();

    let mut client = agent.client("patient").await;
    client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    let waiting = wait_state(&agent, &octo, "tiny.gcode", &["received"]).await;
    assert!(
        waiting
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("unreachable") || r == "waiting to be uploaded"),
        "{waiting:?}"
    );
    let status = octo
        .wait_for("the agent to report OctoPrint unreachable", |_| async {
            let status = agent.client("s").await.status().await.ok()?;
            status.printer.contains("unreachable").then_some(status)
        })
        .await;
    assert_eq!(status.queued, 1);

    octo.resume().await;
    wait_state(&agent, &octo, "tiny.gcode", &["printing", "printed"]).await;
    let uploaded = octo.get("/api/files/local/tiny.gcode").await.unwrap();
    assert_eq!(
        uploaded["userdata"]["sha256"],
        sha256(&std::fs::read(data("tiny.gcode")).unwrap())
    );

    // A restart of the agent, and the same file sent again: no second upload.
    agent.restart().await;
    let mut client = agent.client("patient").await;
    client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    octo.wait_for("the agent to settle the resent file", |_| async {
        agent.ready().is_empty().then_some(())
    })
    .await;
    let again = octo.get("/api/files/local/tiny.gcode").await.unwrap();
    assert_eq!(
        again["date"], uploaded["date"],
        "OctoPrint got a second upload"
    );
    let entries: Vec<_> = listing(&agent)
        .await
        .into_iter()
        .filter(|f| f.name == "tiny.gcode")
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    client.close().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_reported_and_nothing_is_lost() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), "not-the-key".into(), false)).await;
    let mut client = agent.client("keyless").await;
    client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    octo.wait_for("the agent to report the refused key", |_| async {
        let status = agent.client("s").await.status().await.ok()?;
        status.printer.contains("refused the API key").then_some(())
    })
    .await;
    assert_eq!(agent.ready(), vec!["tiny.gcode".to_string()]);
    assert!(octo.get("/api/files/local/tiny.gcode").await.is_none());
    client.close().await;

    // With the right key (after a restart), the waiting file is delivered.
    agent.stop().await;
    agent.config.octoprint.api_key = Some(ApiKey::new(&octo.key));
    agent.restart().await;
    wait_state(&agent, &octo, "tiny.gcode", &["printing", "printed"]).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_other_tools_are_forwarded_and_other_files_are_not() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(|c| {
        forwarding(octo.url(), octo.key.clone(), false)(c);
        c.octoprint.auto_print = fileagent::agent::config::AutoPrint::Never;
    })
    .await;
    let ready = agent.config.spool_dir.join("ready");
    // As Samba or cp would: written in place, then closed.
    std::fs::copy(data("tiny.gcode"), ready.join("copied.gcode")).unwrap();
    std::fs::write(ready.join("notes.txt"), "bed leveled on Monday\n").unwrap();
    // As scp or rsync would: a temp name, renamed when complete.
    std::fs::copy(data("tiny.gcode"), ready.join(".incoming.tmp")).unwrap();
    std::fs::rename(ready.join(".incoming.tmp"), ready.join("renamed.gcode")).unwrap();

    let copied = wait_state(&agent, &octo, "copied.gcode", &["uploaded"]).await;
    assert!(copied.reason.unwrap().contains("auto_print = never"));
    wait_state(&agent, &octo, "renamed.gcode", &["uploaded"]).await;
    let skipped = wait_state(&agent, &octo, "notes.txt", &["skipped"]).await;
    assert!(skipped.reason.unwrap().contains("not a print file"));
    assert!(octo.get("/api/files/local/copied.gcode").await.is_some());
    assert!(octo.get("/api/files/local/notes.txt").await.is_none());
    assert_eq!(agent.ready(), vec!["notes.txt".to_string()]);
    // Deleted from ready/ (as another tool would, the watcher sees it go):
    // it leaves the list too.
    let mut client = agent.client("tidy").await;
    assert!(!client.delete("notes.txt").await.unwrap(), "not forwarded");
    client.close().await;
    octo.wait_for("notes.txt to leave the list", |_| async {
        (!listing(&agent).await.iter().any(|f| f.name == "notes.txt")).then_some(())
    })
    .await;
    // So does one deleted while the agent was stopped.
    std::fs::write(ready.join("later.txt"), "nozzle swapped\n").unwrap();
    wait_state(&agent, &octo, "later.txt", &["skipped"]).await;
    agent.stop().await;
    std::fs::remove_file(ready.join("later.txt")).unwrap();
    agent.restart().await;
    octo.wait_for("later.txt to leave the list", |_| async {
        (!listing(&agent).await.iter().any(|f| f.name == "later.txt")).then_some(())
    })
    .await;
    assert_eq!(
        octo.job().await.unwrap().0,
        "Operational",
        "auto_print = never must not print"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_octoprint_refuses_goes_to_failed_with_its_reason() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(|c| {
        forwarding(octo.url(), octo.key.clone(), false)(c);
        // An STL is not printable without a slicer: OctoPrint answers 415.
        c.print_extensions.push("stl".into());
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let stl = tmp.path().join("bracket.stl");
    std::fs::write(&stl, "solid bracket\nendsolid bracket\n").unwrap();
    let mut client = agent.client("designer").await;
    client
        .send_file(&stl, "bracket.stl", false, &mut ())
        .await
        .unwrap();
    let failed = wait_state(&agent, &octo, "bracket.stl", &["failed"]).await;
    assert!(failed.reason.unwrap().contains("415"));
    let failed_dir = agent.config.spool_dir.join("failed");
    assert!(failed_dir.join("bracket.stl").exists());
    let reason = std::fs::read_to_string(failed_dir.join("bracket.stl.reason")).unwrap();
    assert!(
        reason.contains("does not accept this file type"),
        "{reason}"
    );
    // The agent goes on with the next file.
    client
        .send_file(&data("tiny.gcode"), "tiny.gcode", false, &mut ())
        .await
        .unwrap();
    wait_state(&agent, &octo, "tiny.gcode", &["printing", "printed"]).await;
    client.close().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_sent_during_an_outage_is_printed_once_each_in_order() {
    let _turn = crate::support::heavy();
    let mut octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), true)).await;
    octo.stop();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["queue-a.gcode", "queue-b.gcode", "queue-c.gcode"];
    let mut client = agent.client("farm").await;
    for name in names {
        let file = dwell_file(tmp.path(), name, 1);
        client.send_file(&file, name, false, &mut ()).await.unwrap();
    }
    for name in names {
        wait_state(&agent, &octo, name, &["received"]).await;
    }
    // An agent restart during the outage changes nothing.
    agent.restart().await;
    octo.resume().await;

    // Watch the order in which they start printing.
    let started: std::cell::RefCell<Vec<&str>> = Default::default();
    octo.wait_for("the whole queue to be printed", |_| async {
        let files = listing(&agent).await;
        for f in &files {
            let Some(name) = names.iter().find(|n| **n == f.name) else {
                continue;
            };
            let printing = matches!(f.state.as_deref(), Some("printing" | "printed"));
            if printing && !started.borrow().contains(name) {
                started.borrow_mut().push(name);
            }
        }
        let printed = files
            .iter()
            .filter(|f| names.contains(&f.name.as_str()) && f.state.as_deref() == Some("printed"))
            .count();
        (printed == names.len()).then_some(())
    })
    .await;
    let started = started.into_inner();
    assert_eq!(started, names, "printed out of order");
    let mut dates = Vec::new();
    for name in names {
        let file = octo.get(&format!("/api/files/local/{name}")).await.unwrap();
        dates.push(file["date"].as_i64().unwrap());
    }
    assert!(
        dates.windows(2).all(|w| w[0] <= w[1]),
        "uploaded out of order: {dates:?}"
    );
    let listed = octo.get("/api/files?recursive=true").await.unwrap();
    for name in names {
        let copies = listed["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name.trim_end_matches(".gcode")))
            })
            .count();
        assert_eq!(copies, 1, "{name} uploaded {copies} times");
    }
    client.close().await;
    agent.stop().await;
}

/// A new version sent with `--overwrite` of a file already forwarded (its
/// copy gone from ready/ to done/, the file in OctoPrint) replaced it: the
/// send says so (the bridge answers PrusaLink's overwrite with 204 by it;
/// under qemu the first version was sometimes forwarded before the second
/// came, and the answer was 201).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwriting_a_forwarded_file_says_it_replaced_it() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), false)).await;
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("part.gcode");
    std::fs::copy(data("tiny.gcode"), &first).unwrap();
    let mut client = agent.client("designer").await;
    let sent = client
        .send_file(&first, "part.gcode", false, &mut ())
        .await
        .unwrap();
    assert!(!sent.replaced);
    wait_state(&agent, &octo, "part.gcode", &["printing", "printed"]).await;
    assert!(agent.ready().is_empty(), "forwarded: out of ready/");

    let second = tmp.path().join("part-v2.gcode");
    let mut text = std::fs::read(&first).unwrap();
    text.extend_from_slice(b"; v2\n");
    std::fs::write(&second, text).unwrap();
    let sent = client
        .send_file(&second, "part.gcode", true, &mut ())
        .await
        .unwrap();
    assert!(sent.replaced && !sent.unchanged, "{sent:?}");
    client.close().await;
    octo.command("/api/job", serde_json::json!({"command": "cancel"}))
        .await;
    agent.stop().await;
}
