//! The forwarding behaviour both print servers share, run against each:
//! the real OctoPrint with its Virtual Printer and the real Moonraker with
//! klippy. A send prints when the printer is idle; a second file while it
//! prints is uploaded, not started; a finished print holds the bed until a
//! person starts the next; an outage delays delivery, which then happens
//! exactly once (an agent restart and the same file again upload nothing);
//! a wrong API key is reported and loses nothing.

use std::path::PathBuf;
use std::time::Duration;

use fileagent::agent::config::{ApiKey, Config, PrinterConfig};
use fileagent::wire::protocol::FileEntry;

use crate::forward::listing;
use crate::moonraker::Moonraker;
use crate::octoprint::OctoPrint;
use crate::support::{Agent, data};

/// Which server a scenario runs against.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    OctoPrint,
    Moonraker,
}

/// A running print server of either kind.
pub enum Target {
    Octo(OctoPrint),
    Moon(Moonraker),
}

/// Longest wait for a state to show.
const WAIT: Duration = Duration::from_secs(90);

impl Target {
    pub async fn start(kind: Kind) -> Target {
        match kind {
            Kind::OctoPrint => Target::Octo(OctoPrint::start().await),
            Kind::Moonraker => Target::Moon(Moonraker::start().await),
        }
    }

    fn url_and_key(&self) -> (String, String) {
        match self {
            Target::Octo(o) => (o.url(), o.key.clone()),
            Target::Moon(m) => (m.url(), m.key.clone()),
        }
    }

    /// Agent settings forwarding to this server with `key`, short intervals.
    pub fn forwarding_with_key(&self, key: &str, queue: bool) -> impl FnOnce(&mut Config) + use<> {
        let (url, _) = self.url_and_key();
        let moonraker = matches!(self, Target::Moon(_));
        let key = ApiKey::new(key);
        move |c| {
            let table = PrinterConfig {
                enabled: true,
                url: Some(url),
                api_key: Some(key),
                queue,
                poll_interval: Duration::from_millis(200),
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_millis(800),
                ..PrinterConfig::default()
            };
            match moonraker {
                true => c.moonraker = Some(table),
                false => c.octoprint = table,
            }
            c.settle_time = Duration::from_millis(300);
        }
    }

    /// Agent settings forwarding to this server.
    pub fn forwarding(&self, queue: bool) -> impl FnOnce(&mut Config) + use<> {
        self.forwarding_with_key(&self.url_and_key().1, queue)
    }

    /// A print file of `name` that keeps the printer busy about `seconds`
    /// (as the server's printer understands G-code: Klipper has no heaters
    /// or axes here, and dwells in milliseconds).
    pub fn dwell_file(&self, dir: &std::path::Path, name: &str, seconds: u32) -> PathBuf {
        match self {
            Target::Octo(_) => crate::forward::dwell_file(dir, name, seconds),
            Target::Moon(_) => {
                // A second at a time: klippy takes no other command (a
                // cancel) while one dwell runs.
                let path = dir.join(name);
                let dwells = "G4 P1000\n".repeat(seconds as usize);
                std::fs::write(&path, format!("; {name}\nM117 {name}\n{dwells}M117 done\n"))
                    .unwrap();
                path
            }
        }
    }

    /// A print that lasts minutes: the cube (it heats first) on OctoPrint,
    /// a long dwell on Klipper.
    pub fn long_file(&self, dir: &std::path::Path, name: &str) -> PathBuf {
        match self {
            Target::Octo(_) => {
                let path = dir.join(name);
                std::fs::copy(data("cube-20mm.gcode"), &path).unwrap();
                path
            }
            Target::Moon(_) => self.dwell_file(dir, name, 300),
        }
    }

    /// The job: whether it is printing, and its file.
    pub async fn job(&self) -> Option<(bool, String)> {
        match self {
            Target::Octo(o) => o
                .job()
                .await
                .map(|(state, file)| (state == "Printing", file)),
            Target::Moon(m) => m
                .job()
                .await
                .map(|(state, file)| (state == "printing", file)),
        }
    }

