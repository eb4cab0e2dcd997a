//! The agent as systemd sees it, with the real binary: the notify protocol
//! (READY, STATUS, RELOADING, WATCHDOG, STOPPING) on a socket the test
//! owns, and SIGHUP reloads, which change new connections only, leave a
//! running upload alone, and refuse an invalid config. (The packaged
//! service under a real systemd is tests/e2e/deb-in-systemd.sh.)

use std::path::Path;

use fileagent::wire::identity::Identity;
use fileagent::wire::protocol::{Connection, ErrorCode, MAX_REPLY_HEADER_LEN, Reply};
use tokio::net::UnixDatagram;

use crate::cli::{Home, Served};
use crate::support::{GUARD, Raw, announce, content, reply, sha256, start_body, tls_connect};

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        Manager {
            socket: UnixDatagram::bind(path).unwrap(),
        }
    }

    /// Reads notifications until one contains `wanted`; returns it.
    async fn expect(&self, wanted: &str) -> String {
        let mut buf = vec![0; 4096];
        loop {
            let len = tokio::time::timeout(GUARD, self.socket.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {wanted:?} from the agent"))
                .unwrap();
            let message = String::from_utf8_lossy(&buf[..len]).into_owned();
            if message
                .lines()
                .any(|line| line == wanted || line.starts_with(wanted))
            {
                return message;
            }
        }
    }
}

fn signal(served: &Served, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(&served.child), signal).unwrap();
}

async fn connect(served: &Served, identity: &Path) -> Raw {
    let identity = Identity::load(identity).unwrap();
    let tls = fileagent::wire::tls::client_config(identity).unwrap();
    let stream = tls_connect(served.addr.parse().unwrap(), tls)
        .await
        .unwrap();
    Connection::new(stream, MAX_REPLY_HEADER_LEN)
}

/// A new connection is refused a 2 KiB file as over a 1 KiB limit.
async fn assert_limit_is_1_kib(served: &Served, identity: &Path) {
    let mut conn = connect(served, identity).await;
    let refused = announce(&mut conn, "two-k.gcode", 2048, &sha256(&[0; 2048])).await;
    assert!(
        matches!(
            &refused,
            Reply::Error {
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "{refused:?}"
    );
}

fn write_config(home: &Home, extra: &str) {
    let base = std::fs::read_to_string(home.path().join("agent.base.toml")).unwrap();
    std::fs::write(home.config(), format!("{base}{extra}")).unwrap();
}

#[tokio::test]
async fn systemd_hears_ready_status_watchdog_reloads_and_stopping() {
    let home = Home::new();
    let socket = home.path().join("notify.sock");
    let manager = Manager::bind(&socket);
    let served = Served::start_with(
        &home,
        &[
            ("NOTIFY_SOCKET", socket.to_str().unwrap()),
            // 200 ms: the main loop pings every 100 ms.
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let ready = manager.expect("READY=1").await;
    assert!(
        ready.contains(&format!("STATUS=listening on {}", served.addr)),
        "{ready}"
    );
    assert!(ready.contains("forwarding is off"), "{ready}");
    manager.expect("WATCHDOG=1").await;
    manager.expect("WATCHDOG=1").await;

    signal(&served, rustix::process::Signal::HUP);
    let reloading = manager.expect("RELOADING=1").await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    manager.expect("READY=1").await;

    signal(&served, rustix::process::Signal::TERM);
    manager.expect("STOPPING=1").await;
    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("feeding the systemd watchdog"), "{log}");
    assert!(log.contains("reloaded"), "{log}");
}

#[tokio::test]
async fn reload_changes_new_connections_keeps_running_uploads_and_refuses_bad_configs() {
    let home = Home::new();
    std::fs::copy(home.config(), home.path().join("agent.base.toml")).unwrap();
    let socket = home.path().join("notify.sock");
    let manager = Manager::bind(&socket);
    let served = Served::start_with(&home, &[("NOTIFY_SOCKET", socket.to_str().unwrap())]);
    manager.expect("READY=1").await;
    let identity = home.issue("reloader");

    // An upload is half way when the limit drops under its size.
    let body = content(7, 300_000);
    let mut running = connect(&served, &identity).await;
    start_body(
        &mut running,
        "big.gcode",
        300_000,
        &sha256(&body),
        &body[..150_000],
    )
    .await;
    write_config(&home, "max_file_size = \"1 KiB\"\n");
    signal(&served, rustix::process::Signal::HUP);
    manager.expect("RELOADING=1").await;
    manager.expect("READY=1").await;

    // The running upload finishes on the settings it started with.
    running.write_chunk(&body[150_000..]).await.unwrap();
    running.write_end().await.unwrap();
    assert!(
        matches!(reply(&mut running).await, Reply::Stored { .. }),
        "{}",
        served.log()
    );

    // A new connection gets the new limit.
    assert_limit_is_1_kib(&served, &identity).await;

    // A broken config is refused; the 1 KiB limit stays in force.
    write_config(
        &home,
        "max_file_size = \"1 KiB\"\nheader_timeout = \"1s\"\n",
    );
    signal(&served, rustix::process::Signal::HUP);
    manager.expect("RELOADING=1").await;
    manager.expect("READY=1").await;
    assert_limit_is_1_kib(&served, &identity).await;
    drop(running);

    let (status, log) = served.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("reload refused, the old config stays in force")
            && log.contains("header_timeout"),
        "{log}"
    );
    let stored = std::fs::read(home.path().join("spool/ready/big.gcode")).unwrap();
    assert_eq!(stored, body);
}
