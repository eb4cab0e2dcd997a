//! Following the printer ([`Client::watch`]): one `watch` request, then the
//! agent's reports as things change, on this connection, which carries
//! nothing else afterwards (the next request opens a new one).

use crate::wire::protocol::{Reply, Request, WATCH_HEARTBEAT, Watched};

use super::{Client, ClientError, unexpected};

/// How long a watch waits for the agent's next report (it reports at least
/// every `WATCH_HEARTBEAT`) before taking the agent or the link for lost.
pub(crate) const WATCH_SILENCE: std::time::Duration = WATCH_HEARTBEAT.saturating_mul(3);

impl Client {
    /// Starts following the printer and, if named, one file: the first
    /// report. Then [`Client::next_watched`] gives each later one.
    pub async fn watch(&mut self, name: Option<&str>) -> Result<Watched, ClientError> {
        let request = Request::Watch {
            name: name.map(str::to_owned),
        };
        let reply = self.request(&request).await;
        // The watch takes this connection; the next request opens another.
        self.drop_connection();
        match reply? {
            Reply::Watching(watched) => Ok(watched),
            other => Err(unexpected(&other)),
        }
    }

    /// The next report of a watch: something changed, or the heartbeat.
    pub async fn next_watched(&mut self) -> Result<Watched, ClientError> {
        let reply = self
            .conn
            .expect_message::<Reply>(WATCH_SILENCE)
            .await
            .map_err(|e| self.explain(e))?;
        match super::error::answer(reply)? {
            Reply::Watching(watched) => Ok(watched),
            other => Err(unexpected(&other)),
        }
    }
}
