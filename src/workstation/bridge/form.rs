//! The upload's body, read strictly and spooled to a temp file as it
//! comes (memory stays bounded whatever the file's size): OctoPrint's
//! multipart form (`file` with its name, `path`, `print`, `select`, Orca's
//! `plateindex`, `userdata`, in any order), or PrusaLink's raw `PUT` body.
//!
//! Strict, because OctoPrint's CVE-2025-48067 came from form fields read
//! where none should be: every part needs a known name, each name comes
//! once, exactly one part is the file (and only it has a filename), small
//! fields stay small, and the body must end as the form says it does.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use futures_util::StreamExt;

use super::sink::Sink;
use crate::workstation::growing::Growth;

/// The form fields the bridge takes; any other is refused. Only `file`
/// is stored; `plateindex` (Orca), `userdata` (OctoPrint's) and `filename`
/// (octoprint-cli sends the local path as a second file part) are read and
/// dropped.
const FIELDS: &[&str] = &[
    "file",
    "path",
    "print",
    "select",
    "plateindex",
    "userdata",
    "filename",
];
/// The dropped fields that may carry a filename.
const IGNORED_FILES: &[&str] = &["filename"];
/// Largest value of a field that is not the file.
const MAX_FIELD_LEN: u64 = 64 * 1024;

/// An upload spooled to a temp file.
#[derive(Debug)]
pub(crate) struct Spooled {
    /// The temp file (removed when dropped).
    pub(crate) file: tempfile::NamedTempFile,
    /// Bytes in it.
    pub(crate) size: u64,
    /// Its SHA-256 (lower-case hex), computed as it was written.
    pub(crate) sha256: String,
}

/// OctoPrint's upload form, read.
#[derive(Debug)]
pub(crate) struct Form {
    /// The file part's content.
    pub(crate) file: Spooled,
    /// The file part's filename.
    pub(crate) name: String,
    /// The `path` field: the folder to store into ("" for none).
    pub(crate) path: String,
    /// `print`: start it after the upload.
    pub(crate) print: bool,
    /// `select`: select it (fileagent has nothing to select; kept for the answer).
    pub(crate) select: bool,
}

/// Why an upload's body was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadForm {
    /// The client's body is wrong (a 400, with this text).
    #[error("{0}")]
    Client(String),
    /// It could not be spooled here (a full disk, say).
    #[error("{0}")]
    Local(String),
}

impl BadForm {
    /// How the client hears it: 400 for its body, 507 for a local failure
    /// (a full disk).
    pub(crate) fn failure(self) -> super::deliver::Failure {
        use axum::http::StatusCode;
        match self {
            BadForm::Client(text) => super::deliver::Failure::new(StatusCode::BAD_REQUEST, text),
            BadForm::Local(text) => {
                super::deliver::Failure::new(StatusCode::INSUFFICIENT_STORAGE, text)
            }
        }
    }
}

/// OctoPrint's truth values for form fields.
fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "true" | "yes" | "y" | "1"
    )
}

/// Reads the multipart form of `content_type` from `body`, spooling the
/// file into `dir`.
pub(crate) async fn read_form(
    content_type: Option<&str>,
    body: Body,
    dir: &Path,
) -> Result<Form, BadForm> {
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            BadForm::Client("the upload must be multipart/form-data with a boundary".into())
        })?;
    let constraints = multer::Constraints::new()
        .allowed_fields(FIELDS.to_vec())
        .size_limit(
            FIELDS
                .iter()
                .filter(|f| **f != "file")
                .fold(multer::SizeLimit::new(), |limit, f| {
                    limit.for_field(*f, MAX_FIELD_LEN)
                }),
        );
    let mut form =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut seen = HashSet::new();
    let (mut file, mut name, mut path, mut print, mut select) = (None, None, None, false, false);
    while let Some(mut field) = form.next_field().await.map_err(explain)? {
        let field_name = field.name().unwrap_or_default().to_string();
        if !seen.insert(field_name.clone()) {
            return Err(BadForm::Client(format!(
                "the form has the field {field_name:?} twice"
            )));
        }
        if field_name == "file" {
            let filename = field
                .file_name()
                .map(str::to_string)
                .ok_or_else(|| BadForm::Client("the form's file part has no filename".into()))?;
            file = Some(spool(&mut field, dir).await?);
            name = Some(filename);
            continue;
        }
        if field.file_name().is_some() && !IGNORED_FILES.contains(&field_name.as_str()) {
            return Err(BadForm::Client(format!(
                "the field {field_name:?} carries a file; only \"file\" may"
            )));
        }
        let value = field.text().await.map_err(explain)?;
        match field_name.as_str() {
            "path" => path = Some(value),
            "print" => print = truthy(&value),
            "select" => select = truthy(&value),
            // Orca's plate, OctoPrint's userdata: taken, not used.
            _ => {}
        }
    }
    let (Some(file), Some(name)) = (file, name) else {
        return Err(BadForm::Client("the form has no \"file\" part".into()));
    };
    Ok(Form {
        file,
        name,
        path: path.unwrap_or_default(),
        print,
        select,
    })
}

/// Spools one field's content into a temp file in `dir`.
async fn spool(field: &mut multer::Field<'_>, dir: &Path) -> Result<Spooled, BadForm> {
    let mut sink = Sink::new(dir, None)?;
    while let Some(chunk) = field.chunk().await.map_err(explain)? {
        sink.write(&chunk).await?;
    }
    sink.finish().await
}

