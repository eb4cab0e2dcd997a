//! `fileagent bridge`: says where slicers find each agent and group, then
//! serves until Ctrl-C (or SIGTERM); `--show-key` prints the API key.
//! `fileagent ui`: a one-time link to the web page, from the bridge's
//! process if one runs, else from one started here.

use anyhow::{Context, Result};

use crate::cli::args::{BridgeArgs, UiArgs, UsageError};
use crate::workstation::bridge::{self, Bridge, guard};
use crate::workstation::config::{ClientConfig, config_dir};

fn dir() -> Result<std::path::PathBuf> {
    config_dir().context(
        "cannot find this user's config folder (HOME, or APPDATA on Windows, is not set; or set XDG_CONFIG_HOME)",
    )
}

/// `fileagent bridge`.
pub(super) async fn bridge(args: BridgeArgs) -> Result<()> {
    let dir = dir()?;
    let (key, new) = guard::load_or_make_key(&dir)?;
    if args.show_key {
        say!("{key}");
        return Ok(());
    }
    let listener = listen(args.listen).await?;
    announce(&dir, &listener, new)?;
    let spool = std::env::temp_dir();
    serve_until_stopped(listener, Bridge::new(dir, key, spool)).await
}

/// A loopback listener on `addr`.
async fn listen(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    bridge::check_listen(addr).map_err(|e| UsageError(format!("{e:#}")))?;
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} (is a bridge running already? choose another port with --listen)"
        )
    })
}

/// Says where slicers find each agent and group, and where the key is.
fn announce(dir: &std::path::Path, listener: &tokio::net::TcpListener, new: bool) -> Result<()> {
    let config = ClientConfig::load(dir).map_err(|e| UsageError(format!("{e:#}")))?;
    let base = format!("http://{}", listener.local_addr()?);
    say!("fileagent bridge on {base}: give a slicer one of these as its OctoPrint host");
    for name in config.agents.keys() {
        say!("  {base}/a/{name}");
    }
    for (name, members) in &config.groups {
        say!("  {base}/g/{name}  (group: {})", members.join(", "));
    }
    if config.agents.is_empty() {
        say!("  (no paired agent yet: pair with one first, `fileagent pair HOST CODE`)");
    }
    let made = if new { "made now, " } else { "" };
    say!(
        "API key: {made}kept in {}; `fileagent bridge --show-key` prints it",
        guard::key_path(dir).display()
    );
    say!("Ctrl-C stops the bridge");
    Ok(())
}

/// `fileagent ui`: a launch link from the process on `--listen`, or from
/// one started here (which then serves until stopped).
pub(super) async fn ui(args: UiArgs) -> Result<()> {
    let dir = dir()?;
    let (key, new) = guard::load_or_make_key(&dir)?;
    bridge::check_listen(args.listen).map_err(|e| UsageError(format!("{e:#}")))?;
    if let Some(token) = running_token(args.listen, &key).await? {
        say!(
            "the page is served by the fileagent bridge already running on {}",
            args.listen
        );
        return open(&launch_url(args.listen, &token), args.no_open);
    }
    let listener = listen(args.listen).await?;
    announce(&dir, &listener, new)?;
    let bridge = Bridge::new(dir, key, std::env::temp_dir());
    open(
        &launch_url(listener.local_addr()?, &bridge.launch_token()),
        args.no_open,
    )?;
    serve_until_stopped(listener, bridge).await
}

/// A launch token from the bridge's process on `addr`, or `None` when
/// nothing listens there. One plain HTTP/1.1 request over loopback (the
/// bridge's own server answers it), so the workstation needs no HTTP
/// client library for it.
async fn running_token(addr: std::net::SocketAddr, key: &str) -> Result<Option<String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot reach {addr}")),
    };
    let request = format!(
        "POST /ui/launch-token HTTP/1.1\r\nHost: {addr}\r\nX-Api-Key: {key}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut answer = Vec::new();
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await
    };
    tokio::time::timeout(ASK_RUNNING, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", ASK_RUNNING.as_secs()))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot ask the bridge on {addr} for a link"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("no HTTP answer");
    if status != "200" {
        // A fileagent bridge says why in one plain line; another server's
        // page is left out.
        let why = body.trim().lines().next().unwrap_or("");
        let why = match why.starts_with('<') || why.len() > 300 {
            true => String::new(),
            false => format!(": {why}"),
        };
        let whose = match status {
            "403" => {
                "a fileagent bridge with another key (another user's, or another config folder's)"
            }
            _ => "something else",
        };
        anyhow::bail!(
            "{whose} answers on {addr} (HTTP {status}{why}): stop it, or give `fileagent ui --listen` another port"
        );
    }
    Ok(Some(body.trim().to_string()))
}

/// The most of a running bridge's answer `fileagent ui` reads (a token is
/// 32 characters; anything else answering may send a page).
const MAX_ANSWER: u64 = 64 * 1024;
/// How long `fileagent ui` waits for a running bridge's answer.
const ASK_RUNNING: std::time::Duration = std::time::Duration::from_secs(10);

fn launch_url(addr: std::net::SocketAddr, token: &str) -> String {
    format!("http://{addr}/ui/launch?token={token}")
}

/// Opens `url` in the browser, or (with `no_open`, or when no browser
/// opens) prints it.
fn open(url: &str, no_open: bool) -> Result<()> {
    let how = "(the link lets one browser in, once, within 2 minutes)";
    if no_open {
        say!("open {url} {how}");
        return Ok(());
    }
    match browser(url) {
        Ok(()) => say!("opened the page in the browser {how}"),
        Err(e) => say!("cannot open a browser ({e}): open {url} {how}"),
    }
    Ok(())
}

/// Hands `url` to the system's way of opening links.
fn browser(url: &str) -> std::io::Result<()> {
    #[cfg(target_os = "macos")]
    let mut command = std::process::Command::new("open");
    #[cfg(windows)]
    let mut command = {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    };
    #[cfg(not(any(target_os = "macos", windows)))]
    let mut command = std::process::Command::new("xdg-open");
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{program} exited with {status}"
        )))
    }
}

/// Serves until Ctrl-C (or SIGTERM); uploads under way finish first,
/// unless a second one comes (then they are abandoned: the agent stores
/// nothing of them, and keeps what it received for a resume).
async fn serve_until_stopped(listener: tokio::net::TcpListener, bridge: Bridge) -> Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = bridge::serve(listener, bridge, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = stop_signal() => {}
    }
    eprintln!(
        "fileagent: stopping once the uploads under way are done (Ctrl-C again abandons them: nothing of an abandoned upload is stored)"
    );
    let _ = stop.send(());
    tokio::select! {
        result = &mut server => result?,
        () = stop_signal() => {
            eprintln!("fileagent: stopped; the uploads under way were abandoned and not stored");
            return Ok(());
        }
    }
    eprintln!("fileagent: bridge stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
