//! The `watch` request on the agent's side: the printer (and one file, if
//! named) reported at once, then on every change the forwarder publishes
//! (changes close together coalesced) and at least every `WATCH_HEARTBEAT`,
//! until the client closes the connection or the agent shuts down. A
//! workstation follows a print over this one connection instead of polling.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use super::{Session, SessionError, stopped};
use crate::wire::protocol::{Reply, Request, WATCH_COALESCE, WATCH_HEARTBEAT, Watched};

/// How long a watching client may send nothing: it is not expected to
/// (the agent's heartbeat writes find a client that is gone).
const CLIENT_SILENCE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Why a watch ended.
enum End {
    /// The client closed the connection (or sent something: a watch takes
    /// the connection until it ends).
    Client,
    /// The agent shuts down.
    Shutdown,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `watch`: reports until the client leaves; then the session ends.
    pub(super) async fn watch(&mut self, name: Option<String>) -> Result<(), SessionError> {
        if let Some(name) = &name
            && let Err(e) = crate::agent::spool::validate_name(name)
        {
            return self.send(&self.error_reply(&e)).await;
        }
        debug!(client_cn = %self.client, file_name = name.as_deref().unwrap_or("-"), "watching");
        let end = self.report_until_end(name.as_deref()).await?;
        if let End::Shutdown = end {
            self.conn.shutdown().await.ok();
        }
        debug!(client_cn = %self.client, "watch ended");
        Ok(())
    }

    /// Sends what changed (or the heartbeat) until the watch ends.
    async fn report_until_end(&mut self, name: Option<&str>) -> Result<End, SessionError> {
        let mut changed = self.shared.forward.subscribe();
        let mut last: Option<Watched> = None;
        let mut heartbeat = Instant::now();
        loop {
            let now = self.shared.forward.watched(name);
            if last.as_ref() != Some(&now) || Instant::now() >= heartbeat {
                self.send(&Reply::Watching(now.clone())).await?;
                last = Some(now);
                heartbeat = Instant::now() + WATCH_HEARTBEAT;
            }
            // Anything from the client ends the watch; its silence does not.
            let idle = CLIENT_SILENCE;
            tokio::select! {
                woke = changed.changed() => {
                    if woke.is_ok() {
                        tokio::time::sleep(WATCH_COALESCE).await;
                    } else {
                        // The forwarder is gone for good: heartbeats only.
                        tokio::time::sleep_until(heartbeat).await;
                    }
                }
                () = tokio::time::sleep_until(heartbeat) => {}
                _ = self.conn.read_message::<Request>(idle) => return Ok(End::Client),
                () = stopped(&mut self.shutdown) => return Ok(End::Shutdown),
            }
        }
    }
}
