//! A print server's base URL, `http://HOST[:PORT][/PATH]`: what the
//! forwarder connects to (host and port) and puts before every API path
//! (a proxy's path, e.g. `/octoprint`). Plain HTTP only: the server runs on
//! this machine or beside it, and the agent carries no HTTPS client.
//!
//! Parsed here rather than by a general URL library: the config says at
//! load time what is wrong with a URL, and the agent needs nothing of URLs
//! beyond this one shape.

use std::fmt;

/// A parsed `http://` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// As written, without a trailing `/`.
    text: String,
    /// A name or address; an IPv6 address without its brackets.
    host: String,
    port: u16,
    /// The path before the API's, without a trailing `/` (often empty).
    path: String,
}

impl BaseUrl {
    /// Parses `url`, saying what is wrong with it.
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let url = url.trim();
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(
                "https:// is not supported: the agent speaks plain HTTP to the print server on this \
                 machine (or beside it), so use http://"
                    .into(),
            );
        }
        let rest = url
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or("it does not start with http://")?;
        if rest.contains(['?', '#']) {
            return Err("a base URL takes no query (?) or fragment (#)".into());
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err("a user name or password in the URL is not supported".into());
        }
        let (host, port) = split_port(authority)?;
        if let Some(c) = path.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("its path holds {c:?}: percent-encode it"));
        }
        Ok(BaseUrl {
            text: url.trim_end_matches('/').to_string(),
            host: host.to_string(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The URL as written, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host to connect to (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to (80 unless given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path before every API path, without a trailing `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `Host` header's value.
    pub fn authority(&self) -> String {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match self.port {
            80 => host,
            port => format!("{host}:{port}"),
        }
    }
}

impl fmt::Display for BaseUrl {
    /// The URL as written, without a trailing `/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `HOST[:PORT]` or `[IPV6][:PORT]`.
fn split_port(authority: &str) -> Result<(&str, u16), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("its IPv6 address has no ]")?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{host:?} is not an IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or("junk after ]")?)),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("it names no host".into());
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(format!(
            "{host:?} is not a host name or address (letters, digits, '-', '.')"
        ));
    }
    let port = match port {
        None => 80,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("{port:?} is not a port (1 to 65535)"))?,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_path_are_read() {
        let url = BaseUrl::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("127.0.0.1", 5000, "")
        );
        assert_eq!(url.authority(), "127.0.0.1:5000");
        let url = BaseUrl::parse(" HTTP://octopi.local/octoprint/ ").unwrap();
        assert_eq!((url.host(), url.port()), ("octopi.local", 80));
        assert_eq!(url.path(), "/octoprint");
        assert_eq!(url.authority(), "octopi.local");
        assert_eq!(url.to_string(), "HTTP://octopi.local/octoprint");
        let url = BaseUrl::parse("http://[::1]:7125/").unwrap();
        assert_eq!((url.host(), url.port(), url.path()), ("::1", 7125, ""));
        assert_eq!(url.authority(), "[::1]:7125");
        assert_eq!(url.to_string(), "http://[::1]:7125");
    }

    #[test]
    fn what_is_wrong_is_said() {
        for (url, why) in [
            ("https://127.0.0.1", "https:// is not supported"),
            ("127.0.0.1:5000", "http://"),
            ("not a url", "http://"),
            ("mailto:x@y", "http://"),
            ("http://", "no host"),
            ("http://:5000", "no host"),
            ("http://pi:http", "not a port"),
            ("http://pi:0", "not a port"),
            ("http://pi:70000", "not a port"),
            ("http://pi/a?b=c", "no query"),
            ("http://user:pw@pi", "password"),
            ("http://[::1", "no ]"),
            ("http://[pi]:80", "not an IPv6"),
            ("http://p i/", "not a host name"),
            ("http://pi/octo print", "percent-encode"),
        ] {
            let e = BaseUrl::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