    /// When the server stored `name` (OctoPrint's date, Moonraker's
    /// modification time): a second upload changes it.
    pub async fn stored_at(&self, name: &str) -> Option<f64> {
        match self {
            Target::Octo(o) => o.get(&format!("/api/files/local/{name}")).await?["date"].as_f64(),
            Target::Moon(m) => m.modified(name).await,
        }
    }

    /// Stops the server's current print.
    pub async fn cancel(&self) {
        match self {
            Target::Octo(o) => {
                o.command("/api/job", serde_json::json!({"command": "cancel"}))
                    .await;
            }
            Target::Moon(m) => {
                m.post("/printer/print/cancel").await;
            }
        }
    }

    pub fn stop(&mut self) {
        match self {
            Target::Octo(o) => o.stop(),
            Target::Moon(m) => m.stop(),
        }
    }

    pub async fn resume(&mut self) {
        match self {
            Target::Octo(o) => o.resume().await,
            Target::Moon(m) => {
                m.resume().await;
                m.wait_ready().await;
            }
        }
    }

    fn log(&self) -> String {
        match self {
            Target::Octo(o) => o.log(),
            Target::Moon(m) => m.log(),
        }
    }

    /// Polls `check` until it yields; fails with `what` and the server's log.
    pub async fn wait_for<T>(&self, what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
        let found = crate::support::poll(WAIT, Duration::from_millis(200), check).await;
        found.unwrap_or_else(|| panic!("timed out waiting for {what}; log:\n{}", self.log()))
    }

    /// Waits until the agent lists `name` in one of `states`.
    pub async fn wait_state(&self, agent: &Agent, name: &str, states: &[&str]) -> FileEntry {
        let what = format!("{name} to be {states:?} in the agent's list");
        self.wait_for(&what, async || {
            let files = listing(agent).await;
            files
                .into_iter()
                .find(|f| f.name == name && states.contains(&f.state.as_deref().unwrap_or("")))
        })
        .await
    }

    /// Waits until the agent's status names the printer with `text`.
    pub async fn wait_status(&self, agent: &Agent, text: &str) -> String {
        self.wait_for(&format!("the agent's status to say {text:?}"), async || {
            let status = agent.client("s").await.status().await.ok()?;
            status.printer.contains(text).then_some(status.printer)
        })
        .await
    }
}

/// Sends `path` as its file name, asking to print.
async fn send(agent: &Agent, path: &std::path::Path) {
    let mut client = agent.client("bench-pc").await;
    let name = path.file_name().unwrap().to_str().unwrap();
    client.send_file(path, name, false, &mut ()).await.unwrap();
    client.close().await;
}

async fn a_sent_file_prints_and_a_second_one_waits_while_busy(kind: Kind) {
    let target = Target::start(kind).await;
    let mut agent = Agent::start_with(target.forwarding(false)).await;
    let tmp = tempfile::tempdir().unwrap();
    send(&agent, &target.long_file(tmp.path(), "long.gcode")).await;
    target
        .wait_for("the long print to run", async || {
            let (printing, file) = target.job().await?;
            (printing && file == "long.gcode").then_some(())
        })
        .await;
    target.wait_state(&agent, "long.gcode", &["printing"]).await;

    send(&agent, &target.dwell_file(tmp.path(), "second.gcode", 1)).await;
    let waiting = target
        .wait_state(&agent, "second.gcode", &["uploaded"])
        .await;
    assert!(waiting.reason.unwrap().contains("waiting"));
    assert!(target.stored_at("second.gcode").await.is_some());
    assert_eq!(target.job().await.unwrap(), (true, "long.gcode".into()));
    let status = agent.client("s").await.status().await.unwrap();
    assert!(
        status.printer.contains("long.gcode ("),
        "{}",
        status.printer
    );
    target.cancel().await;
    agent.stop().await;
}

