//! Crash safety of uploads: the agent is killed with SIGKILL at pseudo-random
//! moments while several `fileagent send` processes upload at once, and
//! started again on the same spool. After every kill no file in `ready/`
//! differs from what was sent, and the interrupted uploads resume (or start
//! afresh) on the next round until every file is stored intact.
//!
//! `FILEAGENT_KILL_POINTS` sets how many kills (default 12; the documented
//! full run uses 100). Also here: the CLI's retry and `--no-retry`.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{Home, Served, assert_exit, stderr};
use crate::support::{GUARD, content, emulated};

const FILES: usize = 4;

/// Size of each file sent: 8 MiB, 1 MiB under emulation.
fn file_len() -> usize {
    if emulated() { 1 << 20 } else { 8 << 20 }
}

/// Kills per run: `FILEAGENT_KILL_POINTS`, else 12 (2 under emulation).
fn kill_points() -> usize {
    std::env::var("FILEAGENT_KILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if emulated() { 2 } else { 12 })
}

/// Bytes held in `incoming/` (temp and partial bodies).
fn incoming_bytes(home: &Home) -> u64 {
    std::fs::read_dir(home.path().join("spool/incoming"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn sigkill(child: &Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

/// Every file in `ready/` and `done/` (where forwarded files go) is
/// byte-identical to the source its name says; returns their names.
fn check_ready(home: &Home, sources: &[Vec<u8>]) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for dir in ["ready", "done"] {
        let Ok(entries) = std::fs::read_dir(home.path().join("spool").join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let index: usize = name
                .rsplit_once('-')
                .and_then(|(_, rest)| rest.strip_suffix(".gcode"))
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("unexpected file in {dir}/: {name}"));
            let stored = match std::fs::read(entry.path()) {
                Ok(stored) => stored,
                // Forwarded since the listing (a running agent moves files
                // from ready/ to done/): it is read in done/ below.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == "ready" => continue,
                Err(e) => panic!("cannot read {name} in {dir}/: {e}"),
            };
            assert!(
                stored == sources[index],
                "{name} in {dir}/ differs from what was sent ({} bytes)",
                stored.len()
            );
            names.insert(name);
        }
    }
    names
}

/// What a killed agent left in `incoming/`: partial bodies only, each a
/// true prefix of the file its name (digest and size) says; temp files of
/// uploads that were not resumable are removed when the agent starts again.
fn check_incoming(home: &Home, sources: &[Vec<u8>]) -> usize {
    let mut partial = 0;
    for entry in std::fs::read_dir(home.path().join("spool/incoming"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(".partial") else {
            continue; // a temp file: gone at the next start, checked there
        };
        let (digest, size) = key.rsplit_once('-').unwrap();
        let source = sources
            .iter()
            .find(|s| crate::support::sha256(s) == digest && s.len().to_string() == size)
            .unwrap_or_else(|| panic!("{name} matches no file that was sent"));
        let held = std::fs::read(entry.path()).unwrap();
        assert!(
            held.len() <= source.len() && held[..] == source[..held.len()],
            "{name} is not a prefix of its file ({} bytes)",
            held.len()
        );
        partial += 1;
    }
    partial
}

fn send_all(
    home: &Home,
    served: &Served,
    files: &[PathBuf],
    round: usize,
    identity: &Path,
) -> Vec<Child> {
    files
        .iter()
        .enumerate()
        .map(|(i, file)| {
            home.cmd(&[
                "send",
                file.to_str().unwrap(),
                "--as",
                &format!("r{round}-{i}.gcode"),
                "--agent",
                &served.addr,
                "--identity",
                identity.to_str().unwrap(),
                "--no-retry",
                "--compress",
                if i % 2 == 0 { "never" } else { "always" },
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_wrong_file() {
    let _turn = crate::support::heavy();
    let home = Home::new();
    let identity = home.issue("crash-test");
    let sources: Vec<Vec<u8>> = (0..FILES)
        .map(|i| content(i as u64 + 7, file_len()))
        .collect();
    let files: Vec<PathBuf> = sources
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let path = home.path().join(format!("source-{i}.gcode"));
            std::fs::write(&path, data).unwrap();
            path
        })
        .collect();
    let total = (FILES * file_len()) as u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut resumed = 0;
    let points = kill_points();
    for round in 0..points {
        let served = Served::start(&home);
        let before = incoming_bytes(&home);
        let mut children = send_all(&home, &served, &files, round, &identity);
        // A pseudo-random moment: once this round has received this much
        // more (up to half of everything), or when the sends are over.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delta = seed % (total / 2);
        let deadline = Instant::now() + GUARD;
        while incoming_bytes(&home).saturating_sub(before) < delta
            && children.iter_mut().any(|c| c.try_wait().unwrap().is_none())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        sigkill(&served.child);
        for child in children {
            let out = child.wait_with_output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("resumed after") {
                resumed += 1;
            }
        }
        drop(served);
        check_ready(&home, &sources);
        check_incoming(&home, &sources);
    }
    // A last round without a kill: everything arrives, intact.
    let served = Served::start(&home);
    for child in send_all(&home, &served, &files, points, &identity) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        if String::from_utf8_lossy(&out.stdout).contains("resumed after") {
            resumed += 1;
        }
    }
    let stored = check_ready(&home, &sources).len();
    assert!(stored >= FILES, "{stored}");
    let left = std::fs::read_dir(home.path().join("spool/incoming"))
        .unwrap()
        .count();
    assert_eq!(
        check_incoming(&home, &sources),
        left,
        "only partial bodies stay in incoming/"
    );
    // With a dozen kills some land mid-body; with two (emulation) maybe not.
    assert!(
        resumed > 0 || points < 10,
        "no send resumed in {points} kills"
    );
    eprintln!(
        "{points} SIGKILLs: {stored} files stored intact, {resumed} sends resumed an interrupted upload"
    );
    let (_, log) = served.terminate();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn send_retries_network_failures_and_can_be_told_not_to() {
    let home = Home::new();
    let identity = home.issue("retrier");
    let file = crate::support::data("tiny.gcode");
    let id = identity.to_str().unwrap();
    let send = |agent: &str, more: &[&str]| {
        let args = [
            "send",
            file.to_str().unwrap(),
            "--agent",
            agent,
            "--identity",
            id,
        ];
        home.run(&[&args[..], more].concat())
    };
    // Something that accepts and hangs up at once, as an agent at its
    // limit of unauthenticated connections does: worth retrying.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = busy.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in busy.incoming() {
            drop(conn);
        }
    });
    let out = send(&agent, &["--retries", "1"]);
    assert_exit(&out, 3, "retrying in 1s (retry 1 of 1");
    let out = send(&agent, &["--no-retry"]);
    assert_exit(&out, 3, "cannot reach the agent");
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));

    // A port nothing listens on (bound, then closed): a wrong address or
    // port, said at once, not retried for 15 s.
    let port = crate::support::free_port();
    let out = send(&format!("127.0.0.1:{port}"), &[]);
    assert_exit(&out, 3, "nothing listens at 127.0.0.1:");
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));
}