/// Spools a raw body (PrusaLink's `PUT`) into a temp file in `dir`.
pub(crate) async fn read_raw(body: Body, dir: &Path) -> Result<Spooled, BadForm> {
    let sink = Sink::new(dir, None)?;
    fill(sink, body).await
}

/// Spools a raw body into a temp file in `dir` that others read as it
/// grows: `started` gets its path and its [`Growth`] before the first byte
/// is read, and the growth ends as the spooling does (broken off on an
/// error, so that nothing incomplete is sent on).
pub(crate) async fn read_raw_growing(
    body: Body,
    dir: &Path,
    started: impl FnOnce(&Path, Arc<Growth>),
) -> Result<Spooled, BadForm> {
    let growth = Arc::new(Growth::default());
    let mut sink = Sink::new(dir, Some(Arc::clone(&growth)))?;
    started(sink.file.path(), Arc::clone(&growth));
    if let Err(e) = pour(&mut sink, body).await {
        // Said before the temp file goes (with `sink`): a reader opening
        // it from now on hears why, not that it is missing.
        growth.ended(Err(e.to_string()));
        return Err(e);
    }
    let spooled = sink.finish().await;
    growth.ended(spooled.as_ref().map(drop).map_err(BadForm::to_string));
    spooled
}

/// Writes `body` through `sink`.
async fn fill(mut sink: Sink, body: Body) -> Result<Spooled, BadForm> {
    pour(&mut sink, body).await?;
    sink.finish().await
}

/// Writes every piece of `body` into `sink`.
async fn pour(sink: &mut Sink, body: Body) -> Result<(), BadForm> {
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| BadForm::Client(format!("the upload broke off: {e}")))?;
        sink.write(&chunk).await?;
    }
    Ok(())
}

/// A local failure to spool.
pub(super) fn local(dir: &Path) -> impl Fn(std::io::Error) -> BadForm + '_ {
    move |e| BadForm::Local(format!("cannot spool the upload in {}: {e}", dir.display()))
}

/// A multipart failure as the client should hear it.
fn explain(e: multer::Error) -> BadForm {
    BadForm::Client(match e {
        multer::Error::UnknownField { field_name } => format!(
            "the form has a field fileagent does not take: {:?} (it takes {})",
            field_name.unwrap_or_default(),
            FIELDS.join(", ")
        ),
        multer::Error::FieldSizeExceeded { field_name, .. } => format!(
            "the form field {:?} is longer than {MAX_FIELD_LEN} bytes",
            field_name.unwrap_or_default()
        ),
        other => format!("the upload is not a well-formed multipart form: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn part(name: &str, filename: Option<&str>, value: &str) -> String {
        let filename = filename
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{value}\r\n"
        )
    }

    async fn read(body: String) -> Result<Form, BadForm> {
        let dir = std::env::temp_dir();
        read_form(Some(CT), Body::from(body), &dir).await
    }

    #[tokio::test]
    async fn fields_come_in_any_order_and_the_file_is_spooled() {
        // Cura: path, file, then select and print after the file.
        let body = [
            part("path", None, ""),
            part(
                "file",
                Some("cube.gcode"),
                "G28\n--XyZ is not a boundary here\nG1 X1\n",
            ),
            part("select", None, "true"),
            part("print", None, "true"),
        ]
        .concat()
            + "--XyZ--\r\n";
        let form = read(body).await.unwrap();
        assert_eq!(form.name, "cube.gcode");
        assert!(form.print && form.select);
        let content = std::fs::read_to_string(form.file.file.path()).unwrap();
        assert_eq!(content, "G28\n--XyZ is not a boundary here\nG1 X1\n");
        assert_eq!(form.file.size, content.len() as u64);
        let digest =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&content));
        assert_eq!(form.file.sha256, hex::encode(digest));
        // PrusaSlicer: print and path first; Orca adds plateindex.
        let body = [
            part("print", None, "false"),
            part("path", None, ""),
            part("plateindex", None, "1"),
            part("file", Some("plate.gcode"), "G28\n"),
        ]
        .concat()
            + "--XyZ--\r\n";
        let form = read(body).await.unwrap();
        assert!(!form.print && !form.select);
    }

    #[tokio::test]
    async fn smuggled_doubled_unknown_or_broken_forms_are_refused() {
        let file = part("file", Some("a.gcode"), "G28\n");
        let cases = [
            (format!("{file}{}--XyZ--\r\n", part("print", None, "true").repeat(2)), "twice"),
            (format!("{file}{file}--XyZ--\r\n"), "twice"),
            (format!("{file}{}--XyZ--\r\n", part("foldername", None, "x")), "does not take: \"foldername\""),
            (format!("{}--XyZ--\r\n", part("path", None, "")), "no \"file\" part"),
            (format!("{}--XyZ--\r\n", part("file", None, "G28")), "no filename"),
            (format!("{file}{}--XyZ--\r\n", part("path", Some("x.gcode"), "")), "only \"file\" may"),
            (format!("{file}{}--XyZ--\r\n", part("userdata", None, &"x".repeat(70_000))), "longer than"),
            // The body ends inside the file: no closing boundary.
            ("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.gcode\"\r\n\r\nG28".to_string(), "well-formed"),
        ];
        for (body, why) in cases {
            let e = read(body.clone()).await.unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        let e = read_form(
            Some("application/json"),
            Body::from("{}"),
            &std::env::temp_dir(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("multipart/form-data"), "{e}");
    }

    #[test]
    fn truth_is_octoprints() {
        for t in ["true", "True", "yes", "y", "1", " true "] {
            assert!(truthy(t), "{t}");
        }
        for f in ["false", "0", "", "no", "on"] {
            assert!(!truthy(f), "{f}");
        }
    }
}
