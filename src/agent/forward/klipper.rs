//! Klipper's state, as Moonraker reports its objects (`webhooks`,
//! `print_stats`, `virtual_sdcard`, the heaters), read in the terms the
//! forwarder and its print policy use ([`PrinterState`]): klippy not ready
//! means not operational; `printing` and `paused` are busy; a `complete`
//! job keeps its file and reads 100 % (the bed rule sees a finished print);
//! the time left is estimated from the progress (Klipper gives none).

use serde::Deserialize;

use super::printer::PrinterState;
use crate::wire::protocol::Temperature;

/// The objects a state query asks for, as Moonraker answers them (an
/// object the printer does not have, such as a heater, reads empty).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Objects {
    pub(super) webhooks: Webhooks,
    pub(super) print_stats: PrintStats,
    pub(super) virtual_sdcard: VirtualSdcard,
    pub(super) extruder: Heater,
    pub(super) heater_bed: Heater,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Webhooks {
    pub(super) state: String,
    pub(super) state_message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PrintStats {
    pub(super) state: String,
    pub(super) filename: String,
    pub(super) total_duration: f64,
    pub(super) print_duration: f64,
    pub(super) message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct VirtualSdcard {
    pub(super) progress: f64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Heater {
    pub(super) temperature: Option<f64>,
    pub(super) target: Option<f64>,
}

/// The printer state Klipper's objects describe.
pub(super) fn state_of(objects: &Objects) -> PrinterState {
    let webhooks = &objects.webhooks;
    if webhooks.state != "ready" {
        let why = match webhooks.state_message.trim() {
            "" => String::new(),
            message => format!(": {}", first_line(message)),
        };
        return not_operational(format!("Klipper {}{why}", or_unknown(&webhooks.state)));
    }
    let stats = &objects.print_stats;
    let job = stats.state.as_str();
    let busy = matches!(job, "printing" | "paused");
    let filename = Some(stats.filename.clone()).filter(|f| !f.is_empty());
    let text = match job {
        "standby" => "Ready".to_string(),
        "error" if !stats.message.is_empty() => format!("Error: {}", first_line(&stats.message)),
        other => capitalised(or_unknown(other)),
    };
    let completion = (objects.virtual_sdcard.progress * 100.0).clamp(0.0, 100.0);
    let completion = match job {
        // Klipper's print_stats say "complete" once the file ran to its end.
        "complete" => 100.0,
        _ => completion,
    };
    let elapsed = stats.total_duration.max(stats.print_duration);
    let flags = [
        ("operational", true),
        ("printing", job == "printing"),
        ("paused", job == "paused"),
        ("ready", !busy),
        ("error", job == "error"),
    ];
    PrinterState {
        text,
        operational: true,
        busy,
        completion: filename.as_ref().map(|_| completion),
        job_path: filename,
        flags: flags.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        print_time: (busy || elapsed > 0.0).then_some(elapsed as u64),
        print_time_left: time_left(elapsed, completion).filter(|_| busy),
        temperatures: temperatures(objects),
    }
}

/// A printer that cannot take a job, and why.
pub(super) fn not_operational(text: String) -> PrinterState {
    PrinterState {
        text,
        operational: false,
        busy: false,
        job_path: None,
        completion: None,
        flags: Default::default(),
        print_time: None,
        print_time_left: None,
        temperatures: Default::default(),
    }
}

/// Seconds left, from the time spent and the share done (Klipper gives no
/// estimate of its own; this is the file-position estimate Mainsail shows
/// as "file").
fn time_left(elapsed: f64, completion: f64) -> Option<u64> {
    (completion > 1.0 && completion < 100.0)
        .then(|| (elapsed * (100.0 - completion) / completion) as u64)
}

/// The heaters, by OctoPrint's names (`tool0`, `bed`) as the rest of
/// fileagent shows them; absent objects (no such heater) are left out.
fn temperatures(objects: &Objects) -> std::collections::BTreeMap<String, Temperature> {
    [("tool0", &objects.extruder), ("bed", &objects.heater_bed)]
        .into_iter()
        .filter(|(_, h)| h.temperature.is_some() || h.target.is_some())
        .map(|(name, h)| {
            let t = Temperature {
                actual: h.temperature,
                target: h.target,
            };
            (name.to_string(), t)
        })
        .collect()
}

fn or_unknown(state: &str) -> &str {
    if state.is_empty() { "unknown" } else { state }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(webhooks: &str, job: &str, file: &str, progress: f64) -> Objects {
        Objects {
            webhooks: Webhooks {
                state: webhooks.into(),
                state_message: "Printer is ready".into(),
            },
            print_stats: PrintStats {
                state: job.into(),
                filename: file.into(),
                total_duration: 30.0,
                ..Default::default()
            },
            virtual_sdcard: VirtualSdcard { progress },
            ..Default::default()
        }
    }

    #[test]
    fn klipper_states_read_as_the_policy_expects() {
        let idle = state_of(&objects("ready", "standby", "", 0.0));
        assert!(idle.operational && !idle.busy);
        assert_eq!(
            (idle.text.as_str(), idle.job_path, idle.completion),
            ("Ready", None, None)
        );

        let printing = state_of(&objects("ready", "printing", "fileagent/a.gcode", 0.25));
        assert!(printing.busy);
        assert_eq!(printing.job_path.as_deref(), Some("fileagent/a.gcode"));
        assert_eq!(printing.completion, Some(25.0));
        assert_eq!(printing.print_time_left, Some(90));
        assert!(printing.flags["printing"] && !printing.flags["ready"]);

        // A finished job keeps its file: the bed rule sees a finished print.
        let done = state_of(&objects("ready", "complete", "a.gcode", 0.0));
        assert!(!done.busy);
        assert_eq!(
            (done.completion, done.text.as_str()),
            (Some(100.0), "Complete")
        );

        let paused = state_of(&objects("ready", "paused", "a.gcode", 0.5));
        assert!(paused.busy && paused.flags["paused"]);

        let down = state_of(&objects("shutdown", "printing", "a.gcode", 0.5));
        assert!(!down.operational && !down.busy);
        assert_eq!(down.text, "Klipper shutdown: Printer is ready");
    }
}
