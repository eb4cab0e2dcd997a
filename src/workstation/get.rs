//! Fetching a file from the spool ([`Client::get`]): the body goes to a
//! temp file beside the destination, which is renamed into place only once
//! the size and the SHA-256 the agent announces match what arrived.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::local_error;
use super::local_name;
use super::{BODY_IDLE_TIMEOUT, Client, ClientError, Observer, Phase, unexpected};
use crate::wire::protocol::{Reply, Request};

/// Result of [`Client::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Size in bytes.
    pub size: u64,
    /// Verified SHA-256.
    pub sha256: String,
    /// The same file was at the destination already: it stays as it was.
    pub unchanged: bool,
}

/// The folder `dest` goes into, if it is one: checked before anything is
/// fetched, so a mistyped `-o` costs no download.
pub(crate) fn check_destination(dest: &Path) -> Result<&Path, ClientError> {
    let name = dest.file_name().map(|n| n.to_string_lossy());
    if let Some(problem) = name.and_then(|n| local_name::HERE.problem(&n)) {
        return Err(local_error(dest)("cannot write")(std::io::Error::other(
            format!("{problem}; pass -o with another name"),
        )));
    }
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match dir.is_dir() {
        true => Ok(dir),
        false => Err(local_error(dir)("no folder")(std::io::Error::other(
            "create it first, or pass -o with an existing folder",
        ))),
    }
}

impl Client {
    /// Fetches `name` into `dest`: written to a temp file beside it and
    /// renamed into place only once size and SHA-256 are verified. A file
    /// at `dest` is replaced only if `overwrite`; the same file there
    /// already is left as it is (`unchanged`).
    pub async fn get(
        &mut self,
        name: &str,
        dest: &Path,
        overwrite: bool,
        observer: &mut (dyn Observer + Send),
    ) -> Result<Fetched, ClientError> {
        let dir = check_destination(dest)?;
        let existing = match overwrite {
            true => None,
            false => std::fs::metadata(dest).ok().map(|m| m.len()),
        };
        let temp = temp_beside(dir)?;
        let size = match self.request(&Request::Get { name: name.into() }).await? {
            Reply::Body { size, .. } => size,
            other => return Err(unexpected(&other)),
        };
        if existing.is_some_and(|len| len != size) {
            // Not read: the connection is out of step now.
            self.drop_connection();
            return Err(there_already(dest));
        }
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        observer.phase(Phase::Receiving, size);
        let sha256 = self.receive_body(size, &mut file, dest, observer).await?;
        let unchanged = existing.is_some();
        if unchanged {
            same_as_there(dest, size, &sha256).await?;
        } else {
            place(file, temp_path, dest, overwrite).await?;
        }
        Ok(Fetched {
            size,
            sha256,
            unchanged,
        })
    }

    /// Writes the body into `file`, checking it against the announced size
    /// and the SHA-256 the agent sends after it; returns that digest.
    async fn receive_body(
        &mut self,
        size: u64,
        file: &mut tokio::fs::File,
        dest: &Path,
        observer: &mut (dyn Observer + Send),
    ) -> Result<String, ClientError> {
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = self.conn.read_chunk(BODY_IDLE_TIMEOUT).await? {
            received += chunk.len() as u64;
            if received > size {
                return Err(ClientError::Integrity(format!(
                    "more than the announced {size} bytes arrived"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(local_error(dest)("cannot write"))?;
            observer.progress(received);
        }
        let announced = match self.reply().await? {
            Reply::Complete { sha256 } => sha256,
            other => return Err(unexpected(&other)),
        };
        let computed = hex::encode(hasher.finalize());
        if received != size {
            return Err(ClientError::Integrity(format!(
                "{received} of the announced {size} bytes arrived"
            )));
        }
        if computed != announced {
            return Err(ClientError::Integrity(format!(
                "SHA-256 is {computed} but the agent sent {announced}"
            )));
        }
        Ok(computed)
    }
}

/// A temp file in `dir`, where the body goes until it is verified.
fn temp_beside(dir: &Path) -> Result<tempfile::NamedTempFile, ClientError> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".fileagent-").suffix(".part");
    // Like any new file (tempfile's default is 0600): what the umask allows.
    // (On Windows the folder's ACL applies.)
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder
        .tempfile_in(dir)
        .map_err(local_error(dir)("cannot write into"))
}

/// A different file at the destination, kept without --overwrite.
fn there_already(dest: &Path) -> ClientError {
    local_error(dest)("cannot write")(std::io::Error::other(
        "it is there already with different content; pass --overwrite to replace it, or -o to write elsewhere",
    ))
}

/// Without --overwrite, a file already at the destination must be this one.
async fn same_as_there(dest: &Path, size: u64, sha256: &str) -> Result<(), ClientError> {
    let there = super::digest::hash_file(dest, size, &mut ())
        .await
        .map_err(local_error(dest)("cannot read"))?;
    match there == sha256 {
        true => Ok(()),
        false => Err(there_already(dest)),
    }
}

/// Syncs the verified temp file and renames it into place: over a file
/// there only with `overwrite`.
async fn place(
    file: tokio::fs::File,
    temp_path: tempfile::TempPath,
    dest: &Path,
    overwrite: bool,
) -> Result<(), ClientError> {
    let local = local_error(dest);
    file.sync_all().await.map_err(local("cannot write"))?;
    drop(file);
    let placed = if overwrite {
        temp_path.persist(dest)
    } else {
        // One that appeared meanwhile stays too, on file systems that
        // can refuse to replace (a share without hard links may not).
        match temp_path.persist_noclobber(dest) {
            Err(e) if e.error.kind() != std::io::ErrorKind::AlreadyExists => e.path.persist(dest),
            placed => placed,
        }
    };
    placed.map_err(|e| local("cannot write")(e.error))
}
