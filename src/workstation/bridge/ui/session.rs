//! Who may use the web page: a browser that came in through a launch URL.
//!
//! `fileagent ui` gets a one-time launch token (minted by this process, or
//! asked of a running one with the bridge's key) and opens
//! `/ui/launch?token=T`. Redeeming it, once and within [`LAUNCH_TTL`],
//! sets a session cookie (`HttpOnly`, `SameSite=Strict`, path `/ui`) and
//! gives the page a CSRF token, which every change must carry in
//! `X-CSRF-Token`. Requests must also come from the page's own origin:
//! `Origin` (when sent) must be `http://` + the request's own loopback
//! `Host`, and `Sec-Fetch-Site` (when sent) `same-origin`, or `none` for a
//! navigation the person typed or a program opened. Nothing here is ever
//! sent to the browser but the cookie and the CSRF token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;
use crate::workstation::bridge::guard;

/// How long a launch URL may wait before it is opened.
pub(crate) const LAUNCH_TTL: Duration = Duration::from_secs(120);
/// Launch tokens not yet redeemed, at most (older ones are dropped).
const MAX_LAUNCHES: usize = 16;
/// Sessions kept, at most: the oldest goes when a new one comes.
const MAX_SESSIONS: usize = 32;
/// The session cookie's name.
pub(crate) const COOKIE: &str = "fileagent_ui";
/// Random bytes in a token (128 bits), hex-encoded.
const TOKEN_BYTES: usize = 16;

/// A browser's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The token every change must carry in `X-CSRF-Token`.
    pub(crate) csrf: String,
}

/// Launch tokens and sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    launches: Mutex<HashMap<String, Instant>>,
    /// By cookie value, with when each began.
    sessions: Mutex<HashMap<String, (Instant, Session)>>,
}

/// Why a request to the page is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// `Host` is not this machine's loopback (DNS rebinding): 421.
    Host(String),
    /// Another site's page sent it: 403.
    CrossSite(String),
    /// No session (no cookie, or an unknown one): 401.
    NoSession,
    /// A change without the session's CSRF token: 403.
    Csrf,
}

impl Denied {
    /// What the browser is told.
    pub(crate) fn text(&self) -> String {
        match self {
            Denied::Host(host) => format!(
                "fileagent's page answers only at 127.0.0.1, localhost or [::1], not at {host:?}"
            ),
            Denied::CrossSite(from) => {
                format!("requests from other sites ({from}) are not accepted")
            }
            Denied::NoSession => "open this page with `fileagent ui`: it prints or opens a \
                                  one-time link that lets this browser in"
                .into(),
            Denied::Csrf => "this request lacks the page's token: reload the page".into(),
        }
    }
}

/// What a request says about where it comes from.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Provenance<'a> {
    pub(crate) host: Option<&'a str>,
    pub(crate) origin: Option<&'a str>,
    pub(crate) fetch_site: Option<&'a str>,
    pub(crate) cookie: Option<&'a str>,
    pub(crate) csrf: Option<&'a str>,
}

impl Provenance<'_> {
    /// Checks host and origin: a loopback `Host`, and, when the browser
    /// says, this page's own origin. `navigation` admits `Sec-Fetch-Site:
    /// none` (the launch URL, typed or opened by a program).
    pub(crate) fn same_origin(&self, navigation: bool) -> Result<(), Denied> {
        let host = self.host.unwrap_or("");
        if !guard::loopback_host(host) {
            return Err(Denied::Host(host.to_string()));
        }
        if let Some(origin) = self.origin
            && origin != format!("http://{host}")
        {
            return Err(Denied::CrossSite(origin.to_string()));
        }
        match self.fetch_site {
            None | Some("same-origin") => Ok(()),
            Some("none") if navigation => Ok(()),
            Some(other) => Err(Denied::CrossSite(format!("Sec-Fetch-Site: {other}"))),
        }
    }
}

impl Sessions {
    /// A new launch token, good once within [`LAUNCH_TTL`].
    pub(crate) fn mint_launch(&self) -> String {
        let token = new_token();
        let mut launches = lock(&self.launches);
        launches.retain(|_, at| at.elapsed() < LAUNCH_TTL);
        while launches.len() >= MAX_LAUNCHES {
            let oldest = launches
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, _)| t.clone());
            launches.remove(&oldest.unwrap_or_default());
        }
        launches.insert(token.clone(), Instant::now());
        token
    }

    /// Redeems a launch token: the new session's cookie value, or `None`
    /// for a token that is unknown, used or expired.
    pub(crate) fn redeem(&self, token: &str) -> Option<String> {
        let minted = lock(&self.launches).remove(token)?;
        if minted.elapsed() >= LAUNCH_TTL {
            return None;
        }
        let id = new_token();
        let mut sessions = lock(&self.sessions);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| id.clone());
            sessions.remove(&oldest.unwrap_or_default());
        }
        let session = Session { csrf: new_token() };
        sessions.insert(id.clone(), (Instant::now(), session));
        Some(id)
    }

    /// The session a request belongs to, checked as `same_origin` says;
    /// with `change`, its CSRF token too.
    pub(crate) fn admit(
        &self,
        request: &Provenance<'_>,
        navigation: bool,
        change: bool,
    ) -> Result<Session, Denied> {
        request.same_origin(navigation)?;
        let id = request
            .cookie
            .and_then(cookie_value)
            .ok_or(Denied::NoSession)?;
        let session = lock(&self.sessions)
            .get(id)
            .map(|(_, s)| s.clone())
            .ok_or(Denied::NoSession)?;
        if change {
            let given = request.csrf.unwrap_or("");
            if !guard::same(given.as_bytes(), session.csrf.as_bytes()) {
                return Err(Denied::Csrf);
            }
        }
        Ok(session)
    }
}

