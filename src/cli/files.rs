//! The commands on an agent's files and state: `print`, `list`, `get`,
//! `delete`, `status` and `ping`, each one operation on one connection,
//! printed for people or (`--json`) for scripts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bytesize::ByteSize;

use super::identities::connect;
use super::output::{Bar, plural, print_json, print_table};
use crate::cli::args::{
    DeleteArgs, GetArgs, ListArgs, PrintArgs, StatusArgs, TargetArgs, UsageError,
};

/// `fileagent print NAME` or `--next`: a person says the bed is clear.
pub(super) async fn print(args: PrintArgs) -> Result<()> {
    let mut client = connect(&args.target).await?;
    let name = args.name.as_deref().filter(|_| !args.next);
    let started = client.print(name).await?;
    client.close().await;
    say!("printing {started}");
    Ok(())
}

/// `fileagent list`: the table, or JSON.
pub(super) async fn list(args: ListArgs) -> Result<()> {
    let mut client = connect(&args.target).await?;
    let files = client.list().await?;
    client.close().await;
    if args.json {
        print_json(&files)
    } else {
        Ok(print_table(&files)?)
    }
}

/// `fileagent delete NAME`: the agent's copy (the print server keeps its own).
pub(super) async fn delete(args: DeleteArgs) -> Result<()> {
    let mut client = connect(&args.target).await?;
    let forwarded = client.delete(&args.name).await?;
    client.close().await;
    if forwarded {
        say!(
            "deleted {} from the agent (it was forwarded: the print server keeps its copy)",
            args.name
        );
    } else {
        say!("deleted {}", args.name);
    }
    Ok(())
}

/// `fileagent status`: the agent, its spool, the printer and the bed.
pub(super) async fn status(args: StatusArgs, sending: &super::Sending) -> Result<()> {
    let mut client = connect(&args.target).await?;
    if args.watch {
        return super::follow::follow(client, None, sending).await;
    }
    let status = client.status().await?;
    let addr = client.addr().to_string();
    let suite = client.cipher_suite();
    client.close().await;
    if args.json {
        let mut json = serde_json::to_value(&status)?;
        json["tls_cipher_suite"] = suite.into();
        return print_json(&json);
    }
    say!("agent       {addr} (fileagent {})", status.version);
    say!(
        "uptime      {}",
        humantime::format_duration(Duration::from_secs(status.uptime_secs))
    );
    say!(
        "ready       {}, {}",
        plural(status.ready, "file"),
        ByteSize(status.ready_bytes).display().iec()
    );
    say!("receiving   {}", status.incoming);
    say!(
        "free space  {}",
        ByteSize(status.free_bytes).display().iec()
    );
    say!(
        "max file    {}",
        ByteSize(status.max_file_size).display().iec()
    );
    say!("printer     {}", status.printer);
    say!("queued      {}", status.queued);
    if let Some(bed) = &status.bed {
        say!("bed         {bed}");
    }
    say!("you are     {}", status.client);
    say!(
        "tls         {suite} (this host {})",
        crate::wire::tls::Preference::detect().describe()
    );
    Ok(())
}

/// `fileagent ping`: the round trip of one request.
pub(super) async fn ping(target: TargetArgs) -> Result<()> {
    let mut client = connect(&target).await?;
    let rtt = client.ping().await?;
    let addr = client.addr().to_string();
    client.close().await;
    say!("{addr} answered in {:.1} ms", rtt.as_secs_f64() * 1000.0);
    Ok(())
}

/// `fileagent get NAME`: fetched beside the destination, renamed into
/// place once verified.
pub(super) async fn get(args: GetArgs) -> Result<()> {
    let dest = match &args.output {
        Some(path) if path.is_dir() => path.join(&args.name),
        // "-o plates/" means a folder, which must exist.
        Some(path) if path.as_os_str().to_string_lossy().ends_with('/') => {
            return Err(UsageError(format!("no folder {}", path.display())).into());
        }
        Some(path) => path.clone(),
        None => PathBuf::from(&args.name),
    };
    crate::workstation::check_destination(&dest)?;
    if dest.is_dir() || (dest.symlink_metadata().is_ok() && !dest.is_file()) {
        return Err(UsageError(format!("{} is not a regular file", dest.display())).into());
    }
    let mut client = connect(&args.target).await?;
    let mut bar = Bar::new(std::io::stderr().is_terminal(), &args.name);
    let fetched = client
        .get(&args.name, &dest, args.overwrite, &mut bar)
        .await;
    bar.finish();
    let fetched = fetched?;
    client.close().await;
    let what = if fetched.unchanged {
        "unchanged"
    } else {
        "got"
    };
    say!(
        "{what} {} -> {}  {}  sha256 {}",
        args.name,
        dest.display(),
        ByteSize(fetched.size).display().iec(),
        fetched.sha256
    );
    Ok(())
}