/// OctoPrint's files named like this round's sends, with their upload dates.
async fn octoprint_files(octo: &crate::octoprint::OctoPrint) -> Vec<(String, i64)> {
    let listed = octo.get("/api/files?recursive=true").await.unwrap();
    listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| Some((f["name"].as_str()?.to_string(), f["date"].as_i64()?)))
        .filter(|(name, _)| name.starts_with('r'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_and_forwards_never_forwards_wrong_or_twice() {
    let _turn = crate::support::heavy();
    let octo = crate::octoprint::OctoPrint::start().await;
    let home = Home::new();
    let mut text = std::fs::read_to_string(home.config()).unwrap();
    text.push_str(&format!(
        "settle_time = \"200ms\"\n[octoprint]\nurl = \"{}\"\napi_key = \"{}\"\nauto_print = \"never\"\n\
         poll_interval = \"200ms\"\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\n",
        octo.url(),
        octo.key
    ));
    std::fs::write(home.config(), text).unwrap();
    let identity = home.issue("forward-crash");
    let len = if emulated() { 256 << 10 } else { 2 << 20 };
    let sources: Vec<Vec<u8>> = (0..FILES).map(|i| content(i as u64 + 70, len)).collect();
    let files: Vec<PathBuf> = sources
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let path = home.path().join(format!("fw-source-{i}.gcode"));
            std::fs::write(&path, data).unwrap();
            path
        })
        .collect();
    let points = (kill_points() / 2).max(2);
    let mut first_seen: std::collections::BTreeMap<String, i64> = Default::default();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..=points {
        let served = Served::start(&home);
        let children = send_all(&home, &served, &files, round, &identity);
        if round < points {
            // A pseudo-random moment in this round: while receiving,
            // committing or forwarding.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(seed % 1500));
            sigkill(&served.child);
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                round < points || out.status.success(),
                "the last round's sends must succeed"
            );
        }
        if round == points {
            let arrived = crate::support::poll(
                crate::octoprint::OCTO_GUARD,
                Duration::from_millis(200),
                async || {
                    // Every file the agent stored, and the whole last round,
                    // is on OctoPrint.
                    let in_agent = check_ready(&home, &sources);
                    let on_octoprint: std::collections::BTreeSet<String> = octoprint_files(&octo)
                        .await
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect();
                    let last_round =
                        (0..FILES).all(|i| in_agent.contains(&format!("r{points}-{i}.gcode")));
                    (last_round && in_agent.is_subset(&on_octoprint)).then_some(())
                },
            )
            .await;
            if arrived.is_none() {
                let listing = |dir: &str| -> Vec<String> {
                    std::fs::read_dir(home.path().join("spool").join(dir))
                        .map(|d| {
                            d.flatten()
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default()
                };
                panic!(
                    "not every stored file reached OctoPrint\nready: {:?}\ndone: {:?}\nOctoPrint: {:?}\nagent log:\n{}",
                    listing("ready"),
                    listing("done"),
                    octoprint_files(&octo).await,
                    served.log()
                );
            }
        }
        drop(served);
        check_ready(&home, &sources);
        // Everything OctoPrint has is what was sent, and nothing came twice.
        for (name, date) in octoprint_files(&octo).await {
            let index: usize = name
                .rsplit_once('-')
                .unwrap()
                .1
                .trim_end_matches(".gcode")
                .parse()
                .unwrap();
            let got = octo.download(&name).await.unwrap();
            assert!(
                got == sources[index],
                "{name} on OctoPrint differs from what was sent"
            );
            let first = *first_seen.entry(name.clone()).or_insert(date);
            assert_eq!(first, date, "{name} was uploaded to OctoPrint again");
        }
    }
    eprintln!(
        "{points} SIGKILLs during uploads and forwards: {} files on OctoPrint, each intact and uploaded once",
        first_seen.len()
    );
    assert!(first_seen.len() >= FILES);
}
