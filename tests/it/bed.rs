//! The print policy against a real OctoPrint and its Virtual Printer (issue
//! 21): a finished print occupies the bed until a person acts, files start
//! in order of arrival, a forwarded name stays taken, a held file does not
//! hold up the files behind it, and a print OctoPrint lost is not
//! "printed".

use fileagent::wire::protocol::ErrorCode;
use fileagent::workstation::ClientError;

use crate::forward::{dwell_file, forwarding, listing, send_cli_with, wait_state};
use crate::octoprint::OctoPrint;
use crate::support::{Agent, data};

/// Every row that waits (to be uploaded or started) says why.
async fn every_waiting_row_says_why(agent: &Agent) {
    for row in listing(agent).await {
        if matches!(row.state.as_deref(), Some("received" | "uploaded")) {
            assert!(
                row.reason.as_deref().is_some_and(|r| !r.is_empty()),
                "no reason: {row:?}"
            );
        }
    }
}

/// Defect 1: with the defaults (`when-idle`, no queue) a print that ends
/// leaves its part on the bed; nothing starts by itself after it, not
/// even a file that arrives just then, until a person starts one, and then
/// the oldest waiting file first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_print_occupies_the_bed_until_a_person_starts_the_next() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), false)).await;
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("maker.pem");
    std::fs::write(&identity, agent.identity_pem("maker")).unwrap();
    let send = |name: &str, seconds| {
        let file = dwell_file(tmp.path(), name, seconds);
        send_cli_with(&agent, &identity, &file, &[]);
    };

    // A clear bed: the first file prints by itself.
    send("first.gcode", 2);
    wait_state(&agent, &octo, "first.gcode", &["printing", "printed"]).await;
    wait_state(&agent, &octo, "first.gcode", &["printed"]).await;

    // The printer is idle, nothing else waits, but its part is on the bed:
    // a file that arrives now does not start by itself.
    send("second.gcode", 1);
    let second = wait_state(&agent, &octo, "second.gcode", &["uploaded", "printing"]).await;
    assert_eq!(second.state.as_deref(), Some("uploaded"), "{second:?}");
    let (state, job) = octo.job().await.unwrap();
    assert_ne!(state, "Printing", "{job} started by itself");
    let why = second.reason.unwrap();
    assert!(
        why.starts_with("waiting for a person: the last print (first.gcode) ended ")
            && why.contains("fileagent print second.gcode"),
        "{why}"
    );
    // A later file waits behind it.
    send("third.gcode", 1);
    let third = wait_state(&agent, &octo, "third.gcode", &["uploaded", "printing"]).await;
    assert_eq!(third.state.as_deref(), Some("uploaded"), "{third:?}");
    assert!(
        third
            .reason
            .unwrap()
            .contains("second.gcode came before it")
    );
    every_waiting_row_says_why(&agent).await;
    let mut client = agent.client("maker").await;
    let bed = client.status().await.unwrap().bed.unwrap_or_default();
    assert!(bed.contains("the last print (first.gcode) ended"), "{bed}");

    // A person clears the bed and starts the next: the oldest waiting.
    assert_eq!(client.print(None).await.unwrap(), "second.gcode");
    wait_state(&agent, &octo, "second.gcode", &["printing", "printed"]).await;
    wait_state(&agent, &octo, "second.gcode", &["printed"]).await;
    // Its end occupies the bed again: third still waits.
    let third = wait_state(&agent, &octo, "third.gcode", &["uploaded"]).await;
    assert!(
        third
            .reason
            .unwrap()
            .contains("the last print (second.gcode) ended"),
        "{:?}",
        listing(&agent).await
    );
    // A person may choose another file than the oldest.
    send("fourth.gcode", 5);
    wait_state(&agent, &octo, "fourth.gcode", &["uploaded"]).await;
    assert_eq!(
        client.print(Some("fourth.gcode")).await.unwrap(),
        "fourth.gcode"
    );
    wait_state(&agent, &octo, "fourth.gcode", &["printing"]).await;
    // While it prints, another start is refused, with the reason.
    let busy = client.print(Some("third.gcode")).await.unwrap_err();
    assert!(
        matches!(&busy, ClientError::Refused { code: ErrorCode::Busy, message }
            if message.contains("the printer is busy")),
        "{busy:?}"
    );
    let unknown = client.print(Some("nope.gcode")).await.unwrap_err();
    assert!(
        matches!(
            &unknown,
            ClientError::Refused {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{unknown:?}"
    );
    client.close().await;
    octo.command("/api/job", serde_json::json!({"command": "cancel"}))
        .await;
    agent.stop().await;
}

/// Defect 1, last part: a print lost when OctoPrint restarts is listed as
/// interrupted, never as printed, and its bed is occupied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_print_lost_in_an_octoprint_restart_is_interrupted_not_printed() {
    let _turn = crate::support::heavy();
    let mut octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), false)).await;
    let mut client = agent.client("maker").await;
    client
        .send_file(&data("cube-20mm.gcode"), "cube.gcode", false, &mut ())
        .await
        .unwrap();
    wait_state(&agent, &octo, "cube.gcode", &["printing"]).await;
    octo.stop();
    octo.resume().await;
    let lost = wait_state(&agent, &octo, "cube.gcode", &["interrupted", "printed"]).await;
    assert_eq!(lost.state.as_deref(), Some("interrupted"), "{lost:?}");
    assert!(lost.reason.unwrap().contains("OctoPrint lost the job"));
    // Whatever it left on the bed: the next file waits for a person.
    client
        .send_file(&data("tiny.gcode"), "next.gcode", false, &mut ())
        .await
        .unwrap();
    let next = wait_state(&agent, &octo, "next.gcode", &["uploaded", "printing"]).await;
    assert_eq!(next.state.as_deref(), Some("uploaded"), "{next:?}");
    let why = next.reason.unwrap();
    assert!(
        why.contains("waiting for a person: the last print (cube.gcode) ended"),
        "{why}"
    );
    client.close().await;
    agent.stop().await;
}

