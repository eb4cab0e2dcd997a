//! The page's routes (listed in the module above), each checked first by
//! [`admit`]: launch, page, event stream, send, and the actions on a
//! transfer or a waiting file.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::json;
use tracing::{info, warn};

use super::jobs::Source;
use super::session::{Denied, Provenance, set_cookie};
use super::{feed, page};
use crate::workstation::bridge::deliver::{self, Destination, Failure, Kind};
use crate::workstation::bridge::routes::failure;
use crate::workstation::bridge::{Bridge, form, guard};

pub(super) type Shared = State<Arc<Bridge>>;

/// The router of every `/ui` route.
pub(crate) fn router(bridge: Arc<Bridge>) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/launch", get(launch))
        .route("/ui/launch-token", post(launch_token))
        .route("/ui/", get(page::index))
        .route("/ui/app.js", get(page::script))
        .route("/ui/style.css", get(page::style))
        .route("/ui/events", get(feed::events))
        .route("/ui/send", post(send))
        .route("/ui/jobs/{id}/{action}", post(job_action))
        .route("/ui/agents/{agent}/{action}", post(agent_action))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(bridge.clone(), admit))
        .with_state(bridge)
}

/// Checks every request: the launch routes by their own rules, the rest
/// by the session (and, for changes, its CSRF token).
async fn admit(State(bridge): Shared, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from = Provenance {
        host: text(header::HOST.as_str()),
        origin: text(header::ORIGIN.as_str()),
        fetch_site: text("sec-fetch-site"),
        cookie: text(header::COOKIE.as_str()),
        csrf: text("x-csrf-token"),
    };
    let change = request.method() != Method::GET && request.method() != Method::HEAD;
    let verdict = match path {
        "/ui/launch" => from.same_origin(true),
        // `fileagent ui` of this user, with the bridge's key.
        "/ui/launch-token" => {
            let key = text("x-api-key");
            if let Err(refusal) = guard::admit(from.host, from.origin, key, &bridge.key) {
                warn!(path, "launch token refused");
                return plain(refusal.status(), refusal.text());
            }
            Ok(())
        }
        // A person's navigation: typed, a bookmark, a reload.
        "/ui" | "/ui/" => bridge.ui.sessions.admit(&from, true, false).map(drop),
        _ => bridge.ui.sessions.admit(&from, false, change).map(drop),
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let status = match denied {
                Denied::Host(_) => StatusCode::MISDIRECTED_REQUEST,
                Denied::NoSession => StatusCode::UNAUTHORIZED,
                Denied::CrossSite(_) | Denied::Csrf => StatusCode::FORBIDDEN,
            };
            warn!(path = %request.uri().path(), status = status.as_u16(), "page request refused");
            plain(status, denied.text())
        }
    }
}

/// A plain-text answer, as the bridge's routes give theirs.
fn plain(status: StatusCode, text: String) -> Response {
    failure(Failure::new(status, text))
}

/// The value of `key` in a query string, decoded.
fn param(query: &Option<String>, key: &str) -> Option<String> {
    let query = query.as_deref()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `GET /ui/launch?token=T`: a session for this browser, then the page.
async fn launch(State(bridge): Shared, RawQuery(query): RawQuery) -> Response {
    let token = param(&query, "token").unwrap_or_default();
    match bridge.ui.sessions.redeem(&token) {
        Some(id) => {
            info!("the page was opened with a launch link");
            let cookie = [(header::SET_COOKIE, set_cookie(&id))];
            (cookie, Redirect::to("/ui/")).into_response()
        }
        None => plain(
            StatusCode::UNAUTHORIZED,
            "this link was used already or is too old: run `fileagent ui` again for a new one"
                .into(),
        ),
    }
}

/// `POST /ui/launch-token` (with the bridge's key): a new launch token.
async fn launch_token(State(bridge): Shared) -> String {
    bridge.ui.sessions.mint_launch()
}

/// The agents `to` names, each once, in order.
fn targets(bridge: &Bridge, to: &str) -> Result<Vec<Destination>, Failure> {
    let mut out: Vec<Destination> = Vec::new();
    for item in to.split(',').filter(|s| !s.is_empty()) {
        let (kind, name) = match item.split_once(':') {
            Some(("a", name)) => (Kind::Agent, name),
            Some(("g", name)) => (Kind::Group, name),
            _ => {
                let text = format!("{item:?} is neither a:AGENT nor g:GROUP");
                return Err(Failure::new(StatusCode::BAD_REQUEST, text));
            }
        };
        for dest in deliver::destinations(&bridge.dir, kind, name)? {
            if !out.iter().any(|d| d.name == dest.name) {
                out.push(dest);
            }
        }
    }
    if out.is_empty() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "choose at least one printer",
        ));
    }
    Ok(out)
}

