//! The bridge under a big upload: `fileagent bridge` as its own process,
//! a 2 GiB print file through it to a real agent, and the bridge's peak
//! memory (VmHWM) before and after: the body is spooled and sent in
//! pieces, so the peak does not grow with the file.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use crate::bridged::curl;
use crate::support::{Agent, emulated, heavy};

/// The peak resident memory of process `pid`, in KiB (Linux's VmHWM).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A G-code-like file of `size` bytes (slicer output compresses like this).
fn gcode(path: &std::path::Path, size: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        let line = format!(
            "G1 X{}.{} Y{}.{} E{}.{:03}\n",
            i % 220,
            i % 10,
            (i * 7) % 220,
            i % 9,
            i / 100,
            i % 1000
        );
        let take = line.len().min((size - written) as usize);
        out.write_all(&line.as_bytes()[..take]).unwrap();
        written += take as u64;
        i += 1;
    }
    out.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_upload_passes_the_bridge_in_constant_memory() {
    let _turn = heavy();
    // Under qemu or wine a smaller file shows the same, and the runner's
    // own memory is what /proc shows: only the transfer is checked there.
    let foreign = emulated() || crate::support::foreign_workstation();
    let size: u64 = if foreign { 256 << 20 } else { 2 << 30 };
    let agent = Agent::start_with(|c| c.max_file_size = bytesize::ByteSize::gib(3)).await;
    let home = crate::bridged::workstation_home(&[("pi", &agent, agent.agent_arg())]);
    let spool = tempfile::tempdir().unwrap();
    let mut bridge = crate::support::workstation_command()
        .args(["bridge", "--listen", "127.0.0.1:0"])
        .env("XDG_CONFIG_HOME", home.path())
        .env("TMPDIR", spool.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(bridge.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let key = String::from_utf8(
        crate::support::workstation_command()
            .args(["bridge", "--show-key"])
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let key = format!("X-Api-Key: {}", key.trim());

    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.gcode");
    gcode(&small, 1 << 20);
    let upload =
        |path: &std::path::Path, name: &str| format!("file=@{};filename={name}", path.display());
    let target = format!("{url}/a/pi/api/files/local");
    let reply = curl(&["-H", &key, "-F", &upload(&small, "small.gcode"), &target]).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let before = peak_kib(bridge.id());

    let big = tmp.path().join("big.gcode");
    gcode(&big, size);
    let reply = curl(&["-H", &key, "-F", &upload(&big, "big.gcode"), &target]).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let after = peak_kib(bridge.id());
    assert_eq!(
        std::fs::metadata(agent.config.spool_dir.join("ready/big.gcode"))
            .unwrap()
            .len(),
        size
    );
    eprintln!(
        "bridge peak memory: {before} KiB after 1 MiB, {after} KiB after {} MiB",
        size >> 20
    );
    if !foreign {
        assert!(
            after < before + 16 * 1024,
            "the bridge's peak grew from {before} KiB to {after} KiB"
        );
    }
    let _ = bridge.kill();
    let _ = bridge.wait();
    // (Wine keeps files of its own in TMPDIR too.)
    let left: Vec<_> = (std::fs::read_dir(spool.path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".fileagent-bridge-"))
        .collect();
    assert!(left.is_empty(), "spooled files left: {left:?}");
}
