//! A file that is still being written while it is sent: the web page's
//! upload, spooled by the local process as the browser hands it over, goes
//! on to the agents at the same time instead of after it. The writer says
//! how far the file is written ([`Growth::grew`]) and how it ended
//! ([`Growth::ended`]); the reader of the body waits for the bytes it
//! wants ([`Growth::wait_for`]), and fails if the writing broke off, so
//! the agent is never told to store a file that did not arrive whole (its
//! digest, sent at the end of the body, is of what was read).

use std::io;
use std::sync::{Condvar, Mutex};

/// How far a file is written, and whether the writing ended.
#[derive(Default)]
pub struct Growth {
    state: Mutex<State>,
    grew: Condvar,
}

#[derive(Default)]
struct State {
    written: u64,
    /// `None` while writing; then `Ok` or why it broke off.
    end: Option<Result<(), String>>,
}

impl Growth {
    /// The first `written` bytes are in the file.
    pub fn grew(&self, written: u64) {
        let mut state = self.lock();
        state.written = state.written.max(written);
        self.grew.notify_all();
    }

    /// The writing ended: complete, or broken off (and why).
    pub fn ended(&self, result: Result<(), String>) {
        self.lock().end = Some(result);
        self.grew.notify_all();
    }

    /// Blocks until the first `upto` bytes are written or the writing
    /// ended well (a shorter file then reads short); an error if it broke
    /// off.
    pub fn wait_for(&self, upto: u64) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            match &state.end {
                Some(Err(why)) => {
                    let why = format!("the upload broke off: {why}");
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
                }
                Some(Ok(())) => return Ok(()),
                None if state.written >= upto => return Ok(()),
                None => state = self.grew.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// [`wait_for`](Self::wait_for) from async code, on a blocking thread.
    pub async fn wait_for_async(self: &std::sync::Arc<Self>, upto: u64) -> io::Result<()> {
        let growth = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || growth.wait_for(upto))
            .await
            .map_err(io::Error::other)?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reader_waits_for_the_bytes_it_wants_and_hears_a_break() {
        let growth = Arc::new(Growth::default());
        let reader = {
            let growth = Arc::clone(&growth);
            std::thread::spawn(move || growth.wait_for(100))
        };
        growth.grew(50);
        growth.grew(100);
        reader.join().unwrap().unwrap();

        let reader = {
            let growth = Arc::clone(&growth);
            std::thread::spawn(move || growth.wait_for(1000))
        };
        growth.ended(Err("the browser went away".into()));
        let e = reader.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("the browser went away"), "{e}");
    }

    #[test]
    fn a_complete_file_reads_short_without_waiting() {
        let growth = Growth::default();
        growth.grew(10);
        growth.ended(Ok(()));
        growth.wait_for(1 << 40).unwrap();
    }
}
