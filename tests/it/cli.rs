//! The real `fileagent` binary: `init`, `client issue`, `serve` as a child
//! process, every workstation command, `--json` output, exit codes, the
//! client config file, and what the agent logs.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};

use crate::support::{GUARD, data, fileagent_command, sha256, workstation_command};

/// A temp home for one test: agent config, state, spool and a workstation
/// config folder (`XDG_CONFIG_HOME`), so the user's real files are never read.
pub(crate) struct Home {
    dir: tempfile::TempDir,
}

/// The commands that run on the agent's machine (`Command::is_agent_side`):
/// `serve`, `init`, `client`, and `pair` without HOST CODE.
fn is_agent_command(args: &[&str]) -> bool {
    match args.first() {
        Some(&("serve" | "init" | "client")) => true,
        Some(&"pair") => args.get(1).is_none_or(|a| a.starts_with('-')),
        _ => false,
    }
}

impl Home {
    pub(crate) fn new() -> Home {
        let home = Home {
            dir: tempfile::tempdir().unwrap(),
        };
        let root = home.path();
        std::fs::write(
            root.join("agent.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\nserver_names = [\"localhost\", \"127.0.0.1\"]\n\
                 state_dir = \"{0}/state\"\nspool_dir = \"{0}/spool\"\nmin_free_space = \"1 MiB\"\n",
                root.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("xdg/fileagent")).unwrap();
        home
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.path().join("agent.toml")
    }

    /// A command with an isolated environment, run in the temp home: the
    /// agent's commands by the native binary, the workstation's by the
    /// build under test (see `support::workstation_command`).
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = match is_agent_command(args) {
            true => fileagent_command(),
            false => workstation_command(),
        };
        cmd.args(args)
            .current_dir(self.path())
            .env("XDG_CONFIG_HOME", self.path().join("xdg"))
            .env("HOME", self.path())
            .env_remove("FILEAGENT_AGENT")
            .env_remove("FILEAGENT_IDENTITY")
            .env_remove("RUST_LOG");
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// An identity for `name` from the agent's keys (made by `init` first,
    /// as `serve` would: only those two make keys).
    pub(crate) fn issue(&self, name: &str) -> PathBuf {
        let out = self.path().join(format!("{name}.pem"));
        let config = self.config();
        assert_ok(&self.run(&["init", "--config", config.to_str().unwrap()]));
        let output = self.run(&[
            "client",
            "issue",
            name,
            "--out",
            out.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ]);
        assert_ok(&output);
        out
    }
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        stdout(output),
        stderr(output)
    );
}

pub(crate) fn assert_exit(output: &Output, code: i32, message: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
    assert!(
        stderr(output).contains(message),
        "stderr lacks {message:?}: {}",
        stderr(output)
    );
    assert_causes_once(&stderr(output));
}

/// Each cause in an error line is named once: a cause that an error's
/// message holds and that is also its `source()` would print twice.
fn assert_causes_once(stderr: &str) {
    for line in stderr.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        for (i, part) in parts.iter().enumerate() {
            assert!(
                part.len() < 8 || !parts[i + 1..].contains(part),
                "{part:?} twice in {line:?}"
            );
        }
    }
}

/// `fileagent serve` as a child; its log lines are collected as they come.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    pub(crate) fn start(home: &Home) -> Served {
        Served::start_with(home, &[])
    }

    /// Starts `serve` with extra environment variables.
    pub(crate) fn start_with(home: &Home, env: &[(&str, &str)]) -> Served {
        let config = home.config();
        let mut cmd = home.cmd(&["serve", "--config", config.to_str().unwrap()]);
        cmd.envs(env.iter().copied());
        Served::spawn(cmd)
    }

    /// Starts `cmd`, which runs `fileagent serve` (perhaps wrapped), and
    /// waits until the agent listens.
    pub(crate) fn spawn(mut cmd: Command) -> Served {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(" listening ") {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next());
                    let _ = tx.send(addr.map(str::to_owned));
                }
                lines.lock().unwrap().push(line);
            }
            let _ = tx.send(None);
        });
        let addr = rx.recv_timeout(GUARD).ok().flatten();
        let served = Served {
            child,
            addr: addr.unwrap_or_default(),
            log,
        };
        // One that did not start is stopped too (by `drop`), not left running.
        assert!(
            !served.addr.is_empty(),
            "agent did not start: {}",
            served.log()
        );
        served
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status.
    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, String) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        (status, self.log())
    }
}

