//! The bridge's routes, each a short sequence: who asks ([`super::guard`]),
//! which agents the URL names, the request read, the agents asked, the
//! answer in OctoPrint's shape. Routes and what needs them:
//!
//! | route | for |
//! | --- | --- |
//! | `GET api/version` | every slicer before an upload; client libraries |
//! | `POST api/files/local` (multipart) | every slicer's upload (in `upload`) |
//! | `POST api/files/local/PATH` `{"command":"select"}` | Cura, client libraries |
//! | `GET api/settings`, `POST api/login` | Cura's connection check |
//! | `GET api/printer`, `GET api/job` | Cura's polling, client libraries |
//! | `PUT api/v1/files/local/PATH`, `GET api/v1/storage` | PrusaSlicer's PrusaLink type |
//! | `HEAD api/v1/files/local/PATH` | PrusaLinkPy's exists check |
//! | `GET api/files[/local]` | client programs' file lists (octoprint-cli) |
//!
//! Under `/a/AGENT/` and `/g/GROUP/`, and at the root for the default
//! agent (octorest drops any path prefix).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use tracing::warn;

use super::deliver::{self, Destination, Failure, Kind};
use super::upload::{command, put_upload, upload};
use super::{Bridge, guard, octo};
use crate::wire::protocol::{AgentStatus, FileEntry, Watched};
use crate::workstation::ClientError;

pub(super) type Shared = State<Arc<Bridge>>;
/// A route's path parameters: `kind` and `target` (absent at the root),
/// the file's `path`, the `storage`.
pub(super) type Params = Path<HashMap<String, String>>;

/// The router of every route, under `/a/NAME/`, `/g/GROUP/` and the root.
pub(super) fn router(bridge: Arc<Bridge>) -> Router {
    let scoped = Router::new()
        .route("/api/version", get(version))
        .route("/api/settings", get(settings))
        .route("/api/login", post(login))
        .route("/api/printer", get(printer))
        .route("/api/job", get(job))
        .route("/api/files", get(files))
        .route("/api/files/local", post(upload).get(files))
        .route("/api/files/local/{*path}", post(command))
        .route("/api/v1/storage", get(storage))
        .route(
            "/api/v1/files/{storage}/{*path}",
            put(put_upload).head(exists),
        );
    Router::new()
        .nest("/{kind}/{target}", scoped.clone())
        .merge(scoped)
        .fallback(|| async {
            failure(Failure::new(
                StatusCode::NOT_FOUND,
                "not a route of fileagent's bridge: give the slicer http://127.0.0.1:7342/a/AGENT \
                 (or /g/GROUP) as its host",
            ))
        })
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(bridge.clone(), admit))
        .with_state(bridge)
}

/// Turns away what [`guard::admit`] refuses: a foreign `Host` or page, no key.
async fn admit(State(bridge): Shared, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = guard::admit(
        text(header::HOST.as_str()),
        text(header::ORIGIN.as_str()),
        text("x-api-key"),
        &bridge.key,
    );
    match verdict {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let status = refusal.status();
            warn!(path = %request.uri().path(), status = status.as_u16(), "request refused");
            failure(Failure::new(status, refusal.text()))
        }
    }
}

/// A failure as OctoPrint's clients read one: the status and plain text.
pub(super) fn failure(f: Failure) -> Response {
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    (f.status, plain, f.text).into_response()
}

/// Where a request's URL points, as `kind` and `target`: `/a/AGENT`,
/// `/g/GROUP`, or at the root the default agent.
pub(super) fn place(
    bridge: &Bridge,
    params: &HashMap<String, String>,
) -> Result<(String, String), Failure> {
    if let (Some(kind), Some(target)) = (params.get("kind"), params.get("target")) {
        return Ok((kind.clone(), target.clone()));
    }
    let config = crate::workstation::config::ClientConfig::load(&bridge.dir)
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    match config.default_agent {
        Some(agent) => Ok(("a".into(), agent)),
        None => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "no default agent: use http://127.0.0.1:7342/a/AGENT as the host, or pair with an agent first",
        )),
    }
}

/// The agents a request's URL names.
pub(super) fn scope(
    bridge: &Bridge,
    params: &HashMap<String, String>,
) -> Result<Vec<Destination>, Failure> {
    let (kind, target) = place(bridge, params)?;
    let kind = match kind.as_str() {
        "a" => Kind::Agent,
        "g" => Kind::Group,
        _ => {
            let text = "bridge URLs are /a/AGENT/... or /g/GROUP/...";
            return Err(Failure::new(StatusCode::NOT_FOUND, text));
        }
    };
    deliver::destinations(&bridge.dir, kind, &target)
}

