//! Test helpers: a real agent on 127.0.0.1:0 with a temp state and spool,
//! identities issued by its CA, raw TLS connections for hostile clients, and
//! a slow link to reach the agent through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fileagent::agent::config::Config;
use fileagent::agent::pki;
use fileagent::wire::identity::Identity;
use fileagent::wire::protocol::{Connection, MAX_REPLY_HEADER_LEN, Reply, Request};
use fileagent::workstation::Client;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bound on any single wait in a test: a guard against hangs, never a
/// synchronisation point.
pub const GUARD: Duration = Duration::from_secs(20);

/// A real agent serving on 127.0.0.1 with its own temp directory.
pub struct Agent {
    pub addr: SocketAddr,
    pub config: Config,
    /// Holds the temp directory for the agent's lifetime.
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    forwarder: Option<fileagent::agent::forward::Running>,
}

impl Agent {
    /// An agent on default settings (but 127.0.0.1:0, a temp dir, and no
    /// forwarding unless a test turns it on).
    pub async fn start() -> Agent {
        Agent::start_with(|_| {}).await
    }

    /// An agent whose config `tweak` may change.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.path().join("state"),
            spool_dir: dir.path().join("spool"),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            min_free_space: bytesize::ByteSize::mib(1),
            ..Config::default()
        };
        config.octoprint.enabled = false;
        tweak(&mut config);
        let mut agent = Agent {
            addr: config.listen,
            config,
            _dir: dir,
            stop: None,
            task: None,
            forwarder: None,
        };
        agent.launch().await;
        agent
    }

    /// Prepares and serves with the current config (again after `stop`).
    async fn launch(&mut self) {
        let prepared = fileagent::agent::daemon::prepare(&self.config, true).unwrap();
        let listener = TcpListener::bind(self.config.listen).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(fileagent::agent::server::run(
            listener,
            prepared.live.fixed(),
            async {
                let _ = stopped.await;
            },
        )));
        self.stop = Some(stop);
        self.forwarder = prepared.forwarder;
    }

    /// Stops the agent and starts it again on the same state and spool (on
    /// a new port), as a restart of the service would.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Changes the config and hands it to the forwarder, as a reload does.
    pub fn reconfigure(&mut self, tweak: impl FnOnce(&mut Config)) {
        tweak(&mut self.config);
        self.forwarder
            .as_ref()
            .expect("agent is running")
            .reconfigure(&self.config);
    }

    /// `127.0.0.1:PORT`, as given to `--agent`.
    pub fn agent_arg(&self) -> String {
        self.addr.to_string()
    }

    /// Text of a new identity file for client `name`.
    pub fn identity_pem(&self, name: &str) -> String {
        pki::issue_client(&self.config, name).unwrap().pem
    }

    /// A new identity for client `name`.
    pub fn identity(&self, name: &str) -> Identity {
        Identity::parse(self.identity_pem(name).as_bytes()).unwrap()
    }

    /// A connected library client.
    pub async fn client(&self, name: &str) -> Client {
        Client::connect(&self.agent_arg(), self.identity(name))
            .await
            .unwrap()
    }

    /// A framed connection speaking raw protocol, for hostile requests.
    pub async fn raw(&self, name: &str) -> Connection<TlsStream<TcpStream>> {
        let tls = fileagent::wire::tls::client_config(self.identity(name)).unwrap();
        let stream = tls_connect(self.addr, tls).await.unwrap();
        Connection::new(stream, MAX_REPLY_HEADER_LEN)
    }

    /// An identity signed by this agent's CA but with a chosen validity.
    pub fn identity_valid(
        &self,
        name: &str,
        from: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> Identity {
        let state = &self.config.state_dir;
        let ca_pem = std::fs::read_to_string(state.join("ca.crt")).unwrap();
        let ca_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(state.join("ca.key")).unwrap())
                .unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = from;
        params.not_after = until;
        let cert = params.signed_by(&key, &issuer).unwrap();
        let pem = format!("{}{}{}", key.serialize_pem(), cert.pem(), ca_pem);
        Identity::parse(pem.as_bytes()).unwrap()
    }

    /// Names of the files in `ready/`.
    pub fn ready(&self) -> Vec<String> {
        names(&self.config.spool_dir.join("ready"))
    }

    /// Names of the files in `incoming/`.
    pub fn incoming(&self) -> Vec<String> {
        names(&self.config.spool_dir.join("incoming"))
    }

    /// Content of a ready file.
    pub fn read_ready(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.config.spool_dir.join("ready").join(name)).unwrap()
    }

    /// Asks the agent to shut down without waiting.
    pub fn trigger_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the agent down and waits until every connection task is gone.
    pub async fn stop(&mut self) {
        self.trigger_stop();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(GUARD, task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        if let Some(forwarder) = self.forwarder.take() {
            tokio::time::timeout(GUARD, forwarder.stop()).await.unwrap();
        }
    }

    /// Checks that the agent still serves a well-behaved client.
    pub async fn assert_serving(&self) {
        let mut client = self.client("healthy").await;
        client.ping().await.unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// TLS connection to `addr` with any client configuration (127.0.0.1 as
/// the server name).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(GUARD, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake hung")
}

/// A framed connection for raw protocol.
pub type Raw = Connection<TlsStream<TcpStream>>;

/// Reads the next reply within [`GUARD`].
pub async fn reply(conn: &mut Raw) -> Reply {
    conn.expect_message(GUARD).await.unwrap()
}

/// Announces a `send` on a raw connection and returns the agent's answer.
pub async fn announce(conn: &mut Raw, name: &str, size: u64, sha256: &str) -> Reply {
    let request = Request::Send {
        name: name.into(),
        size,
        sha256: Some(sha256.into()),
        overwrite: false,
        encoding: None,
        resume: false,
        confirm: false,
        progress: false,
        print: None,
    };
    conn.write_message(&request).await.unwrap();
    reply(conn).await
}

/// Announces a file of `size` bytes, expects `continue` and sends `part`
/// of its body (flushed, no end frame).
pub async fn start_body(conn: &mut Raw, name: &str, size: u64, sha256: &str, part: &[u8]) {
    assert_eq!(
        announce(conn, name, size, sha256).await,
        Reply::Continue {
            encoding: None,
            offset: 0,
            keeps: false,
        }
    );
    conn.write_chunk(part).await.unwrap();
    conn.flush().await.unwrap();
}

/// Announces a file, sends `body` and the end frame whatever the
/// announcement said, and returns the agent's final answer.
pub async fn send_body(conn: &mut Raw, name: &str, size: u64, sha256: &str, body: &[u8]) -> Reply {
    start_body(conn, name, size, sha256, body).await;
    conn.write_end().await.unwrap();
    reply(conn).await
}

/// A command running the `fileagent` binary under test. When the tests
/// run under qemu-user (cross/cargo.sh sets `FILEAGENT_TEST_RUNNER`), the
/// binary is for another architecture and is started through that runner.
pub fn fileagent_command() -> std::process::Command {
    through_runner(env!("CARGO_BIN_EXE_fileagent"), "FILEAGENT_TEST_RUNNER")
}

/// `bin`, started through the runner the environment variable `runner`
/// names (a command and its arguments), if it names one.
fn through_runner(bin: impl AsRef<std::ffi::OsStr>, runner: &str) -> std::process::Command {
    match std::env::var(runner) {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut command = std::process::Command::new(words.next().unwrap_or_default());
            command.args(words).arg(bin);
            command
        }
        _ => std::process::Command::new(bin),
    }
}

