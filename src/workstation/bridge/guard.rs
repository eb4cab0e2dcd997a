//! Who may use the bridge: requests to a loopback `Host` only (a page on
//! another site that resolves its own name to 127.0.0.1, DNS rebinding,
//! gets nothing), carrying the bridge's API key in `X-Api-Key` (a browser
//! cannot add that header across origins without a CORS preflight, which
//! the bridge never answers), and not coming from another site's page.
//! The key is made on the first run and kept in the config folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// File in the config folder holding the bridge's API key.
pub(crate) const KEY_FILE: &str = "bridge.key";
/// Length of a new key, in hex digits (128 bits).
const KEY_LEN: usize = 32;

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The `Host` is not a loopback name.
    Host(String),
    /// No `X-Api-Key`, or the wrong one.
    Key,
    /// A page of another site sent it.
    Origin(String),
}

impl Refusal {
    /// The HTTP status it is answered with: 421 for a foreign `Host`, else 403.
    pub(crate) fn status(&self) -> axum::http::StatusCode {
        match self {
            Refusal::Host(_) => axum::http::StatusCode::MISDIRECTED_REQUEST,
            _ => axum::http::StatusCode::FORBIDDEN,
        }
    }

    /// What the client is told (never the key).
    pub(crate) fn text(&self) -> String {
        match self {
            Refusal::Host(host) => format!(
                "the bridge answers only requests to 127.0.0.1, localhost or [::1], not to {host:?}"
            ),
            Refusal::Key => {
                "invalid or missing API key: put the key `fileagent bridge --show-key` \
                             prints into the slicer's API key field (sent as X-Api-Key)"
                    .into()
            }
            Refusal::Origin(origin) => {
                format!("requests from web pages ({origin}) are not accepted")
            }
        }
    }
}

/// Whether `host` (a `Host` header: name, optionally with a port) names
/// this machine's loopback: `127.0.0.1`, `localhost`, `[::1]`, with or
/// without a port (Windows PrusaSlicer drops it).
pub(crate) fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || valid_port(port) => return inside == "::1",
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
}

/// `:PORT` with a port number.
fn valid_port(port: &str) -> bool {
    port.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

/// Checks one request's `Host`, `Origin` and `X-Api-Key` against `key`.
pub(crate) fn admit(
    host: Option<&str>,
    origin: Option<&str>,
    api_key: Option<&str>,
    key: &str,
) -> Result<(), Refusal> {
    let host = host.unwrap_or("");
    if !loopback_host(host) {
        return Err(Refusal::Host(host.to_string()));
    }
    // Slicers send no Origin; a browser does, and only a page of the
    // bridge's own loopback origin would be one of ours (there is none).
    if let Some(origin) = origin {
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|rest| loopback_host(rest.trim_end_matches('/')));
        if !own {
            return Err(Refusal::Origin(origin.to_string()));
        }
    }
    match api_key {
        Some(given) if same(given.trim().as_bytes(), key.as_bytes()) => Ok(()),
        _ => Err(Refusal::Key),
    }
}

/// Compares in time that does not depend on where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The bridge's API key from `dir`, made (and saved, mode 0600) on first
/// use; returns the key and whether it is new.
pub(crate) fn load_or_make_key(dir: &Path) -> Result<(String, bool)> {
    let path = key_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let key = new_key()?;
    crate::durable::create_dir(dir, 0o700)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    crate::durable::write(
        &path,
        format!("{key}\n").as_bytes(),
        0o600,
        crate::durable::Existing::Replace,
    )
    .with_context(|| format!("cannot save the bridge's API key in {}", path.display()))?;
    Ok((key, true))
}

/// Where the key is kept.
pub(crate) fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

/// A new random key: upper-case hex, as OctoPrint's keys look.
fn new_key() -> Result<String> {
    Ok(hex::encode_upper(random_bytes::<{ KEY_LEN / 2 }>()?))
}

/// `N` bytes from the system's random source: for the bridge's key and the
/// web page's tokens.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_with_or_without_a_port() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:7342",
            "localhost",
            "LocalHost:7342",
            "[::1]",
            "[::1]:7342",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7342",
            "127.0.0.1.evil.example",
            "localhost.evil.example:7342",
            "127.0.0.2",
            "[::2]:7342",
            "[::1]x",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "localhost:7342:1",
            "0.0.0.0:7342",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn a_request_needs_a_loopback_host_the_key_and_no_foreign_page() {
        let key = "ABCDEF0123456789ABCDEF0123456789";
        let host = Some("127.0.0.1:7342");
        assert_eq!(admit(host, None, Some(key), key), Ok(()));
        assert_eq!(admit(host, None, Some(&format!(" {key}\n")), key), Ok(()));
        assert_eq!(admit(host, None, None, key), Err(Refusal::Key));
        assert_eq!(admit(host, None, Some("abcdef"), key), Err(Refusal::Key));
        assert_eq!(
            admit(Some("evil.example"), None, Some(key), key),
            Err(Refusal::Host("evil.example".into()))
        );
        assert_eq!(
            admit(None, None, Some(key), key),
            Err(Refusal::Host(String::new()))
        );
        assert_eq!(
            admit(host, Some("http://evil.example"), Some(key), key),
            Err(Refusal::Origin("http://evil.example".into()))
        );
        assert_eq!(
            admit(host, Some("null"), Some(key), key),
            Err(Refusal::Origin("null".into()))
        );
        assert_eq!(
            admit(host, Some("http://127.0.0.1:7342"), Some(key), key),
            Ok(())
        );
        // What the client is told never holds the key.
        for r in [
            Refusal::Key,
            Refusal::Host("x".into()),
            Refusal::Origin("o".into()),
        ] {
            assert!(!r.text().contains(key));
        }
    }

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fileagent");
        let (key, new) = load_or_make_key(&dir).unwrap();
        assert!(new);
        assert_eq!(key.len(), KEY_LEN);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        let (again, new) = load_or_make_key(&dir).unwrap();
        assert_eq!((again.as_str(), new), (key.as_str(), false));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_path(&dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
