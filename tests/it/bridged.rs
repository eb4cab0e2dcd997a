//! A bridge for the tests: `fileagent bridge` served in this process on
//! 127.0.0.1:0, with a workstation config folder of its own naming the
//! test's agents and groups; curl for raw requests (as the slicers make
//! them), and the pinned OctoPrint client programs (scripts/octoprint-dev.sh
//! clients) as subprocesses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::Agent;

/// A workstation's config folder (`XDG_CONFIG_HOME`) naming each agent
/// (name, agent, the address to reach it at), the first the default, each
/// with an identity of its own.
pub fn workstation_home(agents: &[(&str, &Agent, String)]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fileagent");
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = format!("default_agent = \"{}\"\n", agents[0].0);
    for (name, agent, address) in agents {
        let pem = agent.identity_pem("slicer-pc");
        std::fs::write(dir.join(format!("{name}.pem")), pem).unwrap();
        config.push_str(&format!(
            "[agents.{name}]\naddress = \"{address}\"\nidentity = \"{name}.pem\"\n"
        ));
    }
    std::fs::write(dir.join("client.toml"), config).unwrap();
    home
}

/// A running bridge.
pub struct Bridged {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub key: String,
    /// `XDG_CONFIG_HOME` for the CLI: `fileagent/` in it holds client.toml.
    pub home: tempfile::TempDir,
    /// Where the bridge spools uploads.
    pub spool: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Bridged {
    /// A bridge for `agents` (the first is the default agent) and `groups`.
    pub async fn start(agents: &[(&str, &Agent)], groups: &[(&str, &[&str])]) -> Bridged {
        let at: Vec<(&str, &Agent, String)> = agents
            .iter()
            .map(|(n, a)| (*n, *a, a.agent_arg()))
            .collect();
        let home = workstation_home(&at);
        let dir = home.path().join("fileagent");
        let mut config = std::fs::read_to_string(dir.join("client.toml")).unwrap();
        config.push_str("[groups]\n");
        for (name, members) in groups {
            let members: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
            config.push_str(&format!("{name} = [{}]\n", members.join(", ")));
        }
        std::fs::write(dir.join("client.toml"), config).unwrap();
        Bridged::serve(home).await
    }

    /// Serves a bridge on the config in `home`.
    pub async fn serve(home: tempfile::TempDir) -> Bridged {
        let dir = home.path().join("fileagent");
        let key = "0123456789ABCDEF0123456789ABCDEF".to_string();
        let spool = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bridge = fileagent::workstation::bridge::Bridge::new(
            dir,
            key.clone(),
            spool.path().to_path_buf(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            fileagent::workstation::bridge::serve(listener, bridge, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Bridged {
            url,
            key,
            home,
            spool,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The files the bridge holds in its spool (none once it answered).
    pub fn spooled(&self) -> Vec<String> {
        std::fs::read_dir(self.spool.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// curl with the bridge's key; `args` follow.
    pub async fn curl(&self, args: &[&str]) -> Reply {
        let key = format!("X-Api-Key: {}", self.key);
        let mut all = vec!["-H", &key];
        all.extend_from_slice(args);
        curl(&all).await
    }

    /// Stops the bridge.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// What curl got: the final status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Runs curl (`-sS -i` and `args`); interim `100 Continue` answers skipped.
pub async fn curl(args: &[&str]) -> Reply {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-i"])
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = head.split_once('\n').map_or("", |(_, h)| h).to_string();
        return Reply {
            status,
            headers,
            body: body.to_string(),
        };
    }
}

static CLIENTS: Mutex<bool> = Mutex::new(false);

/// A program of the pinned OctoPrint clients' venv, installed once per run.
pub fn client_program(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut done = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        let status = Command::new(root.join("scripts/octoprint-dev.sh"))
            .arg("clients")
            .status()
            .unwrap();
        assert!(status.success(), "scripts/octoprint-dev.sh clients failed");
        *done = true;
    }
    let venv = std::env::var_os("FILEAGENT_CLIENTS_VENV")
        .map_or_else(|| root.join("target/octoprint/clients"), PathBuf::from);
    venv.join("bin").join(name)
}

/// Runs `program` with `args` in `dir`; its output.
pub async fn run(program: PathBuf, args: Vec<String>, dir: PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
    })
    .await
    .unwrap()
}

/// A Python script run by the clients' venv in `dir`; its stdout, after
/// checking it succeeded.
pub async fn python(script: &str, dir: &Path) -> String {
    let out = run(
        client_program("python"),
        vec!["-c".into(), script.into()],
        dir.to_path_buf(),
    )
    .await;
    assert!(
        out.status.success(),
        "python failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
