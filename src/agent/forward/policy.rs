//! When a file may start by itself, and why one waits: the bed rule and the
//! order rule, as pure functions of the queue and the printer's state
//! (tested below; the forwarder does the I/O).
//!
//! - **The bed rule.** A printer whose print has just ended still holds
//!   that print on its bed. From the moment the agent sees a print end (or
//!   finds a finished job when it first looks), the bed counts as
//!   occupied, and without `queue = true` nothing starts by itself until a
//!   person has acted: `fileagent print` from a workstation, or a file
//!   selected in OctoPrint. The agent has no other way to learn that the
//!   bed is clear.
//! - **The order rule.** A file never starts by itself while an older file
//!   waits (to be uploaded, started or printed): files start in order of
//!   arrival, or by a person's choice.

use serde::{Deserialize, Serialize};

use super::printer::PrinterState;
use super::queue::{Entry, FileState};
use crate::agent::config::AutoPrint;

/// Completion (percent) at which a job that ended counts as printed;
/// OctoPrint reports 100.0, a little slack covers rounding.
pub(super) const PRINTED_AT_PERCENT: f64 = 99.9;

/// What the agent knows of the printer's bed; saved with the queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bed {
    /// A print ended and no person has acted since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied: Option<Occupied>,
}

/// The print that ended on the bed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Occupied {
    /// When the agent saw it end (Unix seconds).
    pub since: u64,
    /// Its file in OctoPrint, if it was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl Occupied {
    /// "the last print (cube.gcode) ended 3 min ago", as at `now`.
    pub(crate) fn describe(&self, now: u64) -> String {
        let job = (self.job.as_deref())
            .map(|j| format!(" ({j})"))
            .unwrap_or_default();
        let ago = ago(now.saturating_sub(self.since));
        format!("the last print{job} ended {ago}")
    }
}

/// How the bed changed at one look at the printer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum BedChange {
    /// A running print ended (finished, cancelled or lost).
    PrintEnded,
    /// At the first look, OctoPrint showed a finished job.
    FoundFinished,
    /// A person selected another file in OctoPrint.
    Selected(String),
}

impl Bed {
    /// Follows the bed through one look at the printer; `was_busy` is what
    /// the previous look saw (`None`: this is the first since the agent
    /// started forwarding).
    pub(super) fn watch(
        &mut self,
        was_busy: Option<bool>,
        state: &PrinterState,
        now: u64,
    ) -> Option<BedChange> {
        if state.busy {
            return None;
        }
        let ended = |job: Option<String>| Occupied { since: now, job };
        match (was_busy, &self.occupied) {
            (Some(true), _) => {
                self.occupied = Some(ended(state.job_path.clone()));
                Some(BedChange::PrintEnded)
            }
            (None, None)
                if state.job_path.is_some()
                    && state.completion.unwrap_or(0.0) >= PRINTED_AT_PERCENT =>
            {
                self.occupied = Some(ended(state.job_path.clone()));
                Some(BedChange::FoundFinished)
            }
            (_, Some(occupied)) if state.job_path.is_some() && state.job_path != occupied.job => {
                let selected = state.job_path.clone().unwrap_or_default();
                self.occupied = None;
                Some(BedChange::Selected(selected))
            }
            _ => None,
        }
    }

    /// A person started a print: whatever was on the bed, they dealt with it.
    pub(super) fn cleared_by_person(&mut self) {
        self.occupied = None;
    }
}

/// Whether an entry still waits its turn: to be uploaded, started or
/// printed. An uploaded file that never starts by itself (sent "upload
/// only", or `auto_print = never`) waits for nothing in line: a person
/// starts it, or nobody.
fn waits(entry: &Entry, policy: Policy) -> bool {
    match entry.state {
        FileState::Received | FileState::Uploading | FileState::Printing => true,
        FileState::Uploaded => policy.for_file(entry.print) != AutoPrint::Never,
        _ => false,
    }
}

/// The oldest entry before `id` (in order of arrival) that still waits.
fn older_waiting(entries: &[Entry], id: u64, policy: Policy) -> Option<&Entry> {
    (entries.iter())
        .take_while(|e| e.id != id)
        .find(|e| waits(e, policy))
}

/// The print settings the rules read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// `auto_print` (of `[octoprint]` or `[moonraker]`).
    pub auto_print: AutoPrint,
    /// `queue`: the printer clears its own bed.
    pub queue: bool,
    /// `remote_start`: a sender's wish to print counts.
    pub remote_start: bool,
}

impl Policy {
    /// The print server's table's settings.
    pub(crate) fn of(settings: &crate::agent::config::PrinterConfig) -> Policy {
        Policy {
            auto_print: settings.auto_print,
            queue: settings.queue,
            remote_start: settings.remote_start,
        }
    }

