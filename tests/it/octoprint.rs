//! A real OctoPrint (installed by `scripts/octoprint-dev.sh`) with its
//! Virtual Printer, on a free port of 127.0.0.1, for the forwarding tests.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// Longest wait for OctoPrint to start or for a print state to show.
pub const OCTO_GUARD: Duration = Duration::from_secs(90);

static INSTALL: Mutex<bool> = Mutex::new(false);

fn script() -> std::path::PathBuf {
    crate::support::script("octoprint-dev.sh")
}

/// Installs OctoPrint into the cached venv once per test run.
fn install() {
    crate::support::install_once(&INSTALL, "octoprint-dev.sh");
}

/// A running OctoPrint with a private basedir and API key.
pub struct OctoPrint {
    child: Option<Child>,
    base: tempfile::TempDir,
    port: u16,
    pub key: String,
    http: reqwest::Client,
}

impl OctoPrint {
    /// Installs (once), configures and starts OctoPrint; returns once the
    /// Virtual Printer is connected and Operational.
    pub async fn start() -> OctoPrint {
        tokio::task::spawn_blocking(install).await.unwrap();
        let base = tempfile::tempdir().unwrap();
        let key =
            crate::support::sha256(base.path().to_string_lossy().as_bytes())[..32].to_string();
        let status = Command::new(script())
            .args(["prepare", base.path().to_str().unwrap(), &key])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/octoprint-dev.sh prepare failed");
        let port = crate::support::free_port();
        let mut octo = OctoPrint {
            child: None,
            base,
            port,
            key,
            http: reqwest::Client::new(),
        };
        octo.resume().await;
        octo
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until the printer is Operational.
    pub async fn resume(&mut self) {
        let log = std::fs::File::create(self.base.path().join("serve.log")).unwrap();
        let child = Command::new(script())
            .args([
                "serve",
                self.base.path().to_str().unwrap(),
                &self.port.to_string(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_for("the Virtual Printer to be Operational", |octo| async move {
            let connection = octo.get("/api/connection").await?;
            (connection["current"]["state"] == "Operational").then_some(())
        })
        .await;
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        crate::support::stop_child(&mut self.child);
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.path().join("serve.log")).unwrap_or_default()
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

    /// The content of a file in OctoPrint's local storage.
    pub async fn download(&self, name: &str) -> Option<Vec<u8>> {
        let response = self
            .http
            .get(format!("{}/downloads/files/local/{name}", self.url()))
            .header("X-Api-Key", &self.key)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.bytes().await.ok().map(|b| b.to_vec())
    }

    /// Uploads `bytes` as `name` straight into OctoPrint, as a person
    /// would in its web interface; the HTTP status.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> u16 {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        self.http
            .post(format!("{}/api/files/local", self.url()))
            .header("X-Api-Key", &self.key)
            .multipart(form)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Deletes a file from OctoPrint's storage, as a person would; the HTTP
    /// status.
    pub async fn remove(&self, name: &str) -> u16 {
        self.http
            .delete(format!("{}/api/files/local/{name}", self.url()))
            .header("X-Api-Key", &self.key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// POST a JSON command to an API path.
    pub async fn command(&self, path: &str, body: Value) -> u16 {
        self.http
            .post(format!("{}{path}", self.url()))
            .header("X-Api-Key", &self.key)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// Polls `check` every 200 ms until it yields a value; fails the test
    /// with `what` and OctoPrint's log after [`OCTO_GUARD`].
    pub async fn wait_for<'a, T, F, Fut>(&'a self, what: &str, check: F) -> T
    where
        F: Fn(&'a OctoPrint) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let found = crate::support::poll(OCTO_GUARD, Duration::from_millis(200), async || {
            check(self).await
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}; OctoPrint log:\n{}",
                self.log()
            )
        })
    }

    /// The current job: (state text, file name).
    pub async fn job(&self) -> Option<(String, String)> {
        let job = self.get("/api/job").await?;
        Some((
            job["state"].as_str()?.to_string(),
            job["job"]["file"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ))
    }
}

impl Drop for OctoPrint {
    fn drop(&mut self) {
        self.stop();
    }
}
