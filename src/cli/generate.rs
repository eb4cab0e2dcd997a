//! Documentation generated from the command-line definition: the man
//! pages (`fileagent generate man DIR`, installed by the Debian package) and
//! shell completion scripts (`fileagent generate completion SHELL`).

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::args::{Cli, Generate};

/// `fileagent generate`: man pages (dated by `SOURCE_DATE_EPOCH` when set,
/// for reproducible packages) or a completion script on stdout.
pub fn run(what: Generate) -> Result<()> {
    let command = Cli::command();
    match what {
        Generate::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            write_man_pages(command, &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            say!("man pages written to {}", dir.display());
        }
        Generate::Completion { shell } => {
            clap_complete::generate(shell, &mut { command }, "fileagent", &mut std::io::stdout());
        }
    }
    Ok(())
}

/// One page for `command` and one per (nested) subcommand, named like
/// `fileagent-client-issue.1`.
fn write_man_pages(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    let date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|secs| secs.parse::<i64>().ok())
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(time::OffsetDateTime::now_utc)
        .date();
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut pending = vec![command];
    while let Some(command) = pending.pop() {
        pending.extend(
            command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .cloned(),
        );
        let man = clap_mangen::Man::new(command)
            .date(date.to_string())
            .manual("fileagent manual")
            .source(format!("fileagent {}", env!("CARGO_PKG_VERSION")));
        man.generate_to(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        write_man_pages(Cli::command(), dir.path()).unwrap();
        for page in [
            "fileagent.1",
            "fileagent-serve.1",
            "fileagent-send.1",
            "fileagent-client-issue.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(text.starts_with(".ie"), "{page} is not roff");
            assert!(text.contains(".SH NAME"), "{page} has no NAME section");
        }
        let top = std::fs::read_to_string(dir.path().join("fileagent.1")).unwrap();
        assert!(
            top.contains("Exit codes"),
            "the exit codes are in the man page"
        );
    }
}