async fn a_finished_print_holds_the_bed_until_a_person_starts_the_next(kind: Kind) {
    let target = Target::start(kind).await;
    let mut agent = Agent::start_with(target.forwarding(false)).await;
    let tmp = tempfile::tempdir().unwrap();
    send(&agent, &target.dwell_file(tmp.path(), "first.gcode", 1)).await;
    target.wait_state(&agent, "first.gcode", &["printed"]).await;

    send(&agent, &target.dwell_file(tmp.path(), "next.gcode", 1)).await;
    let waiting = target.wait_state(&agent, "next.gcode", &["uploaded"]).await;
    let reason = waiting.reason.unwrap();
    assert!(
        reason.contains("the last print (first.gcode) ended"),
        "{reason}"
    );
    assert_ne!(target.job().await.unwrap(), (true, "next.gcode".into()));

    let mut client = agent.client("person").await;
    assert_eq!(
        client.print(Some("next.gcode")).await.unwrap(),
        "next.gcode"
    );
    client.close().await;
    target
        .wait_state(&agent, "next.gcode", &["printing", "printed"])
        .await;
    agent.stop().await;
}

async fn an_outage_delays_delivery_which_happens_exactly_once(kind: Kind) {
    let _turn = crate::support::heavy();
    let mut target = Target::start(kind).await;
    let mut agent = Agent::start_with(target.forwarding(false)).await;
    let tmp = tempfile::tempdir().unwrap();
    target.stop();
    let file = target.dwell_file(tmp.path(), "patient.gcode", 0);
    send(&agent, &file).await;
    target
        .wait_state(&agent, "patient.gcode", &["received"])
        .await;
    target.wait_status(&agent, "unreachable").await;

    // Delivered once the server answers; started only if the printer was
    // ready by then (Klipper reconnects to Moonraker a moment after it
    // starts, and a file that finds the printer not ready is not started
    // later by itself).
    target.resume().await;
    let delivered = ["printing", "printed", "uploaded"];
    let entry = target.wait_state(&agent, "patient.gcode", &delivered).await;
    if entry.state.as_deref() == Some("uploaded") {
        let reason = entry.reason.unwrap_or_default();
        assert!(
            reason.contains("not ready when it was uploaded"),
            "{reason}"
        );
    }
    let stored = target.stored_at("patient.gcode").await.unwrap();

    // A restart of the agent, and the same file sent again: no second upload.
    agent.restart().await;
    send(&agent, &file).await;
    target
        .wait_for("the agent to settle the resent file", async || {
            agent.ready().is_empty().then_some(())
        })
        .await;
    let again = target.stored_at("patient.gcode").await.unwrap();
    assert_eq!(again, stored, "the server got a second upload");
    let entries = listing(&agent).await;
    let entries: Vec<_> = entries
        .iter()
        .filter(|f| f.name == "patient.gcode")
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    agent.stop().await;
}

async fn a_wrong_api_key_is_reported_and_nothing_is_lost(kind: Kind) {
    let target = Target::start(kind).await;
    let mut agent = Agent::start_with(target.forwarding_with_key("not-the-key", false)).await;
    let tmp = tempfile::tempdir().unwrap();
    send(&agent, &target.dwell_file(tmp.path(), "keyless.gcode", 0)).await;
    let said = target.wait_status(&agent, "refused the API key").await;
    let table = match kind {
        Kind::OctoPrint => "[octoprint]",
        Kind::Moonraker => "[moonraker]",
    };
    assert!(said.contains(table), "{said}");
    assert_eq!(agent.ready(), vec!["keyless.gcode".to_string()]);
    assert!(target.stored_at("keyless.gcode").await.is_none());

    // With the right key (after a restart), the waiting file is delivered.
    agent.stop().await;
    target.forwarding(false)(&mut agent.config);
    agent.restart().await;
    target
        .wait_state(&agent, "keyless.gcode", &["printing", "printed"])
        .await;
    agent.stop().await;
}

/// Each scenario, once per server.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod octoprint {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Kind::OctoPrint).await
                }
            )*
        }
        mod moonraker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Kind::Moonraker).await
                }
            )*
        }
    };
}

on_both!(
    a_sent_file_prints_and_a_second_one_waits_while_busy,
    a_finished_print_holds_the_bed_until_a_person_starts_the_next,
    an_outage_delays_delivery_which_happens_exactly_once,
    a_wrong_api_key_is_reported_and_nothing_is_lost,
);
