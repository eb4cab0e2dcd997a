//! `fileagent send` to several agents at once (`--agent farm`, or `--agent`
//! repeated): one connection and one progress bar per printer, lines
//! prefixed with its name, then one summary ("3 of 3 stored, 2 started,
//! 1 waiting (pi3: the printer is busy)"); the command fails if any
//! printer did not store every file.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressDrawTarget};

use super::output::Lines;
use super::report::{Delivered, Outcome};
use super::send::deliver;
use super::{Sending, print_json};
use crate::cli::args::SendArgs;
use crate::workstation::Fate;

/// What `send --json` reports of one agent.
#[derive(serde::Serialize)]
struct AgentReport<'a> {
    agent: &'a str,
    files: &'a [Outcome],
}

/// Sends `files` to every one of `agents` at once.
pub(super) async fn send(
    args: &SendArgs,
    files: &[(PathBuf, String)],
    agents: &[String],
    sending: &Sending,
) -> Result<()> {
    let interactive = std::io::stderr().is_terminal() && !args.json;
    let multi = match interactive {
        true => MultiProgress::new(),
        false => MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
    };
    let runs = agents.iter().map(|agent| {
        let lines = Lines::labelled(agent, &multi);
        async move { deliver(args, files, Some(agent.clone()), sending, &lines).await }
    });
    let done: Vec<Delivered> = futures_util::future::join_all(runs).await;
    if args.json {
        let reports: Vec<AgentReport> = agents
            .iter()
            .zip(&done)
            .map(|(agent, d)| AgentReport {
                agent,
                files: &d.results,
            })
            .collect();
        print_json(&reports)?;
    } else {
        say!("{}", summary(agents, &done));
    }
    let failed: Vec<(&String, Delivered)> = agents
        .iter()
        .zip(done)
        .filter(|(_, d)| d.first_error.is_some())
        .collect();
    let count = failed.len();
    match failed.into_iter().next() {
        None => Ok(()),
        Some((agent, d)) => {
            let e = d.first_error.expect("a failed agent has its error");
            Err(e.context(format!(
                "{agent}: {} of {} agents did not store every file",
                count,
                agents.len()
            )))
        }
    }
}

/// "3 of 3 stored, 2 started, 1 waiting (pi3: the printer is busy)".
fn summary(agents: &[String], done: &[Delivered]) -> String {
    let total: usize = done.iter().map(|d| d.total).sum();
    let stored: usize = done.iter().map(|d| d.sent).sum();
    let mut text = format!("{stored} of {total} stored");
    let (mut started, mut waiting, mut failed) = (0, Vec::new(), Vec::new());
    for (agent, d) in agents.iter().zip(done) {
        for fate in d.fates() {
            match fate {
                Fate::Started => started += 1,
                Fate::Waiting(why) => waiting.push(format!("{agent}: {why}")),
                Fate::Failed(why) => failed.push(format!("{agent}: {why}")),
            }
        }
    }
    if done.iter().any(|d| d.fates().next().is_some()) {
        text.push_str(&format!(", {started} started"));
        for (list, what) in [(&waiting, "waiting"), (&failed, "not printing")] {
            if !list.is_empty() {
                text.push_str(&format!(", {} {what} ({})", list.len(), list.join("; ")));
            }
        }
    }
    let unstored: Vec<&str> = agents
        .iter()
        .zip(done)
        .filter(|(_, d)| d.sent < d.total)
        .map(|(a, _)| a.as_str())
        .collect();
    if !unstored.is_empty() {
        text.push_str(&format!("; not stored on {}", unstored.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workstation::Sent;

    fn delivered(total: usize, fates: &[Option<Fate>], error: bool) -> Delivered {
        let results = fates
            .iter()
            .map(|fate| Outcome::Sent {
                sent: Sent {
                    name: "cube.gcode".into(),
                    size: 1,
                    sha256: String::new(),
                    unchanged: false,
                    replaced: false,
                    seconds: 0.0,
                    wire_bytes: 1,
                    encoding: None,
                    resumed_from: 0,
                },
                print: fate.clone(),
            })
            .collect();
        Delivered {
            results,
            sent: fates.len(),
            first_error: error.then(|| anyhow::anyhow!("unreachable")),
            total,
            followed: None,
        }
    }

    #[test]
    fn the_summary_counts_what_each_printer_did() {
        let agents: Vec<String> = ["pi1", "pi2", "pi3"].map(String::from).to_vec();
        let done = [
            delivered(1, &[Some(Fate::Started)], false),
            delivered(1, &[Some(Fate::Started)], false),
            delivered(
                1,
                &[Some(Fate::Waiting("the printer is busy".into()))],
                false,
            ),
        ];
        assert_eq!(
            summary(&agents, &done),
            "3 of 3 stored, 2 started, 1 waiting (pi3: the printer is busy)"
        );
        let done = [
            delivered(1, &[None], false),
            delivered(1, &[None], false),
            delivered(1, &[], true),
        ];
        assert_eq!(summary(&agents, &done), "2 of 3 stored; not stored on pi3");
    }
}
