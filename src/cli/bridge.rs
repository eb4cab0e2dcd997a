//! `fileagent bridge`: says where slicers find each agent and group, then
//! serves until Ctrl-C (or SIGTERM); `--show-key` prints the API key.

use anyhow::{Context, Result};

use crate::cli::args::{BridgeArgs, UsageError};
use crate::workstation::bridge::{self, Bridge, guard};
use crate::workstation::config::{ClientConfig, config_dir};

/// `fileagent bridge`.
pub(super) async fn bridge(args: BridgeArgs) -> Result<()> {
    let dir = config_dir().context(
        "cannot find this user's config folder (HOME, or APPDATA on Windows, is not set; or set XDG_CONFIG_HOME)",
    )?;
    let (key, new) = guard::load_or_make_key(&dir)?;
    if args.show_key {
        say!("{key}");
        return Ok(());
    }
    bridge::check_listen(args.listen).map_err(|e| UsageError(format!("{e:#}")))?;
    let config = ClientConfig::load(&dir).map_err(|e| UsageError(format!("{e:#}")))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is a bridge running already? choose another port with --listen)",
                args.listen
            )
        })?;
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
        guard::key_path(&dir).display()
    );
    say!("Ctrl-C stops the bridge");
    let spool = std::env::temp_dir();
    serve_until_stopped(listener, Bridge::new(dir, key, spool)).await
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
