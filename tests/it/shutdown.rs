//! Graceful shutdown: no new connections, idle sessions end at once, running
//! uploads finish within the grace period or are discarded without a trace.

use std::time::Duration;

use fileagent::wire::protocol::{Reply, Request};
use tokio::net::TcpStream;

use crate::support::{Agent, GUARD, Raw, content, reply, sha256, start_body};

/// Waits until the agent has begun shutting down, observed through an idle
/// session that the agent closes as its first shutdown step.
async fn wait_until_stopping(idle: &mut Raw) {
    let frame = idle.read_frame(GUARD).await.unwrap_or(None);
    assert!(
        frame.is_none(),
        "idle session got {frame:?} instead of being closed"
    );
}

#[tokio::test]
async fn a_running_upload_finishes_during_the_grace_period() {
    let mut agent = Agent::start_with(|c| c.shutdown_grace = Duration::from_secs(30)).await;
    let mut idle = agent.raw("watcher").await;
    idle.write_message(&Request::Ping).await.unwrap();
    assert_eq!(reply(&mut idle).await, Reply::Pong);

    let mut conn = agent.raw("uploader").await;
    let body = content(9, 600_000);
    start_body(
        &mut conn,
        "late.gcode",
        600_000,
        &sha256(&body),
        &body[..300_000],
    )
    .await;

    agent.trigger_stop();
    wait_until_stopping(&mut idle).await;
    // The listener is gone: new clients are turned away.
    assert!(
        TcpStream::connect(agent.addr).await.is_err(),
        "agent still accepts during shutdown"
    );

    conn.write_chunk(&body[300_000..]).await.unwrap();
    conn.write_end().await.unwrap();
    assert!(matches!(reply(&mut conn).await, Reply::Stored { .. }));
    agent.stop().await;
    assert_eq!(agent.read_ready("late.gcode"), body);
    assert!(agent.incoming().is_empty());
}

#[tokio::test]
async fn an_upload_still_running_after_the_grace_period_is_discarded() {
    let mut agent = Agent::start_with(|c| c.shutdown_grace = Duration::from_millis(200)).await;
    let mut conn = agent.raw("slowpoke").await;
    let body = content(10, 200_000);
    start_body(&mut conn, "never.gcode", 400_000, &sha256(&body), &body).await;

    // stop() returns only once every connection task has ended.
    tokio::time::timeout(GUARD, agent.stop())
        .await
        .expect("shutdown is bounded");
    assert!(agent.ready().is_empty());
    assert!(
        agent.incoming().is_empty(),
        "temp file left: {:?}",
        agent.incoming()
    );
    let closed = conn.read_frame(GUARD).await;
    assert!(matches!(closed, Ok(None) | Err(_)), "{closed:?}");
}
