//! `fileagent bridge`: a local OctoPrint-compatible HTTP server, so that
//! slicers (PrusaSlicer, SuperSlicer, OrcaSlicer, Cura's OctoPrint plugin)
//! "Upload" and "Upload and Print" through fileagent. Each paired agent is
//! `http://127.0.0.1:7342/a/NAME` and each group `/g/GROUP`, usable as the
//! slicer's host (OctoPrint may sit under a path prefix, so slicers take
//! it). An upload is spooled to a temp file, carried to every agent over
//! fileagent's own protocol (mTLS, compression, resume, verification), and
//! answered only once each agent has stored and verified it.
//!
//! Loopback only, a loopback `Host` only, the bridge's key on every route,
//! no CORS: see `guard`. The same process serves the web page under `/ui`
//! (`ui`), behind its own session rules.

mod deliver;
mod form;
pub(crate) mod guard;
mod octo;
mod printers;
mod routes;
mod sink;
mod ui;
mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

pub use crate::workstation::BRIDGE_LISTEN as DEFAULT_LISTEN;

/// A bridge's settings and shared state.
pub struct Bridge {
    /// The config folder (client.toml, identities), read at each request.
    dir: PathBuf,
    /// The API key every request must carry.
    key: String,
    /// Where uploads are spooled on their way.
    spool: PathBuf,
    /// The agents' printer state, followed while asked for.
    printers: Arc<printers::Printers>,
    /// The web page's sessions, transfers and board.
    ui: ui::Ui,
}

impl Bridge {
    /// A bridge for the agents in config folder `dir`, with `key`,
    /// spooling uploads in `spool`.
    pub fn new(dir: PathBuf, key: String, spool: PathBuf) -> Bridge {
        Bridge {
            dir,
            key,
            spool,
            printers: Arc::default(),
            ui: ui::Ui::default(),
        }
    }

    /// A one-time launch token for the web page: `/ui/launch?token=T`
    /// lets one browser in, within two minutes.
    pub fn launch_token(&self) -> String {
        self.ui.sessions.mint_launch()
    }
}

/// Checks that `listen` is a loopback address: the bridge is for this
/// machine's slicers only.
pub fn check_listen(listen: SocketAddr) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!(
            "the bridge listens on loopback only (127.0.0.1 or [::1]), not {listen}: slicers on this machine reach it there"
        );
    }
    Ok(())
}

/// Serves the slicers' routes and the web page on `listener` until
/// `shutdown` completes (running requests finish first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    bridge: Bridge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    check_listen(listener.local_addr()?)?;
    let bridge = Arc::new(bridge);
    let app = ui::router(Arc::clone(&bridge)).merge(routes::router(Arc::clone(&bridge)));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the bridge's server failed")?;
    // Transfers started from the web page run beside the requests: they
    // finish too before the process stops.
    bridge.ui.jobs_idle().await;
    Ok(())
}