    /// When a file sent with the print choice `print` starts: "upload
    /// only" never by itself, "upload and print" as `when-idle` does (or
    /// `always`) where `remote_start` lets senders ask, else as
    /// `auto_print` says.
    pub(crate) fn for_file(self, print: Option<bool>) -> AutoPrint {
        match print {
            Some(false) => AutoPrint::Never,
            Some(true) if self.remote_start && self.auto_print != AutoPrint::Always => {
                AutoPrint::WhenIdle
            }
            _ => self.auto_print,
        }
    }
}

/// Whether entry `id` may start by itself when it is uploaded now.
pub(super) fn starts_by_itself(
    entries: &[Entry],
    id: u64,
    policy: Policy,
    bed: &Bed,
    printer: &PrinterState,
) -> bool {
    let Some(entry) = entries.iter().find(|e| e.id == id) else {
        return false;
    };
    let printer_ready = printer.operational && !printer.busy;
    !entry.held
        && older_waiting(entries, id, policy).is_none()
        && (policy.queue || bed.occupied.is_none())
        && match policy.for_file(entry.print) {
            AutoPrint::Never => false,
            AutoPrint::Always => true,
            AutoPrint::WhenIdle => printer_ready,
        }
}

/// "3 min ago", "2 h ago" for a time `secs` seconds back.
pub(super) fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s ago"),
        60..7200 => format!("{} min ago", secs / 60),
        7200..172_800 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// Why entry `index` waits, as `list` shows it at `now`; `None` when it
/// does not wait or its recorded reason says it best.
pub(super) fn why_waiting(
    entries: &[Entry],
    index: usize,
    policy: Policy,
    bed: &Bed,
    printer_busy: bool,
    now: u64,
) -> Option<String> {
    let entry = &entries[index];
    let older = older_waiting(entries, entry.id, policy);
    match entry.state {
        FileState::Received if entry.reason.is_none() => {
            let before = entries[..index]
                .iter()
                .rev()
                .find(|e| matches!(e.state, FileState::Received | FileState::Uploading));
            Some(match before {
                Some(o) => format!("waiting to be uploaded after {}", o.name),
                None => "waiting to be uploaded".to_string(),
            })
        }
        FileState::Uploaded
            if !entry.queued && policy.for_file(entry.print) != AutoPrint::Never =>
        {
            let start = format!(
                "start it with `fileagent print {}`",
                shell_word(&entry.name)
            );
            // Held: it never starts by itself, whatever the rest.
            let why = if entry.held {
                let cause = match entry.backlog {
                    true => "it arrived while forwarding was off",
                    false => "it came while the print before it ran",
                };
                format!("{cause}, so it does not start by itself")
            } else if let Some(o) = older {
                match o.state {
                    FileState::Printing => format!("{} is printing before it", o.name),
                    _ => format!("{} came before it and waits too", o.name),
                }
            } else if printer_busy {
                "the printer is busy".to_string()
            } else if let Some(occupied) = &bed.occupied {
                let ended = occupied.describe(now);
                format!("{ended}, and its part may still be on the bed")
            } else {
                return entry.reason.as_ref().map(|r| format!("{r}; {start}"));
            };
            Some(format!(
                "waiting for a person: {why}; {start} once the bed is clear"
            ))
        }
        _ => None,
    }
}

