//! What `send` shows while a body goes out: the agent's word on what it has
//! received, never what the local kernel or a slow link merely took.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fileagent::workstation::{Client, Compression, Observer, Phase};

use crate::support::{Agent, GUARD, SlowLink, content, poll};

/// Every progress figure the client reported while sending, in order.
#[derive(Clone, Default)]
struct Recorder {
    sending: bool,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Observer for Recorder {
    fn phase(&mut self, phase: Phase, _total: u64) {
        self.sending = phase == Phase::Sending;
    }

    fn progress(&mut self, done: u64) {
        if self.sending {
            self.seen.lock().unwrap().push(done);
        }
    }
}

impl Recorder {
    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

/// A client sending plainly to `agent` through `link`, and what will
/// record its progress.
async fn watched_client(agent: &Agent, link: &SlowLink) -> (Client, Recorder) {
    let mut client = Client::connect(&link.addr.to_string(), agent.identity("watcher"))
        .await
        .unwrap();
    client.set_compression(Compression::Never);
    (client, Recorder::default())
}

/// Defect 5 of issue 21: over a link that holds what the agent has not yet
/// received, the reported progress stays at what reached the agent (not at
/// the 84-98 % the kernel's buffers took), moves in steps as the agent
/// receives, and ends at the whole file.
#[tokio::test]
async fn progress_tracks_what_the_agent_received() {
    const LEN: usize = 8 << 20;
    const PASS: u64 = 2 << 20;
    let agent = Agent::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plate.gcode");
    std::fs::write(&path, content(21, LEN)).unwrap();
    // 2 MiB/s up to the first 2 MiB, then nothing until released.
    let link = SlowLink::holding(agent.addr, 2 << 20, PASS).await;
    let (mut client, recorder) = watched_client(&agent, &link).await;
    let mut observer = recorder.clone();
    let sending = tokio::spawn(async move {
        let sent = client
            .send_file(&path, "plate.gcode", false, &mut observer)
            .await;
        (sent, client)
    });
    // The body is under way: the agent has said how far it came.
    let told = poll(GUARD, Duration::from_millis(20), async || {
        (recorder.seen().last() > Some(&0)).then_some(())
    })
    .await;
    assert!(told.is_some(), "progress: {:?}", recorder.seen());
    // Held there a while: the client has long handed more to its kernel.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = recorder.seen();
    assert!(
        held.iter().all(|&done| done <= PASS),
        "reported more than reached the agent: {held:?}"
    );

    link.release();
    let (sent, client) = sending.await.unwrap();
    let sent = sent.unwrap();
    assert_eq!(sent.size, LEN as u64);
    let seen = recorder.seen();
    assert_eq!(seen.last(), Some(&(LEN as u64)));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    let steps = seen.iter().filter(|&&d| d > 0 && d < LEN as u64).count();
    assert!(steps >= 3, "too few steps to draw a steady bar: {seen:?}");
    client.close().await;
}

/// Over a deep link the client has written its whole body at once and
/// waits for the verdict: the bar still moves as the agent receives.
#[tokio::test]
async fn progress_goes_on_while_a_deep_link_delivers_the_body() {
    const LEN: usize = 6 << 20;
    let agent = Agent::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plate.gcode");
    std::fs::write(&path, content(22, LEN)).unwrap();
    let link = SlowLink::deep(agent.addr, 4 << 20).await;
    let (mut client, recorder) = watched_client(&agent, &link).await;
    let mut observer = recorder.clone();
    let sent = client
        .send_file(&path, "plate.gcode", false, &mut observer)
        .await
        .unwrap();
    assert_eq!(sent.size, LEN as u64);
    let seen = recorder.seen();
    let steps = seen.iter().filter(|&&d| d > 0 && d < LEN as u64).count();
    assert!(steps >= 3, "the bar stood still: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&(LEN as u64)));
    client.close().await;
}
