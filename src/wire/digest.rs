//! SHA-256 of whole files, as both ends compute it: the agent over what it
//! stores and what a resumed upload holds, the workstation over what it
//! sends and fetches.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Read buffer for hashing whole files.
const HASH_BUF_LEN: usize = 256 * 1024;

/// Hex SHA-256 of everything `reader` yields.
pub(crate) fn file_digest(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hash_into(&mut hasher, reader)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Feeds everything `reader` yields to `hasher`; returns how many bytes.
pub(crate) fn hash_into(hasher: &mut Sha256, mut reader: impl Read) -> io::Result<u64> {
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
}
