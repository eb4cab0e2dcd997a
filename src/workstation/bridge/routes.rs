//! The bridge's routes, each a short sequence: who asks ([`super::guard`]),
//! which agents the URL names, the request read, the agents asked, the
//! answer in OctoPrint's shape. Routes and what needs them:
//!
//! | route | for |
//! | --- | --- |
//! | `GET api/version` | every slicer before an upload; client libraries |
//! | `POST api/files/local` (multipart) | every slicer's upload |
//! | `POST api/files/local/PATH` `{"command":"select"}` | Cura, client libraries |
//! | `GET api/settings`, `POST api/login` | Cura's connection check |
//! | `GET api/printer`, `GET api/job` | Cura's polling, client libraries |
//! | `PUT api/v1/files/local/PATH`, `GET api/v1/storage` | PrusaSlicer's PrusaLink type |

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::deliver::{self, Destination, Failure, Kind};
use super::form::{self, BadForm, Spooled};
use super::{Bridge, guard, octo};
use crate::workstation::Sent;

type Shared = State<Arc<Bridge>>;

/// The router of every route under `/a/NAME/` and `/g/GROUP/`.
pub(super) fn router(bridge: Arc<Bridge>) -> Router {
    let scoped = Router::new()
        .route(
            "/api/version",
            get(|| async { axum::Json(octo::version()) }),
        )
        .route(
            "/api/settings",
            get(|| async { axum::Json(octo::settings()) }),
        )
        .route("/api/login", post(login))
        .route("/api/printer", get(printer))
        .route("/api/job", get(job))
        .route("/api/files/local", post(upload))
        .route("/api/files/local/{*path}", post(command))
        .route("/api/v1/storage", get(storage))
        .route("/api/v1/files/{storage}/{*path}", put(put_upload));
    Router::new()
        .nest("/{kind}/{target}", scoped)
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
            warn!(path = %request.uri().path(), refusal = ?std::mem::discriminant(&refusal), "request refused");
            let status = match refusal {
                guard::Refusal::Host(_) => StatusCode::MISDIRECTED_REQUEST,
                _ => StatusCode::FORBIDDEN,
            };
            failure(Failure::new(status, refusal.text()))
        }
    }
}

/// A failure as OctoPrint's clients read one: the status and plain text.
fn failure(f: Failure) -> Response {
    (
        f.status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        f.text,
    )
        .into_response()
}

/// The agents `/{kind}/{target}` names.
fn scope(bridge: &Bridge, kind: &str, target: &str) -> Result<Vec<Destination>, Failure> {
    let kind = match kind {
        "a" => Kind::Agent,
        "g" => Kind::Group,
        _ => {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "bridge URLs are /a/AGENT/... or /g/GROUP/...",
            ));
        }
    };
    deliver::destinations(&bridge.dir, kind, target)
}

async fn login() -> axum::Json<Value> {
    axum::Json(
        json!({"name": "fileagent", "active": true, "user": true, "admin": false, "groups": ["users"], "permissions": []}),
    )
}

/// `GET api/v1/storage`: one storage, the printer's.
async fn storage() -> axum::Json<Value> {
    axum::Json(json!({"storage_list": [{
        "type": "LOCAL", "path": "/local", "name": "fileagent",
        "available": true, "read_only": false,
    }]}))
}

/// The reports of each agent in scope, or the first failure.
async fn reports(
    bridge: &Arc<Bridge>,
    kind: &str,
    target: &str,
) -> Result<Vec<crate::wire::protocol::Watched>, Failure> {
    let mut out = Vec::new();
    for dest in scope(bridge, kind, target)? {
        let report = bridge.printers.state(&dest).await;
        out.push(report.map_err(|why| Failure::new(StatusCode::BAD_GATEWAY, why))?);
    }
    Ok(out)
}

/// `GET api/printer`: the printer (a group: its first member that is
/// connected) as the agent last reported it.
async fn printer(State(bridge): Shared, Path((kind, target)): Path<(String, String)>) -> Response {
    let reports = match reports(&bridge, &kind, &target).await {
        Ok(reports) => reports,
        Err(f) => return failure(f),
    };
    match reports.iter().find_map(octo::printer) {
        Some(json) => axum::Json(json).into_response(),
        None => {
            let why: Vec<&str> = reports.iter().map(|r| r.printer.text.as_str()).collect();
            failure(Failure::new(
                StatusCode::CONFLICT,
                format!("Printer is not operational: {}", why.join("; ")),
            ))
        }
    }
}

/// `GET api/job`: the job (a group: the first member's that prints, else
/// the first's).
async fn job(State(bridge): Shared, Path((kind, target)): Path<(String, String)>) -> Response {
    match reports(&bridge, &kind, &target).await {
        Ok(reports) => {
            let chosen = reports
                .iter()
                .find(|r| r.printer.busy())
                .or(reports.first());
            axum::Json(chosen.map(octo::job).unwrap_or(Value::Null)).into_response()
        }
        Err(f) => failure(f),
    }
}

/// A client error in the body, or a local one (disk full) in spooling it.
fn bad_form(e: BadForm) -> Failure {
    match e {
        BadForm::Client(text) => Failure::new(StatusCode::BAD_REQUEST, text),
        BadForm::Local(text) => Failure::new(StatusCode::INSUFFICIENT_STORAGE, text),
    }
}