/// A command running the workstation's side of the binary: the one under
/// test, unless `FILEAGENT_WORKSTATION_BIN` names another build of it (the
/// Windows `fileagent.exe`), started through `FILEAGENT_WORKSTATION_RUNNER`
/// (`wine`) when that is set. The agent stays native, so the workstation
/// commands of another system are tested against the real agent on
/// loopback (cross/windows.sh sets both).
pub fn workstation_command() -> std::process::Command {
    match workstation_bin() {
        Some(bin) => through_runner(bin, "FILEAGENT_WORKSTATION_RUNNER"),
        None => fileagent_command(),
    }
}

/// Whether the workstation commands are another system's build run
/// through a runner (Windows under wine): Unix file modes are not theirs
/// to set or check (the profile's ACL protects the identity there).
pub fn foreign_workstation() -> bool {
    workstation_bin().is_some()
}

/// Another build of the binary for the workstation's commands, if one is named.
fn workstation_bin() -> Option<std::ffi::OsString> {
    std::env::var_os("FILEAGENT_WORKSTATION_BIN").filter(|b| !b.is_empty())
}

/// Held by the tests that load both cores for a long while (the crash and
/// load tests) and by those that restart OctoPrint and wait on it, so that
/// none of them starves another into a timeout: they take turns while the
/// rest of the suite runs beside them.
pub fn heavy() -> Turn {
    let mut busy = TURN.0.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        busy = TURN.1.wait(busy).unwrap_or_else(|e| e.into_inner());
    }
    *busy = true;
    Turn
}