impl Sessions {
    /// The CSRF token of the session in a `Cookie` header, if any.
    pub(crate) fn csrf_of(&self, cookie: Option<&str>) -> Option<String> {
        let id = cookie.and_then(cookie_value)?;
        lock(&self.sessions).get(id).map(|(_, s)| s.csrf.clone())
    }
}

/// The `Set-Cookie` value for a session.
pub(crate) fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict")
}

/// The session cookie's value in a `Cookie` header.
fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A new random token (hex).
fn new_token() -> String {
    // The system's random source failing leaves no safe way on: the
    // process cannot make any secret.
    let bytes = guard::random_bytes::<TOKEN_BYTES>().expect("the system's random source failed");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_page<'a>(cookie: &'a str, csrf: Option<&'a str>) -> Provenance<'a> {
        Provenance {
            host: Some("127.0.0.1:7342"),
            origin: Some("http://127.0.0.1:7342"),
            fetch_site: Some("same-origin"),
            cookie: Some(cookie),
            csrf,
        }
    }

    #[test]
    fn a_launch_token_lets_one_browser_in_once() {
        let sessions = Sessions::default();
        let token = sessions.mint_launch();
        let id = sessions.redeem(&token).expect("a fresh token is good");
        assert!(sessions.redeem(&token).is_none(), "a token is good once");
        assert!(sessions.redeem("0123").is_none());
        let cookie = format!("other=1; {COOKIE}={id}");
        let session = sessions
            .admit(&from_page(&cookie, None), false, false)
            .unwrap();
        assert_eq!(session.csrf.len(), 2 * TOKEN_BYTES);
        assert_ne!(session.csrf, id);
        assert_eq!(
            sessions.admit(&from_page("fileagent_ui=nope", None), false, false),
            Err(Denied::NoSession)
        );
    }

    #[test]
    fn changes_need_the_csrf_token() {
        let sessions = Sessions::default();
        let id = sessions.redeem(&sessions.mint_launch()).unwrap();
        let cookie = format!("{COOKIE}={id}");
        let csrf = sessions
            .admit(&from_page(&cookie, None), false, false)
            .unwrap()
            .csrf;
        assert_eq!(
            sessions.admit(&from_page(&cookie, None), false, true),
            Err(Denied::Csrf)
        );
        assert_eq!(
            sessions.admit(&from_page(&cookie, Some("0000")), false, true),
            Err(Denied::Csrf)
        );
        assert!(
            sessions
                .admit(&from_page(&cookie, Some(&csrf)), false, true)
                .is_ok()
        );
    }

    #[test]
    fn other_sites_and_other_hosts_are_turned_away() {
        let sessions = Sessions::default();
        let id = sessions.redeem(&sessions.mint_launch()).unwrap();
        let cookie = format!("{COOKIE}={id}");
        let cross = |request: &Provenance<'_>, navigation| {
            matches!(
                sessions.admit(request, navigation, false),
                Err(Denied::CrossSite(_))
            )
        };
        let mut request = from_page(&cookie, None);
        request.origin = Some("http://evil.example");
        assert!(cross(&request, false));
        // Same host, another port: another origin.
        request.origin = Some("http://127.0.0.1:8080");
        assert!(cross(&request, false));
        let mut request = from_page(&cookie, None);
        request.fetch_site = Some("cross-site");
        assert!(cross(&request, true));
        request.fetch_site = Some("none");
        assert!(sessions.admit(&request, true, false).is_ok());
        assert!(sessions.admit(&request, false, false).is_err());
        let mut request = from_page(&cookie, None);
        request.host = Some("evil.example");
        request.origin = Some("http://evil.example");
        assert_eq!(
            sessions.admit(&request, false, false),
            Err(Denied::Host("evil.example".into()))
        );
    }

    #[test]
    fn launch_tokens_and_sessions_are_bounded() {
        let sessions = Sessions::default();
        let first = sessions.mint_launch();
        for _ in 0..MAX_LAUNCHES {
            sessions.mint_launch();
        }
        assert!(sessions.redeem(&first).is_none(), "the oldest was dropped");
        let ids: Vec<String> = (0..MAX_SESSIONS + 1)
            .map(|_| sessions.redeem(&sessions.mint_launch()).unwrap())
            .collect();
        assert_eq!(lock(&sessions.sessions).len(), MAX_SESSIONS);
        let cookie = format!("{COOKIE}={}", ids[MAX_SESSIONS]);
        assert!(
            sessions
                .admit(&from_page(&cookie, None), false, false)
                .is_ok()
        );
    }

    #[test]
    fn the_cookie_is_strict_and_out_of_scripts_reach() {
        let c = set_cookie("abc");
        assert!(c.starts_with("fileagent_ui=abc;"));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"));
    }
}
