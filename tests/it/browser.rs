//! The web page in a real browser (tests/browser/page.py: Debian's
//! Chromium headless, driven by Selenium through chromium-driver), against
//! the bridge's process served here, two real agents (pi1 forwarding to the
//! real OctoPrint Virtual Printer, pi2 behind a slow link) and a page of
//! another site: files picked onto two printers, progress and outcomes,
//! the board printing, a waiting file started, a transfer cancelled
//! (nothing lands), an agent stopped and back, light and dark screenshots
//! (target/ui-screenshots; `just screenshots` keeps them in docs/), and the
//! hostile cases: no launch link, a cross-site form, fetch and event
//! stream, a rebound host name, a file named as HTML.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use fileagent::agent::config::AutoPrint;

use crate::bridged::{Bridged, client_program, workstation_home};
use crate::forward::{dwell_file, forwarding};
use crate::octoprint::OctoPrint;
use crate::support::{Agent, SlowLink, content, emulated};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_real_browser() {
    if emulated() {
        // Chromium runs on the build machine only; the page is the
        // workstation's, tested on it.
        eprintln!("the browser test runs on the build machine, not under emulation");
        return;
    }
    let octo = OctoPrint::start().await;
    let pi1 = Agent::start_with(|c| {
        forwarding(octo.url(), octo.key.clone(), false)(c);
        c.octoprint.auto_print = AutoPrint::Never;
    })
    .await;
    let mut pi2 = Agent::start().await;
    // pi2 keeps its port across the restart below, behind the slow link.
    pi2.config.listen = pi2.addr;
    let link = SlowLink::start(pi2.addr, 1 << 20).await;
    let home = workstation_home(&[
        ("pi1", &pi1, pi1.agent_arg()),
        ("pi2", &pi2, link.addr.to_string()),
    ]);
    let bridge = Bridged::serve(home).await;
    let tmp = tempfile::tempdir().unwrap();
    let hostile = dwell_file(tmp.path(), "<img src=x onerror=alert(1)>.gcode", 8);
    let part = dwell_file(tmp.path(), "part.gcode", 1);
    let big = tmp.path().join("big.bgcode");
    std::fs::write(&big, content(9, 8 << 20)).unwrap();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let args = serde_json::json!({
        "base": bridge.url,
        "shots": shots,
        "hostile": hostile,
        "part": part,
        "big": big,
    });

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/page.py");
    let mut browser = Command::new(client_program("python"))
        .arg(&script)
        .arg(args.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What the script says on stderr (a traceback) goes into the failure.
    let stderr = browser.stderr.take().unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut answers = browser.stdin.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut said = Vec::new();
    while let Some(line) = lines.recv().await {
        let Some(checkpoint) = line.strip_prefix('@') else {
            said.push(line);
            continue;
        };
        let answer = match checkpoint {
            "link" => launch_link(&bridge).await,
            "cancelled" => {
                let landed = pi2.ready();
                let big = "big.bgcode".to_string();
                assert!(
                    !landed.contains(&big),
                    "a cancelled file landed: {landed:?}"
                );
                "ok".into()
            }
            "stop-pi2" => {
                pi2.stop().await;
                "ok".into()
            }
            "start-pi2" => {
                pi2.restart().await;
                "ok".into()
            }
            "attacked" => {
                for agent in [&pi1, &pi2] {
                    let names = agent.ready();
                    assert!(!names.iter().any(|n| n.starts_with("evil")), "{names:?}");
                }
                "ok".into()
            }
            "done" => "ok".into(),
            other => panic!("the browser script asked for {other:?}"),
        };
        writeln!(answers, "{answer}").unwrap();
        answers.flush().unwrap();
    }
    let status = browser.wait().unwrap();
    let errors = errors.join().unwrap();
    assert!(
        status.success(),
        "the browser script failed ({status}); it said:\n{}\n{errors}",
        said.join("\n")
    );
    assert!(shots.join("ui-light.png").exists() && shots.join("ui-dark-narrow.png").exists());
    bridge.stop().await;
}

/// A launch link, as `fileagent ui` gets one from a running process.
async fn launch_link(bridge: &Bridged) -> String {
    let token = bridge
        .curl(&["-X", "POST", &format!("{}/ui/launch-token", bridge.url)])
        .await;
    assert_eq!(token.status, 200, "{token:?}");
    format!("{}/ui/launch?token={}", bridge.url, token.body.trim())
}
