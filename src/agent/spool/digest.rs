//! The digest of a file already in `ready/` (whole-file hashing itself is
//! [`crate::wire::digest`], shared with the workstation).

use std::io;
use std::path::Path;

use super::SpoolError;
use crate::wire::digest::file_digest;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of "abc" (FIPS 180-2, appendix B.1).
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

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