/// Defect 2: a name stays taken once its file was forwarded: different
/// content needs --overwrite (OctoPrint's copy stays as it was), identical
/// content is `unchanged`, one row per name. A name taken in OctoPrint by
/// a file the agent does not know is not replaced either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_name_stays_taken() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(|c| {
        forwarding(octo.url(), octo.key.clone(), false)(c);
        c.octoprint.auto_print = fileagent::agent::config::AutoPrint::Never;
    })
    .await;
    let mut client = agent.client("maker").await;
    let cube = data("cube-20mm.gcode");
    let tiny = data("tiny.gcode");
    client
        .send_file(&cube, "ovw.gcode", false, &mut ())
        .await
        .unwrap();
    wait_state(&agent, &octo, "ovw.gcode", &["uploaded"]).await;

    let taken = client
        .send_file(&tiny, "ovw.gcode", false, &mut ())
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, ClientError::Refused { code: ErrorCode::Exists, message }
            if message.contains("was sent before with different content") && message.contains("--overwrite")),
        "{taken:?}"
    );
    let again = client
        .send_file(&cube, "ovw.gcode", false, &mut ())
        .await
        .unwrap();
    assert!(again.unchanged && again.wire_bytes == 0, "{again:?}");
    let stored = octo.get("/api/files/local/ovw.gcode").await.unwrap();
    assert_eq!(stored["size"], 814_814);
    let rows = listing(&agent).await;
    assert_eq!(rows.iter().filter(|f| f.name == "ovw.gcode").count(), 1);

    // With --overwrite it replaces the forwarded version, in OctoPrint too.
    let replaced = client
        .send_file(&tiny, "ovw.gcode", true, &mut ())
        .await
        .unwrap();
    assert!(!replaced.unchanged);
    octo.wait_for("the new version in OctoPrint", |octo| async move {
        let stored = octo.get("/api/files/local/ovw.gcode").await?;
        (stored["size"] == 733).then_some(())
    })
    .await;
    let rows = listing(&agent).await;
    let ovw: Vec<_> = rows.iter().filter(|f| f.name == "ovw.gcode").collect();
    assert_eq!(ovw.len(), 1, "{rows:?}");
    assert_eq!(ovw[0].size, 733);

    // A file a person put into OctoPrint keeps its name too.
    assert_eq!(
        octo.upload("mine.gcode", b"G28 ; mine\n".to_vec()).await,
        201
    );
    client
        .send_file(&tiny, "mine.gcode", false, &mut ())
        .await
        .unwrap();
    let refused = wait_state(&agent, &octo, "mine.gcode", &["failed", "uploaded"]).await;
    assert_eq!(refused.state.as_deref(), Some("failed"), "{refused:?}");
    assert!(
        refused
            .reason
            .unwrap()
            .contains("OctoPrint already has a different mine.gcode"),
    );
    let theirs = octo.download("mine.gcode").await.unwrap();
    assert_eq!(theirs, b"G28 ; mine\n");
    // Once the person has removed theirs, the same file sent again is a
    // new try, not "unchanged".
    assert_eq!(octo.remove("mine.gcode").await, 204);
    let again = client
        .send_file(&tiny, "mine.gcode", false, &mut ())
        .await
        .unwrap();
    assert!(!again.unchanged, "{again:?}");
    wait_state(&agent, &octo, "mine.gcode", &["uploaded"]).await;
    assert_eq!(octo.download("mine.gcode").await.unwrap().len(), 733);

    // An empty print file is kept, not forwarded (defect 10).
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.gcode");
    std::fs::write(&empty, b"").unwrap();
    client
        .send_file(&empty, "empty.gcode", false, &mut ())
        .await
        .unwrap();
    let skipped = wait_state(&agent, &octo, "empty.gcode", &["skipped", "uploaded"]).await;
    assert_eq!(skipped.state.as_deref(), Some("skipped"), "{skipped:?}");
    assert!(skipped.reason.unwrap().starts_with("empty (0 bytes)"));
    assert!(octo.get("/api/files/local/empty.gcode").await.is_none());
    client.close().await;
    agent.stop().await;
}