impl Drop for Served {
    /// SIGTERM first, so a wrapper (the disk-full test's shell) can stop the
    /// agent it started instead of leaving it behind; SIGKILL after 5 s.
    fn drop(&mut self) {
        // Already waited for (`terminate`): its pid may be another's now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn init_is_idempotent_and_writes_private_keys() {
    let home = Home::new();
    let config = home.config();
    let first = home.run(&["init", "--config", config.to_str().unwrap()]);
    assert_ok(&first);
    assert!(
        stdout(&first).contains("CA              created"),
        "{}",
        stdout(&first)
    );
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(home.path().join("state").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let key = std::fs::read(home.path().join("state/ca.key")).unwrap();
    let second = home.run(&["init", "--config", config.to_str().unwrap()]);
    assert_ok(&second);
    assert!(stdout(&second).contains("CA              kept"));
    assert_eq!(
        std::fs::read(home.path().join("state/ca.key")).unwrap(),
        key
    );
    assert!(
        home.path().join("spool/ready").is_dir() && home.path().join("spool/incoming").is_dir()
    );
}

#[test]
fn init_without_a_config_uses_a_local_data_dir() {
    let home = Home::new();
    let output = home.run(&["init"]);
    assert_ok(&output);
    assert!(
        stdout(&output).contains("built-in defaults"),
        "{}",
        stdout(&output)
    );
    assert!(home.path().join("fileagent-data/state/ca.key").exists());
}

/// Defect 7 of issue 21: the agent-side commands other than `serve` and
/// `init` never make keys; run away from the agent's state they say where
/// they looked and how to point them at it.
#[test]
fn agent_commands_away_from_the_agent_make_no_keys_and_say_where_they_looked() {
    let home = Home::new();
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let config = home.config();
    let run = |args: &[&str]| {
        let mut cmd = home.cmd(args);
        cmd.current_dir(&elsewhere);
        cmd.output().unwrap()
    };
    for args in [
        &["client", "list"][..],
        &["client", "revoke", "alice"],
        &["client", "issue", "alice", "--out", "alice.pem"],
        &["pair", "--ttl", "1m"],
    ] {
        let out = run(args);
        assert_exit(&out, 2, "no agent keys in ");
        let said = stderr(&out);
        assert!(
            said.contains("elsewhere/fileagent-data/state")
                && said.contains("built-in defaults")
                && said.contains("--config"),
            "{args:?}: {said}"
        );
    }
    assert!(!elsewhere.join("fileagent-data").exists());
    // Pointed at a config whose state_dir has no keys: said so too.
    let out = run(&["client", "list", "--config", config.to_str().unwrap()]);
    assert_exit(&out, 2, "is it the agent's config?");
    assert!(!home.path().join("state").exists());
    // Once the agent made its keys, the same command works.
    assert_ok(&home.run(&["init", "--config", config.to_str().unwrap()]));
    assert_ok(&run(&[
        "client",
        "list",
        "--config",
        config.to_str().unwrap(),
    ]));
}

#[test]
fn client_issue_writes_a_private_identity_and_never_overwrites() {
    let home = Home::new();
    let pem = home.issue("alice-laptop");
    let text = std::fs::read_to_string(&pem).unwrap();
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
    assert_eq!(text.matches("PRIVATE KEY-----").count(), 2);
    assert_eq!(
        std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config = home.config();
    let again = home.run(&[
        "client",
        "issue",
        "alice-laptop",
        "--out",
        pem.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_exit(&again, 2, "already exists");
    let bad = home.run(&[
        "client",
        "issue",
        "../evil",
        "--out",
        "x.pem",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_exit(&bad, 2, "invalid client name");
}

#[test]
fn a_workstation_session_end_to_end() {
    let home = Home::new();
    let identity = home.issue("bench-pc");
    let served = Served::start(&home);
    let id = identity.to_str().unwrap();
    let agent = served.addr.as_str();
    let tiny = data("tiny.gcode");
    let cube = data("cube-20mm.gcode");

    let sent = home.run(&[
        "send",
        tiny.to_str().unwrap(),
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_ok(&sent);
    let line = stdout(&sent);
    assert!(
        line.starts_with("sent tiny.gcode  733 B  ") && line.contains("s  sha256 "),
        "{line}"
    );
    assert!(
        line.contains(&sha256(&std::fs::read(&tiny).unwrap())),
        "{line}"
    );

    let json = home.run(&[
        "send",
        cube.to_str().unwrap(),
        "--as",
        "cube.gcode",
        "--json",
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_ok(&json);
    let results: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(results[0]["name"], "cube.gcode");
    assert_eq!(results[0]["sha256"], sha256(&std::fs::read(&cube).unwrap()));

    // Different content under an existing name: refused, exit 1, with advice.
    let clash = home.run(&[
        "send",
        cube.to_str().unwrap(),
        "--as",
        "tiny.gcode",
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_exit(&clash, 1, "--overwrite");
    let forced = home.run(&[
        "send",
        cube.to_str().unwrap(),
        "--as",
        "tiny.gcode",
        "--overwrite",
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_ok(&forced);
    assert!(stdout(&forced).starts_with("replaced tiny.gcode"));

    let list = home.run(&["list", "--agent", agent, "--identity", id]);
    assert_ok(&list);
    assert!(stdout(&list).starts_with("NAME"), "{}", stdout(&list));
    assert!(stdout(&list).contains("cube.gcode"));
    let list = home.run(&["list", "--json", "--agent", agent, "--identity", id]);
    let files: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(files.as_array().unwrap().len(), 2);

    let back = home.path().join("back.gcode");
    let got = home.run(&[
        "get",
        "cube.gcode",
        "-o",
        back.to_str().unwrap(),
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_ok(&got);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&cube).unwrap());
    let get_again = |more: &[&str]| {
        let mut words = vec!["get", "cube.gcode", "-o", back.to_str().unwrap()];
        words.extend_from_slice(more);
        words.extend_from_slice(&["--agent", agent, "--identity", id]);
        home.run(&words)
    };
    // The same file there already: nothing to do.
    let same = get_again(&[]);
    assert_ok(&same);
    assert!(
        stdout(&same).starts_with("unchanged cube.gcode"),
        "{}",
        stdout(&same)
    );
    std::fs::write(&back, b"mine").unwrap();
    assert_exit(
        &get_again(&[]),
        2,
        "it is there already with different content; pass --overwrite",
    );
    assert_ok(&get_again(&["--overwrite"]));

    let status = home.run(&["status", "--json", "--agent", agent, "--identity", id]);
    assert_ok(&status);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (status["ready"].as_u64(), status["client"].as_str()),
        (Some(2), Some("bench-pc"))
    );
    // The suite this CPU prefers (both ends run here), as negotiated.
    let expected = match fileagent::wire::tls::Preference::detect() {
        fileagent::wire::tls::Preference::AesGcm => "TLS13_AES_128_GCM_SHA256",
        fileagent::wire::tls::Preference::ChaCha20 => "TLS13_CHACHA20_POLY1305_SHA256",
    };
    assert_eq!(status["tls_cipher_suite"], expected);
    let text = home.run(&["status", "--agent", agent, "--identity", id]);
    assert!(
        stdout(&text).contains(&format!("tls         {expected} (this host prefers")),
        "{}",
        stdout(&text)
    );

    assert_ok(&home.run(&["ping", "--agent", agent, "--identity", id]));
    assert_ok(&home.run(&["delete", "cube.gcode", "--agent", agent, "--identity", id]));
    let gone = home.run(&["delete", "cube.gcode", "--agent", agent, "--identity", id]);
    assert_exit(&gone, 1, "no file named \"cube.gcode\"");

    // A folder sends each file in it.
    let folder = home.path().join("batch");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a.gcode"), "G28\n").unwrap();
    std::fs::write(folder.join("b.gcode"), "G1 X1\n").unwrap();
    std::fs::write(folder.join(".hidden"), "x").unwrap();
    let batch = home.run(&[
        "send",
        folder.to_str().unwrap(),
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_ok(&batch);
    assert_eq!(stdout(&batch).lines().count(), 2, "{}", stdout(&batch));

    let (status, log) = served.terminate();
    assert!(status.success(), "agent exited with {status}: {log}");
    assert!(
        log.contains("connected client_cn=bench-pc suite=TLS13_"),
        "{log}"
    );
    assert!(log.contains("tls=\"prefers "), "{log}");
    assert!(
        log.contains("stored client_cn=bench-pc file_name=cube.gcode"),
        "{log}"
    );
    assert!(log.contains("server stopped"), "{log}");
    assert!(
        std::fs::read_dir(home.path().join("spool/incoming"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn agent_and_identity_come_from_the_environment_or_the_client_config() {
    let home = Home::new();
    let identity = home.issue("envy");
    let served = Served::start(&home);

    let via_env = home
        .cmd(&["ping"])
        .env("FILEAGENT_AGENT", &served.addr)
        .env("FILEAGENT_IDENTITY", &identity)
        .output()
        .unwrap();
    assert_ok(&via_env);

    let client_toml = format!(
        "default_agent = \"printer\"\n[agents.printer]\naddress = \"{}\"\nidentity = \"{}\"\n",
        served.addr,
        identity.display()
    );
    std::fs::write(home.path().join("xdg/fileagent/client.toml"), client_toml).unwrap();
    assert_ok(&home.run(&["ping"]));
    assert_ok(&home.run(&["status", "--agent", "printer"]));

    // Without any identity setting, identity.pem in the config folder is used.
    std::fs::write(home.path().join("xdg/fileagent/client.toml"), "").unwrap();
    std::fs::copy(&identity, home.path().join("xdg/fileagent/identity.pem")).unwrap();
    assert_ok(&home.run(&["ping", "--agent", &served.addr]));
}

#[test]
fn failures_have_distinct_exit_codes_and_say_what_to_do() {
    let home = Home::new();
    let identity = home.issue("oops");
    let id = identity.to_str().unwrap();

    // 2: usage and configuration.
    assert_exit(&home.run(&["ping"]), 2, "no agent given");
    assert_exit(
        &home.run(&[
            "ping",
            "--agent",
            "127.0.0.1:1",
            "--identity",
            "missing.pem",
        ]),
        2,
        "fileagent pair HOST CODE",
    );
    assert_exit(
        &home.run(&[
            "send",
            "nope.gcode",
            "--agent",
            "127.0.0.1:1",
            "--identity",
            id,
        ]),
        2,
        "nope.gcode",
    );
    std::fs::write(
        home.path().join("bad.toml"),
        "listen = \"127.0.0.1:0\"\nmax_conections = 3\n",
    )
    .unwrap();
    let bad = home.run(&["serve", "--config", "bad.toml"]);
    assert_exit(&bad, 2, "bad.toml");
    assert!(
        stderr(&bad).contains("line 2") && stderr(&bad).contains("max_conections"),
        "{}",
        stderr(&bad)
    );
    assert_exit(
        &home.run(&["serve", "--config", "absent.toml"]),
        2,
        "cannot read config file absent.toml",
    );

    // 3: network. A port that was just free is refused.
    let port = crate::support::free_port();
    let agent = format!("127.0.0.1:{port}");
    assert_exit(
        &home.run(&["ping", "--agent", &agent, "--identity", id]),
        3,
        "is `fileagent serve` running",
    );

    // 3: an identity from another agent is refused by this one.
    let other = Home::new();
    let foreign = other.issue("stranger");
    let served = Served::start(&home);
    // A port check (connect, then close) is not a refused handshake.
    drop(std::net::TcpStream::connect(&served.addr).unwrap());
    let refused = home.run(&[
        "ping",
        "--agent",
        &served.addr,
        "--identity",
        foreign.to_str().unwrap(),
    ]);
    assert_exit(&refused, 3, "not signed by the CA in your identity file");
    let (_, log) = served.terminate();
    assert_eq!(log.matches("TLS handshake refused").count(), 1, "{log}");
}

#[test]
fn ctrl_c_interrupts_a_client_cleanly() {
    let home = Home::new();
    let identity = home.issue("impatient");
    // A listener that accepts and then says nothing: the client waits in its handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = silent.local_addr().unwrap().to_string();
    let mut child = home
        .cmd(&[
            "ping",
            "--agent",
            &agent,
            "--identity",
            identity.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_conn, _) = silent.accept().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; nothing partial was kept"),
        "{err}"
    );
}

/// Issue 21, rough edges of `send` and `get`: an unknown agent or a bad
/// address is named as such (not blamed on identity.pem); an identity file
/// others can read is warned about; a folder says what it does not send;
/// `--json` reports the files that failed too; `get` checks where it
/// writes before fetching, and the same file there already is `unchanged`.
#[test]
fn send_and_get_say_what_happened_in_the_first_hour() {
    let home = Home::new();
    let identity = home.issue("first-hour");
    let served = Served::start(&home);
    let id = identity.to_str().unwrap();
    let agent = served.addr.as_str();

    let unknown = home.run(&["ping", "--agent", "pi"]);
    assert_exit(&unknown, 2, "no paired agent \"pi\"");
    assert!(
        !stderr(&unknown).contains("identity.pem"),
        "{}",
        stderr(&unknown)
    );
    let bad = home.run(&["ping", "--agent", "pi:abc"]);
    assert_exit(&bad, 2, "invalid agent address \"pi:abc\"");

    // Unix only: on Windows the identity is guarded by the profile's ACL.
    if !crate::support::foreign_workstation() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exposed = home.run(&["ping", "--agent", agent, "--identity", id]);
        assert_ok(&exposed);
        assert!(
            stderr(&exposed).contains("is readable by others (mode 0644)")
                && stderr(&exposed).contains("chmod 600"),
            "{}",
            stderr(&exposed)
        );
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // A folder with a subfolder, a hidden file, and a name taken already.
    let plates = home.path().join("plates");
    std::fs::create_dir_all(plates.join("old")).unwrap();
    std::fs::write(plates.join(".DS_Store"), b"x").unwrap();
    std::fs::copy(data("tiny.gcode"), plates.join("a.gcode")).unwrap();
    std::fs::write(plates.join("b.gcode"), b"G28 ; b\n").unwrap();
    let taken = home.path().join("b.gcode");
    std::fs::write(&taken, b"G28 ; another b\n").unwrap();
    let first = home.run(&[
        "send",
        taken.to_str().unwrap(),
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_ok(&first);
    let sent = home.run(&[
        "send",
        plates.to_str().unwrap(),
        "--agent",
        agent,
        "--identity",
        id,
        "--json",
    ]);
    assert_exit(&sent, 1, "1 of 2 files was not sent");
    assert!(
        stderr(&sent).contains("not sending 1 subfolder (old), 1 hidden file (.DS_Store)"),
        "{}",
        stderr(&sent)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&sent)).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(rows[0]["name"], "a.gcode");
    assert!(rows[0]["sha256"].is_string());
    assert_eq!(rows[1]["name"], "b.gcode");
    assert_eq!(rows[1]["code"], "exists");
    assert!(rows[1]["error"].as_str().unwrap().contains("--overwrite"));

    // get: a folder that is not there is said before anything is fetched.
    let missing = home.path().join("nowhere/a.gcode");
    let out = home.run(&[
        "get",
        "a.gcode",
        "-o",
        missing.to_str().unwrap(),
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_exit(&out, 2, "no folder ");
    assert!(!stderr(&out).contains(".fileagent-"), "{}", stderr(&out));
    let out = home.run(&[
        "get",
        "a.gcode",
        "-o",
        "nowhere/",
        "--agent",
        agent,
        "--identity",
        id,
    ]);
    assert_exit(&out, 2, "no folder nowhere/");
    // The same file there already: unchanged. Another one: kept, refused.
    let here = home.path().join("a.gcode");
    std::fs::copy(data("tiny.gcode"), &here).unwrap();
    let out = home.run(&["get", "a.gcode", "--agent", agent, "--identity", id]);
    assert_ok(&out);
    assert!(
        stdout(&out).starts_with("unchanged a.gcode -> a.gcode"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&here, b"mine").unwrap();
    let out = home.run(&["get", "a.gcode", "--agent", agent, "--identity", id]);
    assert_exit(&out, 2, "it is there already with different content");
    assert_eq!(std::fs::read(&here).unwrap(), b"mine");
    std::fs::write(&here, vec![b'x'; 733]).unwrap();
    let out = home.run(&["get", "a.gcode", "--agent", agent, "--identity", id]);
    assert_exit(&out, 2, "it is there already with different content");
    assert_eq!(std::fs::read(&here).unwrap(), vec![b'x'; 733]);
    let out = home.run(&[
        "get",
        "a.gcode",
        "--agent",
        agent,
        "--identity",
        id,
        "--overwrite",
    ]);
    assert_ok(&out);
    assert_eq!(
        std::fs::read(&here).unwrap(),
        std::fs::read(data("tiny.gcode")).unwrap()
    );
}

/// A name the agent keeps but this system cannot hold as a file (Windows:
/// `aux.gcode` is the AUX device) is refused by `get` with what to do, and
/// nothing is written; where it can be a file, it is fetched as usual.
#[test]
fn get_refuses_a_name_this_system_cannot_hold() {
    let home = Home::new();
    let identity = home.issue("names");
    let served = Served::start(&home);
    let (id, agent) = (identity.to_str().unwrap(), served.addr.as_str());
    let tiny = data("tiny.gcode");
    let as_device = ["--agent", agent, "--identity", id];
    let sent = home.run(
        &[
            &["send", tiny.to_str().unwrap(), "--as", "aux.gcode"][..],
            &as_device[..],
        ]
        .concat(),
    );
    assert_ok(&sent);
    let got = home.run(&[&["get", "aux.gcode"][..], &as_device[..]].concat());
    if crate::support::foreign_workstation() {
        assert_exit(
            &got,
            2,
            "\"aux.gcode\" would name the device AUX here, not a file; pass -o with another name",
        );
        let renamed = home.run(
            &[
                &["get", "aux.gcode", "-o", "aux-part.gcode"][..],
                &as_device[..],
            ]
            .concat(),
        );
        assert_ok(&renamed);
        assert_eq!(
            std::fs::read(home.path().join("aux-part.gcode")).unwrap(),
            std::fs::read(&tiny).unwrap()
        );
    } else {
        assert_ok(&got);
        assert_eq!(
            std::fs::read(home.path().join("aux.gcode")).unwrap(),
            std::fs::read(&tiny).unwrap()
        );
    }
}

/// Output into a pipe whose reader has gone (`fileagent status | head -1`
/// once head has exited) ends the command quietly, with success: no panic.
#[test]
fn a_reader_that_went_away_ends_the_command_quietly() {
    let home = Home::new();
    let identity = home.issue("pipe");
    let served = Served::start(&home);
    let mut child = home
        .cmd(&[
            "status",
            "--agent",
            &served.addr,
            "--identity",
            identity.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(out.status.code(), Some(0), "{said}");
}
