//! The sender's print choice and `watch`, against a real OctoPrint: "upload
//! only" never starts, "upload and print" starts a file the agent would
//! not start by itself, within its rules (`remote_start = false` refuses
//! it and `fileagent print`), and a watch reports the file and the printer
//! from upload to the print's end, over one connection.

use fileagent::agent::config::AutoPrint;
use fileagent::wire::protocol::{ErrorCode, Watched};
use fileagent::workstation::{Client, ClientError};

use crate::forward::{dwell_file, forwarding, wait_state};
use crate::octoprint::OctoPrint;
use crate::support::{Agent, GUARD};

/// Sends `path` with the print choice `print`.
async fn send_with(agent: &Agent, path: &std::path::Path, print: Option<bool>) {
    let mut client = agent.client("slicer-pc").await;
    client.set_print(print);
    let name = path.file_name().unwrap().to_str().unwrap();
    client.send_file(path, name, false, &mut ()).await.unwrap();
    client.close().await;
}

/// The watch's reports until `done` says one is the last; all of them.
async fn watch_until(
    client: &mut Client,
    first: Watched,
    done: impl Fn(&Watched) -> bool,
) -> Vec<Watched> {
    let mut seen = vec![first];
    while !done(seen.last().unwrap()) {
        let next = tokio::time::timeout(GUARD, client.next_watched())
            .await
            .expect("a report within the guard")
            .unwrap();
        seen.push(next);
    }
    seen
}

fn file_state(w: &Watched) -> &str {
    w.file
        .as_ref()
        .and_then(|f| f.state.as_deref())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_choice_counts_within_the_agents_rules_and_a_watch_follows_it() {
    let octo = OctoPrint::start().await;
    let mut agent = Agent::start_with(|c| {
        forwarding(octo.url(), octo.key.clone(), false)(c);
        c.octoprint.auto_print = AutoPrint::Never;
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();

    // Upload only: in OctoPrint, not started, and it says so.
    let only = dwell_file(tmp.path(), "only.gcode", 1);
    send_with(&agent, &only, Some(false)).await;
    let uploaded = wait_state(&agent, &octo, "only.gcode", &["uploaded"]).await;
    assert!(
        uploaded
            .reason
            .as_deref()
            .unwrap()
            .starts_with("uploaded only, as its sender asked"),
        "{uploaded:?}"
    );
    assert!(octo.get("/api/files/local/only.gcode").await.is_some());

    // Upload and print, on an agent that starts nothing by itself: it
    // starts, and a watch named after it follows it to its end.
    let print = dwell_file(tmp.path(), "print.gcode", 2);
    let mut watcher = agent.client("watcher").await;
    let first = watcher.watch(Some("print.gcode")).await.unwrap();
    assert!(first.file.is_none(), "not sent yet: {first:?}");
    send_with(&agent, &print, Some(true)).await;
    let seen = watch_until(&mut watcher, first, |w| file_state(w) == "printed").await;
    let states: Vec<&str> = seen.iter().map(file_state).collect();
    assert!(states.contains(&"printing"), "{states:?}");
    let printing = seen.iter().find(|w| file_state(w) == "printing").unwrap();
    assert_eq!(printing.printer.job.as_deref(), Some("print.gcode"));
    assert!(printing.printer.connected, "{printing:?}");
    // Reports come on changes, not in a flood: a few per second at most.
    assert!(seen.len() < 40, "{} reports", seen.len());
    // The print ended: the bed holds it, and the watch says so.
    let last = seen.last().unwrap();
    assert!(!last.printer.busy(), "{last:?}");

    // The same file sent again to print (a slicer's "Upload and Print" of
    // the same part): not taken for started by its last print's "printed";
    // the bed holds that print, so it waits for a person, and says so.
    let mut again = agent.client("slicer-pc").await;
    again.set_print(Some(true));
    let sent = again
        .send_file(&print, "print.gcode", false, &mut ())
        .await
        .unwrap();
    assert!(sent.unchanged, "{sent:?}");
    let fate = again
        .fate("print.gcode", true, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    match &fate {
        fileagent::workstation::Fate::Waiting(why) => {
            assert!(why.contains("the last print (print.gcode) ended"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // A person clears the bed (selects another file in OctoPrint): the
    // next one sent again starts by itself.
    assert_eq!(
        octo.command(
            "/api/files/local/only.gcode",
            serde_json::json!({"command": "select"})
        )
        .await,
        204
    );
    wait_state(&agent, &octo, "print.gcode", &["uploaded"]).await;
    let mut bed_clear = false;
    for _ in 0..100 {
        let status = agent.client("lister").await.status().await.unwrap();
        if status.bed.is_none() {
            bed_clear = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(bed_clear, "the selection did not clear the bed");
    let mut third = agent.client("slicer-pc").await;
    third.set_print(Some(true));
    third
        .send_file(&print, "print.gcode", false, &mut ())
        .await
        .unwrap();
    let fate = third
        .fate("print.gcode", true, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(fate, fileagent::workstation::Fate::Started);
    wait_state(&agent, &octo, "print.gcode", &["printed"]).await;

    // An agent that takes no print starts from workstations.
    agent.reconfigure(|c| c.octoprint.remote_start = false);
    let refused = dwell_file(tmp.path(), "refused.gcode", 1);
    send_with(&agent, &refused, Some(true)).await;
    let waiting = wait_state(&agent, &octo, "refused.gcode", &["uploaded"]).await;
    assert!(
        waiting
            .reason
            .as_deref()
            .unwrap()
            .contains("remote_start = false"),
        "{waiting:?}"
    );
    let mut client = agent.client("slicer-pc").await;
    let e = client.print(Some("refused.gcode")).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Refused { code: ErrorCode::Forbidden, message } if message.contains("remote_start = false")),
        "{e:?}"
    );
    // The watch's connection is its own: the watcher's next request opens another.
    assert!(watcher.status().await.is_ok());
}
