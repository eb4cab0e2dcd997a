//! SHA-256 of whole files: the digest of a file already in `ready/`, of a
//! file the client is about to send, and the rehash of a partial file that
//! an upload resumes.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::SpoolError;

/// Read buffer for hashing whole files.
const HASH_BUF_LEN: usize = 256 * 1024;

/// SHA-256 of the file at `path` if it exists (and has `size`, when given).
pub(super) async fn existing_digest(
    path: &Path,
    size: Option<u64>,
) -> Result<Option<String>, SpoolError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> io::Result<Option<String>> {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
            return Ok(None);
        }
        file_digest(&mut file).map(Some)
    })
    .await
    .map_err(|e| SpoolError::io("hashing")(io::Error::other(e)))?
    .map_err(SpoolError::io("cannot read the existing file"))
}

/// Hex SHA-256 of everything `reader` yields.
pub fn file_digest(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hash_into(&mut hasher, reader)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds everything `reader` yields to `hasher`; returns how many bytes.
pub(super) fn hash_into(hasher: &mut Sha256, mut reader: impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; HASH_BUF_LEN];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of "abc" (FIPS 180-2, appendix B.1).
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn digests_match_the_standard_across_read_buffers() {
        assert_eq!(file_digest(&mut &b"abc"[..]).unwrap(), ABC);
        // Longer than one read buffer, so the loop runs more than once.
        let big = vec![7u8; HASH_BUF_LEN * 2 + 3];
        let mut hasher = Sha256::new();
        assert_eq!(hash_into(&mut hasher, &big[..]).unwrap(), big.len() as u64);
        assert_eq!(hasher.finalize(), Sha256::digest(&big));
    }

    #[tokio::test]
    async fn an_existing_file_is_hashed_only_if_it_has_the_size_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cube.gcode");
        assert_eq!(existing_digest(&path, None).await.unwrap(), None);
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(existing_digest(&path, None).await.unwrap().unwrap(), ABC);
        assert_eq!(existing_digest(&path, Some(3)).await.unwrap().unwrap(), ABC);
        assert_eq!(existing_digest(&path, Some(4)).await.unwrap(), None);
        // A directory of that name is no file to compare with.
        assert_eq!(existing_digest(dir.path(), None).await.unwrap(), None);
    }
}