/// `POST /ui/send?to=a:AGENT,g:GROUP&name=NAME&print=true`: the body is
/// the file; a job per agent.
async fn send(
    State(bridge): Shared,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let to = param(&query, "to").unwrap_or_default();
    let name = param(&query, "name").unwrap_or_default();
    let print = param(&query, "print").is_some_and(|p| p == "true");
    let dests = match targets(&bridge, &to) {
        Ok(dests) => dests,
        Err(f) => return failure(f),
    };
    if name.is_empty() || name.contains(['/', '\\']) {
        let text = format!("{name:?} is not a plain file name: drop a file, not a folder");
        return plain(StatusCode::BAD_REQUEST, text);
    }
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let jobs = &bridge.ui.jobs;
    info!(file_name = %name, bytes = ?size, agents = dests.len(), print, "sending from the page");
    let (spooled, ids) = match size {
        // The size is known: the agents get the file as it arrives.
        Some(size) => {
            let mut started = None;
            let spooled = form::read_raw_growing(body, &bridge.spool, |path, growth| {
                let source = Arc::new(Source::growing(path, size, growth));
                let ids = jobs.start(dests, Arc::clone(&source), &name, print);
                started = Some((source, ids));
            })
            .await;
            match started {
                Some((source, ids)) => (spooled.map(|s| source.complete(s)), ids),
                // No temp file could be made: nothing started.
                None => (spooled.map(drop), Vec::new()),
            }
        }
        None => match form::read_raw(body, &bridge.spool).await {
            Ok(spooled) => {
                let source = Arc::new(Source::spooled(spooled));
                (Ok(()), jobs.start(dests, source, &name, print))
            }
            Err(e) => (Err(e), Vec::new()),
        },
    };
    match spooled {
        Ok(()) => axum::Json(json!({ "jobs": ids })).into_response(),
        // The transfers under way stop with the same reason; nothing is stored.
        Err(e) => failure(e.failure()),
    }
}

/// `POST /ui/jobs/ID/ACTION`.
async fn job_action(State(bridge): Shared, Path((id, action)): Path<(u64, String)>) -> Response {
    let jobs = &bridge.ui.jobs;
    let (done, unless) = match action.as_str() {
        "cancel" => (jobs.cancel(id), "only a running transfer can be cancelled"),
        "retry" | "replace" => (
            jobs.retry(id, action == "replace"),
            "only a failed or cancelled transfer can be tried again (a stored one keeps no copy: drop the file again)",
        ),
        "dismiss" => (
            jobs.dismiss(id),
            "a running transfer cannot be dismissed: cancel it first",
        ),
        _ => return plain(StatusCode::NOT_FOUND, format!("no action {action:?}")),
    };
    match done {
        true => StatusCode::NO_CONTENT.into_response(),
        false => plain(StatusCode::CONFLICT, format!("transfer {id}: {unless}")),
    }
}

/// `POST /ui/agents/AGENT/{print,remove}?name=N`: a person starts a
/// waiting file (as `fileagent print`), or removes one from the spool.
async fn agent_action(
    State(bridge): Shared,
    Path((agent, action)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let name = param(&query, "name").unwrap_or_default();
    // An agent's name gives exactly one destination, or a 404 that says
    // which agents there are.
    let dest = match deliver::destinations(&bridge.dir, Kind::Agent, &agent) {
        Ok(mut dests) => dests.remove(0),
        Err(f) => return failure(f),
    };
    let result = match action.as_str() {
        "print" => deliver::print(&dest, &name).await.map(|()| "started"),
        "remove" => deliver::remove(&dest, &name)
            .await
            .map(|there| if there { "removed" } else { "was not there" }),
        _ => return plain(StatusCode::NOT_FOUND, format!("no action {action:?}")),
    };
    bridge.ui.board.stale(&agent);
    match result {
        Ok(what) => {
            info!(agent = %agent, file_name = %name, action = %action, "done from the page");
            axum::Json(json!({ "text": format!("{name}: {what}") })).into_response()
        }
        Err(f) => failure(f),
    }
}

/// Headers every page answer carries: no framing, no sniffing, no
/// referrer, nothing but this origin's own scripts and styles.
pub(super) fn hardened(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, header::HeaderValue::from_static(value));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "x-frame-options", "DENY");
    set(headers, "cache-control", "no-store");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_agents_and_groups_each_once() {
        let tmp = tempfile::tempdir().unwrap();
        let config = "[agents.pi1]\naddress = \"127.0.0.1:9001\"\n\
                      [agents.pi2]\naddress = \"127.0.0.1:9002\"\n\
                      [groups]\nfarm = [\"pi2\", \"pi1\"]\n";
        std::fs::write(tmp.path().join("client.toml"), config).unwrap();
        let bridge = Bridge::new(tmp.path().into(), "K".into(), tmp.path().into());
        let names = |to: &str| -> Vec<String> {
            targets(&bridge, to)
                .unwrap()
                .into_iter()
                .map(|d| d.name)
                .collect()
        };
        assert_eq!(names("a:pi1"), ["pi1"]);
        assert_eq!(names("a:pi1,g:farm"), ["pi1", "pi2"]);
        assert_eq!(
            targets(&bridge, "").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            targets(&bridge, "x:pi1").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            targets(&bridge, "a:nope").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