/// Defect 9: a new version of the file being printed waits for that print,
/// but the files sent after it still reach OctoPrint (and wait there, in
/// order), and every waiting row says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_file_does_not_hold_up_the_files_behind_it() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(forwarding(octo.url(), octo.key.clone(), false)).await;
    let tmp = tempfile::tempdir().unwrap();
    let identity = tmp.path().join("maker.pem");
    std::fs::write(&identity, agent.identity_pem("maker")).unwrap();
    let cube = tmp.path().join("cube.gcode");
    std::fs::copy(data("cube-20mm.gcode"), &cube).unwrap();
    send_cli_with(&agent, &identity, &cube, &[]);
    wait_state(&agent, &octo, "cube.gcode", &["printing"]).await;

    let mut v2 = std::fs::read(&cube).unwrap();
    v2.extend_from_slice(b"; v2\n");
    let v2_path = tmp.path().join("cube-v2.gcode");
    std::fs::write(&v2_path, &v2).unwrap();
    send_cli_with(
        &agent,
        &identity,
        &v2_path,
        &["--as", "cube.gcode", "--overwrite"],
    );
    let later = dwell_file(tmp.path(), "later.gcode", 1);
    send_cli_with(&agent, &identity, &later, &[]);
    let later = wait_state(&agent, &octo, "later.gcode", &["uploaded"]).await;
    assert!(
        later
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("waiting for a person")),
        "{later:?}"
    );
    assert!(octo.get("/api/files/local/later.gcode").await.is_some());
    let held = wait_state(&agent, &octo, "cube.gcode", &["received"]).await;
    assert!(held.reason.unwrap().contains("running print"));
    every_waiting_row_says_why(&agent).await;
    assert_eq!(octo.job().await.unwrap().1, "cube.gcode");
    octo.command("/api/job", serde_json::json!({"command": "cancel"}))
        .await;
    agent.stop().await;
}