static TURN: (std::sync::Mutex<bool>, std::sync::Condvar) =
    (std::sync::Mutex::new(false), std::sync::Condvar::new());

/// A turn of [`heavy`]; the next test's turn begins when it is dropped.
pub struct Turn;

impl Drop for Turn {
    fn drop(&mut self) {
        *TURN.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
        TURN.1.notify_one();
    }
}

/// A dev script of the project (`scripts/NAME`).
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `scripts/NAME install` once per test run (`done` remembers it):
/// the cached venvs of a real server the tests start.
pub fn install_once(done: &std::sync::Mutex<bool>, name: &str) {
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        let status = std::process::Command::new(script(name))
            .arg("install")
            .status()
            .unwrap();
        assert!(status.success(), "scripts/{name} install failed");
        *done = true;
    }
}

/// Stops a server started by a dev script (SIGTERM, so its wrapper can
/// stop what it started) and waits for it.
pub fn stop_child(child: &mut Option<std::process::Child>) {
    if let Some(mut child) = child.take() {
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = child.wait();
    }
}

/// A loopback port that was free a moment ago (bound, then closed): where
/// nothing listens, or where a server started next will listen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the tests run under an emulator (qemu-user through
/// cross/cargo.sh, which sets `FILEAGENT_TEST_RUNNER`): ten or more times
/// slower. The heavy tests (crash, load) then run a smaller version of
/// themselves; every behaviour is still exercised, with fewer repetitions.
pub fn emulated() -> bool {
    std::env::var_os("FILEAGENT_TEST_RUNNER").is_some()
}

/// Polls `check` every `every` until it yields a value, for at most
/// `within`: waiting on state owned by another process or task.
pub async fn poll<T>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// A TCP proxy on 127.0.0.1 in front of an agent, standing for a poor Wi-Fi
/// uplink: it passes what clients send at a fixed rate and the agent's
/// replies at full speed, until [`SlowLink::cut`] drops every connection
/// through it at once.
pub struct SlowLink {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    /// Once `Some(n)`: bytes past the first `n` from each client wait until
    /// [`SlowLink::release`].
    gate: watch::Sender<Option<u64>>,
    task: JoinHandle<()>,
}

impl SlowLink {
    /// Serves on a new loopback port, relaying to `agent` at `bytes_per_sec`.
    pub async fn start(agent: SocketAddr, bytes_per_sec: u64) -> SlowLink {
        SlowLink::serve(
            agent,
            None,
            move |mut from_client, mut to_agent, _| async move {
                // Small pieces, each read when the rate allows: the client
                // waits on the kernel's buffers, as over a slow link.
                let mut piece = vec![0u8; 16 * 1024];
                let start = tokio::time::Instant::now();
                let mut passed = 0u64;
                loop {
                    let Ok(n) = from_client.read(&mut piece).await else {
                        return;
                    };
                    if n == 0 {
                        let _ = to_agent.shutdown().await;
                        return;
                    }
                    if to_agent.write_all(&piece[..n]).await.is_err() {
                        return;
                    }
                    passed += n as u64;
                    let due = Duration::from_secs_f64(passed as f64 / bytes_per_sec as f64);
                    tokio::time::sleep_until(start + due).await;
                }
            },
        )
        .await
    }

