//! A transfer's file: the page's upload, while it is still being spooled
//! (the agents get it as it arrives) and once it is (a retry reads it from
//! the spool, with the digest the spooling computed).

use std::sync::{Arc, Mutex};

use crate::workstation::bridge::form::Spooled;
use crate::workstation::growing::Growth;

/// A job's file: the page's upload, while it is spooled and after.
pub(crate) struct Source {
    pub(super) path: std::path::PathBuf,
    pub(super) size: u64,
    /// How far it is written, while it is.
    pub(super) growth: Option<Arc<Growth>>,
    /// The finished spool: keeps the temp file, and knows its digest.
    spooled: Mutex<Option<Arc<Spooled>>>,
}

impl Source {
    /// An upload still being spooled at `path`, `size` bytes when complete.
    pub(crate) fn growing(path: &std::path::Path, size: u64, growth: Arc<Growth>) -> Source {
        Source {
            path: path.to_path_buf(),
            size,
            growth: Some(growth),
            spooled: Mutex::default(),
        }
    }

    /// An upload spooled whole.
    pub(crate) fn spooled(spooled: Spooled) -> Source {
        Source {
            path: spooled.file.path().to_path_buf(),
            size: spooled.size,
            growth: None,
            spooled: Mutex::new(Some(Arc::new(spooled))),
        }
    }

    /// The spooling ended well: what it made.
    pub(crate) fn complete(&self, spooled: Spooled) {
        *self.lock() = Some(Arc::new(spooled));
    }

    /// The finished spool, if the spooling ended well.
    pub(super) fn finished(&self) -> Option<Arc<Spooled>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Spooled>>> {
        super::lock(&self.spooled)
    }
}
