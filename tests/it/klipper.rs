//! Forwarding to Moonraker, what only a Klipper printer does: klippy gone
//! while Moonraker answers (the file is stored, not started, and status
//! says why), a new version of the file being printed (Moonraker refuses
//! to overwrite it: held, not lost), Moonraker's checksum check (a spool
//! copy changed after it was verified is not stored).

use crate::forward::listing;
use crate::servers::{Kind, Target};
use crate::support::{Agent, sha256};

async fn klipper() -> Target {
    Target::start(Kind::Moonraker).await
}

fn moon(target: &mut Target) -> &mut crate::moonraker::Moonraker {
    match target {
        Target::Moon(moon) => moon,
        Target::Octo(_) => unreachable!("a Klipper test"),
    }
}

async fn send(agent: &Agent, path: &std::path::Path, name: &str, overwrite: bool) {
    let mut client = agent.client("bench-pc").await;
    client
        .send_file(path, name, overwrite, &mut ())
        .await
        .unwrap();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_klippy_disconnected_a_file_is_stored_not_started_and_status_says_why() {
    let mut target = klipper().await;
    let mut agent = Agent::start_with(target.forwarding(false)).await;
    let tmp = tempfile::tempdir().unwrap();
    moon(&mut target).stop_klipper();
    target.wait_status(&agent, "Klipper not connected").await;

    let file = target.dwell_file(tmp.path(), "offline.gcode", 1);
    send(&agent, &file, "offline.gcode", false).await;
    let entry = target
        .wait_state(&agent, "offline.gcode", &["uploaded"])
        .await;
    let reason = entry.reason.unwrap();
    assert!(
        reason.contains("not ready when it was uploaded (Klipper not connected"),
        "{reason}"
    );
    assert!(reason.contains("fileagent print offline.gcode"), "{reason}");
    let stored = moon(&mut target).download("offline.gcode").await.unwrap();
    assert_eq!(stored, std::fs::read(&file).unwrap());

    // Klipper back: the file does not start by itself, a person starts it.
    moon(&mut target).resume_klipper();
    moon(&mut target).wait_ready().await;
    target.wait_status(&agent, "Ready").await;
    let still = listing(&agent).await;
    let still = still.iter().find(|f| f.name == "offline.gcode").unwrap();
    assert_eq!(still.state.as_deref(), Some("uploaded"), "{still:?}");
    let mut client = agent.client("person").await;
    client.print(Some("offline.gcode")).await.unwrap();
    client.close().await;
    target
        .wait_state(&agent, "offline.gcode", &["printing", "printed"])
        .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_of_the_printing_file_is_held_not_lost() {
    let mut target = klipper().await;
    let mut agent = Agent::start_with(target.forwarding(false)).await;
    let tmp = tempfile::tempdir().unwrap();
    let first = target.long_file(tmp.path(), "part.gcode");
    send(&agent, &first, "part.gcode", false).await;
    target.wait_state(&agent, "part.gcode", &["printing"]).await;

    let mut fixed = std::fs::read(&first).unwrap();
    fixed.extend_from_slice(b"; fixed\n");
    let v2 = tmp.path().join("part-v2.gcode");
    std::fs::write(&v2, &fixed).unwrap();
    send(&agent, &v2, "part.gcode", true).await;
    let held = target
        .wait_for("the new version to wait for the print", async || {
            let files = listing(&agent).await;
            files.into_iter().find(|f| {
                f.name == "part.gcode"
                    && f.state.as_deref() == Some("received")
                    && f.reason
                        .as_deref()
                        .is_some_and(|r| r.contains("running print"))
            })
        })
        .await;
    assert!(
        held.reason
            .unwrap()
            .contains("Moonraker does not overwrite")
    );
    assert_eq!(
        agent.ready(),
        vec!["part.gcode".to_string()],
        "kept in the spool"
    );
    let printing = moon(&mut target).download("part.gcode").await.unwrap();
    assert_eq!(
        printing,
        std::fs::read(&first).unwrap(),
        "the print's file untouched"
    );
    assert_eq!(target.job().await.unwrap(), (true, "part.gcode".into()));

    // The print cancelled: the new version goes up, and does not start.
    target.cancel().await;
    let listed = target
        .wait_state(&agent, "part.gcode", &["uploaded", "printing"])
        .await;
    assert_eq!(listed.state.as_deref(), Some("uploaded"), "{listed:?}");
    let stored = moon(&mut target).download("part.gcode").await.unwrap();
    assert_eq!(sha256(&stored), sha256(&fixed));
    assert!(!target.job().await.unwrap().0, "nothing printing");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_copy_changed_after_its_check_is_refused_by_moonrakers_checksum() {
    let mut target = klipper().await;
    // The agent would take a change it sees in ready/ for a new version put
    // there by another tool, once the change has settled; this one happens
    // behind its back (as a disk's or a tool's in-place write it has not
    // settled yet), so the settling is left for later than this test.
    let forwarding = target.forwarding(false);
    let mut agent = Agent::start_with(|c| {
        forwarding(c);
        c.settle_time = std::time::Duration::from_secs(600);
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    target.stop();
    let file = target.dwell_file(tmp.path(), "bitrot.gcode", 1);
    send(&agent, &file, "bitrot.gcode", false).await;
    target
        .wait_state(&agent, "bitrot.gcode", &["received"])
        .await;
    // Same size, one byte changed.
    let ready = agent.config.spool_dir.join("ready/bitrot.gcode");
    let mut bytes = std::fs::read(&ready).unwrap();
    bytes[2] ^= 0x20;
    std::fs::write(&ready, &bytes).unwrap();

    target.resume().await;
    let failed = target.wait_state(&agent, "bitrot.gcode", &["failed"]).await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.contains("no longer matches what was sent"),
        "{reason}"
    );
    assert!(reason.contains("SHA-256 check refused it"), "{reason}");
    assert!(moon(&mut target).download("bitrot.gcode").await.is_none());
    let why = agent.config.spool_dir.join("failed/bitrot.gcode.reason");
    assert!(
        std::fs::read_to_string(why)
            .unwrap()
            .contains("send the file again")
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_print_klipper_stops_with_an_error_says_the_error() {
    let target = klipper().await;
    let mut agent = Agent::start_with(target.forwarding(false)).await;
    let tmp = tempfile::tempdir().unwrap();
    // Slicer output asks for an extruder this printer does not have (a
    // surprise from the trial: the row said only "print stopped at 0%").
    let file = tmp.path().join("extrudes.gcode");
    std::fs::write(&file, "M117 extrudes\nG4 P100\nG1 E1 F100\n").unwrap();
    send(&agent, &file, "extrudes.gcode", false).await;
    let failed = target
        .wait_state(&agent, "extrudes.gcode", &["failed"])
        .await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.starts_with("print stopped at") && reason.contains("Extrude when no extruder"),
        "{reason}"
    );
    agent.stop().await;
}