    /// Like [`start`](Self::start), but each client's bytes past the first
    /// `pass` stay in the link (and the kernel's buffers behind it) until
    /// [`release`](Self::release): what a slow link holds of a body that
    /// the client has long finished writing.
    pub async fn holding(agent: SocketAddr, bytes_per_sec: u64, pass: u64) -> SlowLink {
        SlowLink::serve(
            agent,
            Some(pass),
            move |mut from_client, mut to_agent, mut is_gated| async move {
                // Everything the client writes is taken at once, so its
                // leaving (Ctrl-C: a reset, maybe) loses nothing of it.
                let (held, mut holding) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
                let take = async move {
                    let mut piece = vec![0u8; 16 * 1024];
                    loop {
                        let n = from_client.read(&mut piece).await.unwrap_or(0);
                        if held.send(piece[..n].to_vec()).is_err() || n == 0 {
                            return;
                        }
                    }
                };
                let give = async move {
                    let mut start = tokio::time::Instant::now();
                    let (mut passed, mut before) = (0u64, 0u64);
                    let mut data: Vec<u8> = Vec::new();
                    loop {
                        if data.is_empty() {
                            match holding.recv().await {
                                Some(next) if !next.is_empty() => data = next,
                                _ => return to_agent.shutdown().await,
                            }
                        }
                        // Past the pass: held until the release, then the
                        // rate holds from there on.
                        let open = |gate: &Option<u64>| gate.is_none_or(|pass| passed < pass);
                        if !open(&is_gated.borrow()) {
                            let _ = is_gated.wait_for(open).await;
                            start = tokio::time::Instant::now();
                            before = passed;
                        }
                        let room = match *is_gated.borrow() {
                            Some(pass) => (pass - passed).min(data.len() as u64) as usize,
                            None => data.len(),
                        };
                        to_agent.write_all(&data[..room]).await?;
                        data.drain(..room);
                        passed += room as u64;
                        let due = (passed - before) as f64 / bytes_per_sec as f64;
                        tokio::time::sleep_until(start + Duration::from_secs_f64(due)).await;
                    }
                };
                let _ = tokio::join!(take, give);
            },
        )
        .await
    }

    /// Like [`start`](Self::start), but the link takes everything a client
    /// writes at once and holds it (a deep buffer, as on congested Wi-Fi),
    /// passing it on at `bytes_per_sec`: the client is done writing long
    /// before the agent has its body.
    pub async fn deep(agent: SocketAddr, bytes_per_sec: u64) -> SlowLink {
        SlowLink::serve(
            agent,
            None,
            move |mut from_client, mut to_agent, _| async move {
                let (held, mut holding) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
                let take = async move {
                    let mut piece = vec![0u8; 16 * 1024];
                    loop {
                        let n = from_client.read(&mut piece).await?;
                        if held.send(piece[..n].to_vec()).is_err() || n == 0 {
                            return Ok::<(), std::io::Error>(());
                        }
                    }
                };
                let give = async move {
                    let start = tokio::time::Instant::now();
                    let mut passed = 0u64;
                    while let Some(data) = holding.recv().await {
                        if data.is_empty() {
                            return to_agent.shutdown().await;
                        }
                        to_agent.write_all(&data).await?;
                        passed += data.len() as u64;
                        let due = Duration::from_secs_f64(passed as f64 / bytes_per_sec as f64);
                        tokio::time::sleep_until(start + due).await;
                    }
                    Ok(())
                };
                let _ = tokio::join!(take, give);
            },
        )
        .await
    }

    /// Serves on a new loopback port: each client is connected to `agent`,
    /// `up` carries its bytes there, the agent's come back at full speed.
    async fn serve<F, Fut>(agent: SocketAddr, pass: Option<u64>, up: F) -> SlowLink
    where
        F: Fn(OwnedReadHalf, OwnedWriteHalf, watch::Receiver<Option<u64>>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, is_cut) = watch::channel(false);
        let (gate, is_gated) = watch::channel(pass);
        let up = std::sync::Arc::new(up);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(agent).await else {
                    continue;
                };
                let (mut is_cut, is_gated, up) = (is_cut.clone(), is_gated.clone(), up.clone());
                tokio::spawn(async move {
                    let (from_client, mut to_client) = client.into_split();
                    let (mut from_agent, to_agent) = upstream.into_split();
                    let up = up(from_client, to_agent, is_gated);
                    let down = tokio::io::copy(&mut from_agent, &mut to_client);
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = is_cut.wait_for(|cut| *cut) => {}
                    }
                    // Dropping the four halves closes both connections.
                });
            }
        });
        SlowLink {
            addr,
            cut,
            gate,
            task,
        }
    }

    /// Lets what a [`holding`](Self::holding) link held go on to the agent.
    pub fn release(&self) {
        self.gate.send_replace(None);
    }

    /// Drops every connection through the link, as a Wi-Fi outage would.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// A file in `tests/data`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Deterministic pseudo-random content, different per `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    // Eight bytes a step: tests make files of tens of MiB, unoptimised and
    // under qemu-user on the arm runs.
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lower-case hex SHA-256.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
