//! Handshakes per second: new connection, TLS 1.3 with both certificates,
//! one `ping`, closed, in a loop from several tasks against an in-process
//! agent on 127.0.0.1:0 - against the same loop over plain TCP (connect, a
//! 5-byte frame, its answer, close) to a trivial echo task, measured in the
//! same run, as the baseline.
//!
//! usage: cargo bench --bench handshakes [-- SECONDS [TASKS]]   (default 5 s, 4 tasks)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fileagent::agent::config::Config;
use fileagent::workstation::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn for_a_while<F, Fut>(seconds: u64, tasks: usize, op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (op, done) = (op.clone(), done.clone());
        set.spawn(async move {
            while Instant::now() < deadline {
                op().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while set.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let tasks: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: dir.path().join("state"),
        spool_dir: dir.path().join("spool"),
        server_names: vec!["127.0.0.1".into()],
        ..Config::default()
    };
    config.octoprint.enabled = false;
    let prepared = fileagent::agent::daemon::prepare(&config, false).unwrap();
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(fileagent::agent::server::run(
        listener,
        prepared.live.fixed(),
        std::future::pending(),
    ));
    let pem = fileagent::agent::pki::issue_client(&config, "bench")
        .unwrap()
        .pem;

    let tls = for_a_while(seconds, tasks, move || {
        let (addr, pem) = (addr.clone(), pem.clone());
        async move {
            let identity = fileagent::wire::identity::Identity::parse(pem.as_bytes()).unwrap();
            let mut client = Client::connect(&addr, identity).await.unwrap();
            client.ping().await.unwrap();
            client.close().await;
        }
    })
    .await;

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if tcp.read_exact(&mut buf).await.is_ok() {
                    let _ = tcp.write_all(&buf).await;
                }
            });
        }
    });
    let tcp = for_a_while(seconds, tasks, move || async move {
        let mut tcp = TcpStream::connect(echo_addr).await.unwrap();
        tcp.write_all(b"H\0\0\0\0").await.unwrap();
        let mut buf = [0u8; 5];
        tcp.read_exact(&mut buf).await.unwrap();
    })
    .await;

    println!(
        "{:<52} {:>10}",
        format!("connections per second ({tasks} tasks, {seconds} s each)"),
        "per s"
    );
    println!(
        "{:<52} {:>10.0}",
        "fileagent: TCP + TLS 1.3 mutual auth + ping", tls
    );
    println!(
        "{:<52} {:>10.0}",
        "baseline: TCP connect + 5-byte echo", tcp
    );
    println!(
        "fileagent handshakes reach {:.2} of the plain TCP rate",
        tls / tcp
    );
}
