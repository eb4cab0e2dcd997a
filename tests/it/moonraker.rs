//! A real Klipper printer without hardware, for the forwarding tests:
//! Moonraker and klippy from PyPI (installed by `scripts/moonraker-dev.sh`)
//! over the MCU stand-in (`scripts/klipper-mcu.py`), Moonraker on a free
//! port of 127.0.0.1. Moonraker and klippy can each be stopped and
//! started again.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// Longest wait for the stack to start or for a print state to show.
pub const MOON_GUARD: Duration = Duration::from_secs(90);

static INSTALL: Mutex<bool> = Mutex::new(false);

fn script() -> std::path::PathBuf {
    crate::support::script("moonraker-dev.sh")
}

/// Installs Moonraker and klippy into their cached venvs once per run.
fn install() {
    crate::support::install_once(&INSTALL, "moonraker-dev.sh");
}

/// A running Moonraker with klippy behind it, in a private data dir.
pub struct Moonraker {
    moonraker: Option<Child>,
    klipper: Option<Child>,
    data: tempfile::TempDir,
    port: u16,
    pub key: String,
    http: reqwest::Client,
}

impl Moonraker {
    /// Installs (once), configures and starts klippy and Moonraker;
    /// returns once Klipper is ready.
    pub async fn start() -> Moonraker {
        tokio::task::spawn_blocking(install).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let port = crate::support::free_port();
        let status = Command::new(script())
            .args(["prepare", data.path().to_str().unwrap(), &port.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/moonraker-dev.sh prepare failed");
        let mut moon = Moonraker {
            moonraker: None,
            klipper: None,
            data,
            port,
            key: String::new(),
            http: reqwest::Client::new(),
        };
        moon.resume_klipper();
        moon.resume().await;
        moon.key = moon.read_key().await;
        moon.wait_ready().await;
        moon
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&self, what: &str) -> Child {
        let log = std::fs::File::create(self.data.path().join(format!("{what}.out"))).unwrap();
        Command::new(script())
            .args([what, self.data.path().to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts Moonraker (again); returns once it answers.
    pub async fn resume(&mut self) {
        self.moonraker = Some(self.spawn("moonraker"));
        self.wait_for("Moonraker to answer", |moon| async move {
            let response = moon
                .http
                .get(format!("{}/server/info", moon.url()))
                .send()
                .await;
            response.ok().map(drop)
        })
        .await;
    }

    /// Starts klippy and its MCU (again); see [`wait_ready`](Self::wait_ready).
    pub fn resume_klipper(&mut self) {
        self.klipper = Some(self.spawn("klipper"));
    }

    /// Waits until Moonraker reports Klipper ready.
    pub async fn wait_ready(&self) {
        self.wait_for("Klipper to be ready", |moon| async move {
            let state = moon.get("/printer/objects/query?webhooks").await?;
            (state["result"]["status"]["webhooks"]["state"] == "ready").then_some(())
        })
        .await;
    }

    /// The key Moonraker made at its first start, once it is there.
    async fn read_key(&self) -> String {
        self.wait_for("Moonraker's API key", |moon| async move {
            let out = Command::new(script())
                .args(["key", moon.data.path().to_str().unwrap()])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let key = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (out.status.success() && !key.is_empty()).then_some(key)
        })
        .await
    }

    /// Stops Moonraker (SIGTERM); klippy runs on.
    pub fn stop(&mut self) {
        crate::support::stop_child(&mut self.moonraker);
    }

    /// Stops klippy and its MCU: Moonraker runs on, disconnected.
    pub fn stop_klipper(&mut self) {
        crate::support::stop_child(&mut self.klipper);
    }

    /// The logs, for failure messages.
    pub fn log(&self) -> String {
        let logs = self.data.path().join("logs");
        let outs = ["moonraker.out", "klipper.out"].map(|name| self.data.path().join(name));
        let names = ["moonraker.log", "klippy.log", "mcu.out"].map(|name| logs.join(name));
        names
            .iter()
            .chain(&outs)
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy();
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("== {name}\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// GET an API path; `None` on any failure.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url()))
            .header("X-Api-Key", &self.key)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// POST to an API path; the HTTP status.
    pub async fn post(&self, path: &str) -> u16 {
        self.http
            .post(format!("{}{path}", self.url()))
            .header("X-Api-Key", &self.key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Klipper's job: (print_stats state, file name).
    pub async fn job(&self) -> Option<(String, String)> {
        let v = self.get("/printer/objects/query?print_stats").await?;
        let stats = &v["result"]["status"]["print_stats"];
        Some((
            stats["state"].as_str()?.into(),
            stats["filename"].as_str()?.into(),
        ))
    }

    /// A stored file's modification time (seconds), `None` if it has none.
    pub async fn modified(&self, path: &str) -> Option<f64> {
        let list = self.get("/server/files/list?root=gcodes").await?;
        let files = list["result"].as_array()?;
        files
            .iter()
            .find(|f| f["path"] == path)
            .and_then(|f| f["modified"].as_f64())
    }

    /// The content of a stored file.
    pub async fn download(&self, path: &str) -> Option<Vec<u8>> {
        let response = self
            .http
            .get(format!("{}/server/files/gcodes/{path}", self.url()))
            .header("X-Api-Key", &self.key)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.bytes().await.ok().map(|b| b.to_vec())
    }

    /// Polls `check` every 200 ms until it yields a value; fails the test
    /// with `what` and the logs after [`MOON_GUARD`].
    pub async fn wait_for<'a, T, F, Fut>(&'a self, what: &str, check: F) -> T
    where
        F: Fn(&'a Moonraker) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let found = crate::support::poll(MOON_GUARD, Duration::from_millis(200), async || {
            check(self).await
        })
        .await;
        found.unwrap_or_else(|| panic!("timed out waiting for {what}; logs:\n{}", self.log()))
    }
}

impl Drop for Moonraker {
    fn drop(&mut self) {
        self.stop();
        self.stop_klipper();
    }
}
