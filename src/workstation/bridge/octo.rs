//! What the bridge answers in OctoPrint's own JSON shapes (its API before
//! 2.0, as PrusaSlicer, OrcaSlicer, Cura's plugin and the client libraries
//! read it): the version, the settings Cura checks, the printer and the
//! job from a fileagent `watch` report, and the answer to an upload.

use serde_json::{Value, json};

use crate::wire::protocol::{PrinterReport, Watched};

/// The OctoPrint version the bridge speaks as.
pub(crate) const OCTOPRINT_VERSION: &str = "1.11.0";

/// Every flag OctoPrint's `/api/printer` carries (Cura reads each one).
const FLAGS: &[&str] = &[
    "cancelling",
    "closedOrError",
    "error",
    "finishing",
    "operational",
    "paused",
    "pausing",
    "printing",
    "ready",
    "resuming",
    "sdReady",
];

/// `GET /api/version`: `text` starts with "OctoPrint" (PrusaSlicer checks),
/// and PrusaSlicer's PrusaLink type learns it may upload by `PUT`.
pub(crate) fn version() -> Value {
    json!({
        "api": "0.1",
        "server": OCTOPRINT_VERSION,
        "text": format!("OctoPrint {OCTOPRINT_VERSION} (fileagent {})", env!("CARGO_PKG_VERSION")),
        "capabilities": {"upload-by-put": true},
    })
}

/// `GET /api/settings`: what Cura's plugin reads: no SD card, no
/// UltimakerFormatPackage plugin, no webcam, no G-code analysis to wait for.
pub(crate) fn settings() -> Value {
    json!({
        "api": {"allowCrossOrigin": false},
        "feature": {"sdSupport": false},
        "plugins": {},
        "webcam": {"webcamEnabled": false, "streamUrl": ""},
        "gcodeAnalysis": {"runAt": "never"},
    })
}

/// The printer's flags with every key OctoPrint has (absent ones false).
fn flags(report: &PrinterReport) -> Value {
    let mut flags = serde_json::Map::new();
    for flag in FLAGS {
        let on = report.flags.get(*flag).copied().unwrap_or(false);
        flags.insert((*flag).to_string(), Value::Bool(on));
    }
    Value::Object(flags)
}

/// The heaters as OctoPrint shows them: `{"tool0": {"actual", "target",
/// "offset"}, "bed": ...}`.
fn temperatures(report: &PrinterReport) -> Value {
    let heaters = report.temperatures.iter().map(|(name, t)| {
        let heater = json!({"actual": t.actual, "target": t.target, "offset": 0});
        (name.clone(), heater)
    });
    Value::Object(heaters.collect())
}

/// `GET /api/printer`, or `None` when the printer is not connected (OctoPrint
/// answers 409 "Printer is not operational" then).
pub(crate) fn printer(watched: &Watched) -> Option<Value> {
    let report = &watched.printer;
    report.connected.then(|| {
        json!({
            "state": {"text": report.text, "flags": flags(report)},
            "temperature": temperatures(report),
            "sd": {"ready": false},
        })
    })
}

/// `GET /api/job`: the job's file, its progress and times.
pub(crate) fn job(watched: &Watched) -> Value {
    let report = &watched.printer;
    let file = report.job.as_deref().map(|path| {
        let name = path.rsplit('/').next().unwrap_or(path);
        json!({"name": name, "display": name, "path": path, "origin": "local"})
    });
    json!({
        "job": {
            "file": file.unwrap_or_else(|| json!({"name": null, "path": null, "origin": null})),
            "estimatedPrintTime": null,
            "filament": null,
        },
        "progress": {
            "completion": report.completion,
            "filepos": null,
            "printTime": report.print_time,
            "printTimeLeft": report.print_time_left,
            "printTimeLeftOrigin": report.print_time_left.map(|_| "estimate"),
        },
        "state": report.text,
    })
}

/// `GET /api/files`: the agent's files (`list`), each at `resource(name)`,
/// with fileagent's state and note beside OctoPrint's keys, and the
/// agent's free space.
pub(crate) fn files(
    entries: &[crate::wire::protocol::FileEntry],
    free: u64,
    resource: impl Fn(&str) -> String,
) -> Value {
    let files: Vec<Value> = entries
        .iter()
        .map(|f| {
            let url = resource(&f.name);
            json!({
                "name": f.name, "display": f.name, "path": f.name, "origin": "local",
                "type": "machinecode", "typePath": ["machinecode", "gcode"],
                "size": f.size, "date": f.modified,
                "refs": {"resource": url, "download": url},
                "fileagent": {"state": f.state, "note": f.reason},
            })
        })
        .collect();
    json!({"files": files, "free": free})
}

/// The answer to an upload: where the file is (`refs.resource`, also the
/// `Location` header, which Cura splits on "api/"), and whether it prints.
pub(crate) fn uploaded(name: &str, resource: &str, print: bool, select: bool) -> Value {
    json!({
        "done": true,
        "effectivePrint": print,
        "effectiveSelect": select || print,
        "files": {"local": {
            "name": name,
            "display": name,
            "path": name,
            "origin": "local",
            "refs": {"resource": resource, "download": resource},
        }},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_passes_prusaslicers_check_and_offers_put() {
        let v = version();
        assert!(v["text"].as_str().unwrap().starts_with("OctoPrint "));
        assert_eq!(v["api"], "0.1");
        assert_eq!(v["capabilities"]["upload-by-put"], true);
        let s = settings();
        assert_eq!(s["feature"]["sdSupport"], false);
        assert!(s["plugins"].get("UltimakerFormatPackage").is_none());
    }

    #[test]
    fn printer_and_job_carry_every_key_a_client_reads() {
        let mut watched = Watched::default();
        assert!(
            printer(&watched).is_none(),
            "not connected: OctoPrint's 409"
        );
        watched.printer.connected = true;
        watched.printer.text = "Printing".into();
        watched.printer.flags.insert("printing".into(), true);
        watched.printer.job = Some("plates/cube.gcode".into());
        watched.printer.completion = Some(12.5);
        watched.printer.print_time = Some(60);
        watched.printer.print_time_left = Some(420);
        let p = printer(&watched).unwrap();
        for flag in FLAGS {
            assert!(p["state"]["flags"][flag].is_boolean(), "{flag}");
        }
        assert_eq!(p["state"]["flags"]["printing"], true);
        assert_eq!(p["state"]["flags"]["error"], false);
        let j = job(&watched);
        assert_eq!(j["job"]["file"]["name"], "cube.gcode");
        assert_eq!(j["job"]["file"]["path"], "plates/cube.gcode");
        assert_eq!(j["progress"]["completion"], 12.5);
        assert_eq!(j["progress"]["printTimeLeft"], 420);
        assert_eq!(j["state"], "Printing");
        let idle = job(&Watched::default());
        assert!(idle["job"]["file"]["name"].is_null());
    }
}