/// The plain file name of an upload to `folder`/`name`: fileagent keeps no
/// folders.
fn plain_name(folder: &str, name: &str) -> Result<String, Failure> {
    let folder = folder.trim_matches('/');
    if !folder.is_empty() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!(
                "fileagent keeps files without folders: upload {name:?} without the folder {folder:?}"
            ),
        ));
    }
    Ok(name.to_string())
}

/// `POST api/files/local`: the form, then the file to every agent in scope.
async fn upload(
    State(bridge): Shared,
    Path((kind, target)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let dests = match scope(&bridge, &kind, &target) {
        Ok(dests) => dests,
        Err(f) => return failure(f),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let form = match form::read_form(content_type, body, &bridge.spool).await {
        Ok(form) => form,
        Err(e) => return failure(bad_form(e)),
    };
    let name = match plain_name(&form.path, &form.name) {
        Ok(name) => name,
        Err(f) => return failure(f),
    };
    // OctoPrint replaces a file of the same name; so does its bridge.
    match carry(&dests, &form.file, &name, form.print, true).await {
        Ok(_) => {
            let resource = resource(&headers, &kind, &target, &name);
            let answer = octo::uploaded(&name, &resource, form.print, form.select);
            (
                StatusCode::CREATED,
                [(header::LOCATION, resource)],
                axum::Json(answer),
            )
                .into_response()
        }
        Err(f) => failure(f),
    }
}

/// `PUT api/v1/files/local/NAME` (PrusaLink): the raw body, `Print-After-Upload`
/// and `Overwrite` as PrusaSlicer sends them; 201 for a new file, 204 for
/// one replaced or already there.
async fn put_upload(
    State(bridge): Shared,
    Path((kind, target, storage, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let dests = match scope(&bridge, &kind, &target) {
        Ok(dests) if storage == "local" => dests,
        Ok(_) => {
            return failure(Failure::new(
                StatusCode::NOT_FOUND,
                format!("no storage {storage:?}: use /local"),
            ));
        }
        Err(f) => return failure(f),
    };
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", &path));
    let name = match plain_name(folder, name) {
        Ok(name) => name,
        Err(f) => return failure(f),
    };
    let yes = |h: &str| headers.get(h).is_some_and(|v| v.as_bytes() == b"?1");
    let file = match form::read_raw(body, &bridge.spool).await {
        Ok(file) => file,
        Err(e) => return failure(bad_form(e)),
    };
    match carry(
        &dests,
        &file,
        &name,
        yes("print-after-upload"),
        yes("overwrite"),
    )
    .await
    {
        Ok(sent) if sent.iter().all(|s| !s.unchanged && !s.replaced) => {
            StatusCode::CREATED.into_response()
        }
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => failure(f),
    }
}

/// Sends the spooled file to every agent at once; the first failure (said
/// with what the others did), or what each stored.
async fn carry(
    dests: &[Destination],
    file: &Spooled,
    name: &str,
    print: bool,
    overwrite: bool,
) -> Result<Vec<Sent>, Failure> {
    let started = Instant::now();
    let path = file.file.path();
    let sends = dests
        .iter()
        .map(|d| deliver::send(d, path, name, print, overwrite));
    let results = futures_util::future::join_all(sends).await;
    let mut stored = Vec::new();
    let mut failed: Option<Failure> = None;
    for (dest, result) in dests.iter().zip(results) {
        match result {
            Ok(sent) => {
                info!(agent = %dest.name, file_name = %name, bytes = file.size, print, secs = started.elapsed().as_secs_f64(), "stored through the bridge");
                stored.push((dest.name.as_str(), sent));
            }
            Err(f) => {
                warn!(agent = %dest.name, file_name = %name, status = f.status.as_u16(), error = %f.text, "upload through the bridge failed");
                match &mut failed {
                    Some(first) => first.text = format!("{}; {}", first.text, f.text),
                    None => failed = Some(f),
                }
            }
        }
    }
    match failed {
        None => Ok(stored.into_iter().map(|(_, sent)| sent).collect()),
        Some(mut f) if !stored.is_empty() => {
            let names: Vec<&str> = stored.iter().map(|(n, _)| *n).collect();
            f.text = format!("stored on {} only; {}", names.join(", "), f.text);
            Err(f)
        }
        Some(f) => Err(f),
    }
}

/// A file command (`POST api/files/local/PATH`).
#[derive(Deserialize)]
struct FileCommand {
    command: String,
    #[serde(default)]
    print: bool,
}

/// `select` with `print`: a person starts the file from the slicer (as
/// `fileagent print` does); `select` alone has nothing to do here.
async fn command(
    State(bridge): Shared,
    Path((kind, target, path)): Path<(String, String, String)>,
    axum::Json(cmd): axum::Json<FileCommand>,
) -> Response {
    if cmd.command != "select" {
        let text = format!(
            "fileagent's bridge takes only the select command, not {:?}",
            cmd.command
        );
        return failure(Failure::new(StatusCode::BAD_REQUEST, text));
    }
    let dests = match scope(&bridge, &kind, &target) {
        Ok(dests) => dests,
        Err(f) => return failure(f),
    };
    if cmd.print {
        for dest in &dests {
            if let Err(f) = deliver::print(dest, &path).await {
                return failure(f);
            }
            info!(agent = %dest.name, file_name = %path, "print started from the bridge");
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The URL of an uploaded file, on the bridge the client called.
fn resource(headers: &HeaderMap, kind: &str, target: &str, name: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'?')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let enc = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
    format!(
        "http://{host}/{kind}/{}/api/files/local/{}",
        enc(target),
        enc(name)
    )
}