/// A fixed answer, once the URL names a paired agent or a group (a slicer's
/// connection test of a wrong URL fails, and says what exists).
fn known(bridge: &Bridge, params: &HashMap<String, String>, answer: Value) -> Response {
    match scope(bridge, params) {
        Ok(_) => axum::Json(answer).into_response(),
        Err(f) => failure(f),
    }
}

/// `GET api/version`.
async fn version(State(bridge): Shared, Path(params): Params) -> Response {
    known(&bridge, &params, octo::version())
}

/// `GET api/settings`.
async fn settings(State(bridge): Shared, Path(params): Params) -> Response {
    known(&bridge, &params, octo::settings())
}

/// `POST api/login`: Cura's passive login; there is one user, the key's.
async fn login(State(bridge): Shared, Path(params): Params) -> Response {
    let user = json!({
        "name": "fileagent", "active": true, "user": true, "admin": false,
        "groups": ["users"], "permissions": [],
    });
    known(&bridge, &params, user)
}

/// `GET api/v1/storage`: one storage, the printer's.
async fn storage(State(bridge): Shared, Path(params): Params) -> Response {
    let storage = json!({"storage_list": [{
        "type": "LOCAL", "path": "/local", "name": "fileagent",
        "available": true, "read_only": false,
    }]});
    known(&bridge, &params, storage)
}

/// The one agent's files and status (a group has no one list).
async fn listing(
    bridge: &Bridge,
    params: &HashMap<String, String>,
) -> Result<(Vec<FileEntry>, AgentStatus), Failure> {
    let mut dests = scope(bridge, params)?;
    let (Some(dest), true) = (dests.pop(), dests.is_empty()) else {
        let text = "a group has no one file list: ask each agent at /a/AGENT";
        return Err(Failure::new(StatusCode::BAD_REQUEST, text));
    };
    let mut client = deliver::connect(&dest).await?;
    let found = async { Ok::<_, ClientError>((client.list().await?, client.status().await?)) };
    let found = found.await;
    client.close().await;
    found.map_err(|e| deliver::failure(&dest.name, e))
}

/// `GET api/files[/local]`: the agent's files, as `fileagent list` shows
/// them.
async fn files(State(bridge): Shared, Path(params): Params, headers: HeaderMap) -> Response {
    match listing(&bridge, &params).await {
        Ok((entries, status)) => {
            let place = place(&bridge, &params).ok();
            let resource = |name: &str| super::upload::resource(&headers, place.clone(), name);
            axum::Json(octo::files(&entries, status.free_bytes, resource)).into_response()
        }
        Err(f) => failure(f),
    }
}

/// `HEAD api/v1/files/STORAGE/NAME` (PrusaLink): 200 when the agent has a
/// file of that name, 404 when not.
async fn exists(State(bridge): Shared, Path(params): Params) -> Response {
    let path = params.get("path").map_or("", String::as_str);
    match listing(&bridge, &params).await {
        Ok((entries, _)) if entries.iter().any(|f| f.name == path) => {
            StatusCode::OK.into_response()
        }
        Ok(_) => StatusCode::NOT_FOUND.into_response(),
        Err(f) => failure(f),
    }
}

/// The reports of each agent in scope, or the first failure.
async fn reports(
    bridge: &Arc<Bridge>,
    params: &HashMap<String, String>,
) -> Result<Vec<Watched>, Failure> {
    let mut out = Vec::new();
    for dest in scope(bridge, params)? {
        let report = bridge.printers.state(&dest).await;
        out.push(report.map_err(|why| Failure::new(StatusCode::BAD_GATEWAY, why))?);
    }
    Ok(out)
}

/// `GET api/printer`: the printer (a group: its first member that is
/// connected) as the agent last reported it; 409 as OctoPrint's when none is.
async fn printer(State(bridge): Shared, Path(params): Params) -> Response {
    let reports = match reports(&bridge, &params).await {
        Ok(reports) => reports,
        Err(f) => return failure(f),
    };
    match reports.iter().find_map(octo::printer) {
        Some(json) => axum::Json(json).into_response(),
        None => {
            let why: Vec<&str> = reports.iter().map(|r| r.printer.text.as_str()).collect();
            let text = format!("Printer is not operational: {}", why.join("; "));
            failure(Failure::new(StatusCode::CONFLICT, text))
        }
    }
}

/// `GET api/job`: the job (a group: the first member's that prints, else
/// the first's).
async fn job(State(bridge): Shared, Path(params): Params) -> Response {
    match reports(&bridge, &params).await {
        Ok(reports) => {
            let busy = reports.iter().find(|r| r.printer.busy());
            let chosen = busy.or(reports.first());
            axum::Json(chosen.map(octo::job).unwrap_or(Value::Null)).into_response()
        }
        Err(f) => failure(f),
    }
}
