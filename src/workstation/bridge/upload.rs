//! The routes that carry a file: OctoPrint's multipart upload, PrusaLink's
//! `PUT`, and `select` with `print`. The body is spooled first (strictly,
//! see [`super::form`]) while the connections to the agents in scope are
//! opened, then sent to every one at once; the client hears "created" only
//! once each has stored and verified it.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::{info, warn};

use super::deliver::{self, Destination, Failure};
use super::form::{self, Spooled};
use super::octo;
use super::routes::{Params, Shared, failure, place, scope};
use crate::workstation::{Client, Sent};

/// The plain file name of an upload to `folder`/`name`: fileagent keeps no
/// folders.
fn plain_name(folder: &str, name: &str) -> Result<String, Failure> {
    let folder = folder.trim_matches('/');
    if !folder.is_empty() {
        let text = format!(
            "fileagent keeps files without folders: upload {name:?} without the folder {folder:?}"
        );
        return Err(Failure::new(StatusCode::BAD_REQUEST, text));
    }
    Ok(name.to_string())
}

/// `POST api/files/local`: the form, then the file to every agent in scope.
pub(super) async fn upload(
    State(bridge): Shared,
    Path(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let dests = match scope(&bridge, &params) {
        Ok(dests) => dests,
        Err(f) => return failure(f),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // The agents' handshakes happen while the body arrives.
    let (form, clients) = tokio::join!(
        form::read_form(content_type, body, &bridge.spool),
        deliver::connect_all(&dests)
    );
    let form = match form {
        Ok(form) => form,
        Err(e) => return failure(e.failure()),
    };
    let name = match plain_name(&form.path, &form.name) {
        Ok(name) => name,
        Err(f) => return failure(f),
    };
    // OctoPrint replaces a file of the same name; so does its bridge.
    match carry(&dests, clients, &form.file, &name, form.print, true).await {
        Ok(_) => {
            let resource = resource(&headers, place(&bridge, &params).ok(), &name);
            let answer = octo::uploaded(&name, &resource, form.print, form.select);
            let location = [(header::LOCATION, resource)];
            (StatusCode::CREATED, location, axum::Json(answer)).into_response()
        }
        Err(f) => failure(f),
    }
}

/// `PUT api/v1/files/STORAGE/NAME` (PrusaLink): the raw body, with
/// `Print-After-Upload` and `Overwrite` as PrusaSlicer sends them; 201 for
/// a new file, 204 for one replaced or there already.
pub(super) async fn put_upload(
    State(bridge): Shared,
    Path(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let storage = params.get("storage").map_or("", String::as_str);
    let path = params.get("path").map_or("", String::as_str);
    // PrusaLink's storages: the printer's own and its USB stick; fileagent
    // has one, the agent's spool.
    let dests = match scope(&bridge, &params) {
        Ok(dests) if matches!(storage, "local" | "usb") => dests,
        Ok(_) => {
            let text = format!("no storage {storage:?}: use /local");
            return failure(Failure::new(StatusCode::NOT_FOUND, text));
        }
        Err(f) => return failure(f),
    };
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    let name = match plain_name(folder, name) {
        Ok(name) => name,
        Err(f) => return failure(f),
    };
    let yes = |h: &str| headers.get(h).is_some_and(|v| v.as_bytes() == b"?1");
    let (file, clients) = tokio::join!(
        form::read_raw(body, &bridge.spool),
        deliver::connect_all(&dests)
    );
    let file = match file {
        Ok(file) => file,
        Err(e) => return failure(e.failure()),
    };
    let print = yes("print-after-upload");
    match carry(&dests, clients, &file, &name, print, yes("overwrite")).await {
        Ok(sent) if sent.iter().all(|s| !s.unchanged && !s.replaced) => {
            StatusCode::CREATED.into_response()
        }
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => failure(f),
    }
}

/// Sends the spooled file to every agent at once; what each stored, or the
/// failures (said with where it was stored nonetheless).
async fn carry(
    dests: &[Destination],
    clients: Vec<Result<Client, Failure>>,
    file: &Spooled,
    name: &str,
    print: bool,
    overwrite: bool,
) -> Result<Vec<Sent>, Failure> {
    let started = Instant::now();
    let sends = dests.iter().zip(clients).map(|(d, client)| async move {
        let parcel = deliver::Parcel {
            overwrite,
            ..deliver::Parcel::spooled(file, name, print)
        };
        let (result, client) = deliver::send(d, client, &parcel, &mut ()).await;
        if let Some(client) = client {
            client.close().await;
        }
        result
    });
    let results = futures_util::future::join_all(sends).await;
    let mut stored = Vec::new();
    let mut failed: Option<Failure> = None;
    for (dest, result) in dests.iter().zip(results) {
        match result {
            Ok(sent) => {
                let secs = started.elapsed().as_secs_f64();
                info!(agent = %dest.name, file_name = %name, bytes = file.size, print, secs, "stored through the bridge");
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
pub(super) struct FileCommand {
    command: String,
    #[serde(default)]
    print: bool,
}

/// `select` with `print`: a person starts the file from the slicer (as
/// `fileagent print` does); `select` alone has nothing to do here.
pub(super) async fn command(
    State(bridge): Shared,
    Path(params): Params,
    axum::Json(cmd): axum::Json<FileCommand>,
) -> Response {
    let path = params.get("path").map_or("", String::as_str);
    if cmd.command != "select" {
        let text = format!(
            "fileagent's bridge takes only the select command, not {:?}",
            cmd.command
        );
        return failure(Failure::new(StatusCode::BAD_REQUEST, text));
    }
    let dests = match scope(&bridge, &params) {
        Ok(dests) => dests,
        Err(f) => return failure(f),
    };
    if cmd.print {
        for dest in &dests {
            if let Err(f) = deliver::print(dest, path).await {
                return failure(f);
            }
            info!(agent = %dest.name, file_name = %path, "print started from the bridge");
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The URL of an uploaded file on the bridge the client called, under the
/// prefix it used.
pub(super) fn resource(headers: &HeaderMap, place: Option<(String, String)>, name: &str) -> String {
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
    let enc = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let prefix = place
        .map(|(kind, target)| format!("/{kind}/{}", enc(&target)))
        .unwrap_or_default();
    format!("http://{host}{prefix}/api/files/local/{}", enc(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_names_the_file_under_the_prefix_used() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:7342".parse().unwrap());
        let at = Some(("a".to_string(), "pi".to_string()));
        assert_eq!(
            resource(&headers, at, "Benchy #2 50%.gcode"),
            "http://127.0.0.1:7342/a/pi/api/files/local/Benchy%20%232%2050%25.gcode"
        );
        assert_eq!(
            resource(&headers, None, "cube.gcode"),
            "http://127.0.0.1:7342/api/files/local/cube.gcode"
        );
        // Cura finds the file's endpoint after "api/".
        let url = resource(&headers, Some(("g".into(), "farm".into())), "a.gcode");
        assert_eq!(url.split_once("api/").unwrap().1, "files/local/a.gcode");
    }

    #[test]
    fn folders_are_refused_with_what_to_do() {
        assert_eq!(plain_name("", "a.gcode").unwrap(), "a.gcode");
        assert_eq!(plain_name("/", "a.gcode").unwrap(), "a.gcode");
        let e = plain_name("plates/", "a.gcode").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.text.contains("without the folder \"plates\""),
            "{}",
            e.text
        );
    }
}