/// `name` as one shell word: as it is when it is plain, else in single
/// quotes, so the command a hint shows can be pasted as it is.
fn shell_word(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | ',' | '@'));
    match plain {
        true => name.to_string(),
        false => format!("'{}'", name.replace('\'', r"'\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::forward::printer::printer_for_test as printer;

    fn entry(id: u64, name: &str, state: FileState) -> Entry {
        Entry::for_test(id, name, state)
    }

    const WHEN_IDLE: Policy = Policy {
        auto_print: AutoPrint::WhenIdle,
        queue: false,
        remote_start: true,
    };

    #[test]
    fn a_print_that_ends_occupies_the_bed_until_a_person_acts() {
        let mut bed = Bed::default();
        let running = printer(true, Some("a.gcode"), Some(50.0));
        assert_eq!(bed.watch(Some(false), &running, 10), None);
        assert_eq!(bed.watch(Some(true), &running, 11), None);
        // It ends: the bed holds it, whatever the completion.
        let ended = printer(false, Some("a.gcode"), Some(100.0));
        assert_eq!(
            bed.watch(Some(true), &ended, 12),
            Some(BedChange::PrintEnded)
        );
        let occupied = Occupied {
            since: 12,
            job: Some("a.gcode".into()),
        };
        assert_eq!(bed.occupied, Some(occupied.clone()));
        // Later looks change nothing, nor does a restart of the agent.
        assert_eq!(bed.watch(Some(false), &ended, 20), None);
        assert_eq!(bed.watch(None, &ended, 30), None);
        assert_eq!(bed.occupied, Some(occupied));
        // A person selects another file in OctoPrint: clear.
        let selected = printer(false, Some("b.gcode"), Some(0.0));
        assert_eq!(
            bed.watch(Some(false), &selected, 40),
            Some(BedChange::Selected("b.gcode".into()))
        );
        assert_eq!(bed.occupied, None);
        // A cancelled print occupies it too.
        let cancelled = printer(false, Some("b.gcode"), Some(0.0));
        assert_eq!(
            bed.watch(Some(true), &cancelled, 50),
            Some(BedChange::PrintEnded)
        );
        bed.cleared_by_person();
        assert_eq!(bed.occupied, None);
    }

    #[test]
    fn a_finished_job_found_at_the_first_look_occupies_the_bed() {
        let mut bed = Bed::default();
        let finished = printer(false, Some("a.gcode"), Some(100.0));
        assert_eq!(
            bed.watch(None, &finished, 5),
            Some(BedChange::FoundFinished)
        );
        // Nothing printed, nothing selected: a clear bed.
        for idle in [
            printer(false, None, None),
            printer(false, Some("a.gcode"), Some(0.0)),
        ] {
            let mut bed = Bed::default();
            assert_eq!(bed.watch(None, &idle, 5), None);
            assert_eq!(bed.occupied, None);
        }
    }

    #[test]
    fn files_start_by_themselves_only_on_a_clear_bed_and_in_order() {
        let idle = printer(false, None, None);
        let clear = Bed::default();
        let occupied = Bed {
            occupied: Some(Occupied {
                since: 0,
                job: None,
            }),
        };
        let one = [entry(1, "a.gcode", FileState::Received)];
        assert!(starts_by_itself(&one, 1, WHEN_IDLE, &clear, &idle));
        assert!(!starts_by_itself(&one, 1, WHEN_IDLE, &occupied, &idle));
        // A printer that clears its own bed does not wait for a person.
        let queue = Policy {
            queue: true,
            ..WHEN_IDLE
        };
        assert!(starts_by_itself(&one, 1, queue, &occupied, &idle));
        // Busy, or never: no.
        let busy = printer(true, Some("x.gcode"), Some(1.0));
        assert!(!starts_by_itself(&one, 1, WHEN_IDLE, &clear, &busy));
        let never = Policy {
            auto_print: AutoPrint::Never,
            ..WHEN_IDLE
        };
        assert!(!starts_by_itself(&one, 1, never, &clear, &idle));
        // An older file waiting (uploaded, held, printing) keeps the order.
        for older in [
            FileState::Uploaded,
            FileState::Received,
            FileState::Uploading,
            FileState::Printing,
        ] {
            let two = [
                entry(1, "a.gcode", older),
                entry(2, "b.gcode", FileState::Received),
            ];
            assert!(
                !starts_by_itself(&two, 2, WHEN_IDLE, &clear, &idle),
                "{older:?}"
            );
        }
        // Done with: no longer in the way.
        for done in [FileState::Printed, FileState::Failed, FileState::Skipped] {
            let two = [
                entry(1, "a.gcode", done),
                entry(2, "b.gcode", FileState::Received),
            ];
            assert!(
                starts_by_itself(&two, 2, WHEN_IDLE, &clear, &idle),
                "{done:?}"
            );
        }
        // A held file never starts by itself.
        let mut held = entry(1, "a.gcode", FileState::Received);
        held.held = true;
        assert!(!starts_by_itself(&[held], 1, WHEN_IDLE, &clear, &idle));
    }

    #[test]
    fn the_senders_choice_counts_within_the_agents_rules() {
        let idle = printer(false, None, None);
        let clear = Bed::default();
        let with = |print| {
            let mut e = entry(1, "a.gcode", FileState::Received);
            e.print = print;
            [e]
        };
        let never = Policy {
            auto_print: AutoPrint::Never,
            ..WHEN_IDLE
        };
        // "Upload and print" on an agent that would not start it by itself.
        assert!(starts_by_itself(&with(Some(true)), 1, never, &clear, &idle));
        // ...but not on a busy printer, a bed that may hold the last part,
        // or an agent that takes no remote starts.
        let busy = printer(true, Some("x.gcode"), Some(1.0));
        assert!(!starts_by_itself(
            &with(Some(true)),
            1,
            never,
            &clear,
            &busy
        ));
        let occupied = Bed {
            occupied: Some(Occupied {
                since: 0,
                job: None,
            }),
        };
        assert!(!starts_by_itself(
            &with(Some(true)),
            1,
            never,
            &occupied,
            &idle
        ));
        let closed = Policy {
            remote_start: false,
            ..never
        };
        assert!(!starts_by_itself(
            &with(Some(true)),
            1,
            closed,
            &clear,
            &idle
        ));
        // "Upload only" never starts by itself, whatever the agent says.
        for auto_print in [AutoPrint::WhenIdle, AutoPrint::Always] {
            let policy = Policy {
                auto_print,
                ..WHEN_IDLE
            };
            assert!(!starts_by_itself(
                &with(Some(false)),
                1,
                policy,
                &clear,
                &idle
            ));
        }
        // An older file uploaded "only" is not in line: it does not hold
        // back a later one that is to print.
        let mut only = entry(1, "a.gcode", FileState::Uploaded);
        only.print = Some(false);
        let mut next = entry(2, "b.gcode", FileState::Received);
        next.print = Some(true);
        assert!(starts_by_itself(
            &[only.clone(), next.clone()],
            2,
            never,
            &clear,
            &idle
        ));
        only.print = None;
        assert!(starts_by_itself(
            &[only.clone(), next.clone()],
            2,
            never,
            &clear,
            &idle
        ));
        // One that waits to start by itself does.
        assert!(!starts_by_itself(
            &[only, next],
            2,
            WHEN_IDLE,
            &clear,
            &idle
        ));
        assert_eq!(WHEN_IDLE.for_file(None), AutoPrint::WhenIdle);
        assert_eq!(never.for_file(None), AutoPrint::Never);
        assert_eq!(closed.for_file(Some(true)), AutoPrint::Never);
    }

    #[test]
    fn every_waiting_file_says_why() {
        let occupied = Bed {
            occupied: Some(Occupied {
                since: 1000,
                job: Some("a.gcode".into()),
            }),
        };
        let entries = [
            entry(1, "b.gcode", FileState::Uploaded),
            entry(2, "c.gcode", FileState::Uploaded),
            entry(3, "d.gcode", FileState::Received),
            entry(4, "e.gcode", FileState::Received),
        ];
        let why = |i, bed: &Bed, busy| why_waiting(&entries, i, WHEN_IDLE, bed, busy, 1180);
        assert_eq!(
            why(0, &occupied, false).unwrap(),
            "waiting for a person: the last print (a.gcode) ended 3 min ago, and its part may \
             still be on the bed; start it with `fileagent print b.gcode` once the bed is clear"
        );
        assert!(
            why(0, &occupied, true)
                .unwrap()
                .contains("the printer is busy")
        );
        assert!(
            why(1, &occupied, false)
                .unwrap()
                .contains("b.gcode came before it")
        );
        assert_eq!(why(2, &occupied, false).unwrap(), "waiting to be uploaded");
        assert_eq!(
            why(3, &occupied, false).unwrap(),
            "waiting to be uploaded after d.gcode"
        );
        // An older file that prints is not said to wait (seen in a trial).
        let mut printing = entries.clone();
        printing[0].state = FileState::Printing;
        let why = why_waiting(&printing, 1, WHEN_IDLE, &occupied, true, 1180).unwrap();
        assert!(
            why.contains(": b.gcode is printing before it; start it"),
            "{why}"
        );
        // A held file says why once, whatever the bed and the order.
        let mut held = entries.clone();
        held[1].held = true;
        let why = why_waiting(&held, 1, WHEN_IDLE, &occupied, false, 1180).unwrap();
        assert_eq!(
            why,
            "waiting for a person: it came while the print before it ran, so it does not start \
             by itself; start it with `fileagent print c.gcode` once the bed is clear"
        );
        held[1].backlog = true;
        let why = why_waiting(&held, 1, WHEN_IDLE, &occupied, false, 1180).unwrap();
        assert!(
            why.contains(": it arrived while forwarding was off, so"),
            "{why}"
        );
        assert_eq!(ago(59), "59 s ago");
        assert_eq!(ago(3 * 3600), "3 h ago");
    }

    #[test]
    fn a_hint_names_the_file_as_one_shell_word() {
        assert_eq!(shell_word("cube-20mm_v2.gcode"), "cube-20mm_v2.gcode");
        assert_eq!(
            shell_word("Benchy v2 (0.2mm) #1 50%.gcode"),
            "'Benchy v2 (0.2mm) #1 50%.gcode'"
        );
        assert_eq!(shell_word("it's.gcode"), r"'it'\''s.gcode'");
    }
}
