//! The commands that run on the agent's machine (Linux, beside the printer):
//! `serve`, `init`, `pair` without arguments (a one-time code), and
//! `client issue|list|revoke`. They work on the agent's config and keys,
//! so this is the one part of the CLI that imports [`crate::agent`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::print_json;
use crate::agent::config::{Config, ConfigError};
use crate::agent::pairing::ticket::{self, Outcome};
use crate::agent::pki;
use crate::agent::pki::registry::{self, ClientRecord};
use crate::cli::args::{ClientCommand, PairArgs, UsageError};
use crate::logging::Logging;
use crate::wire::identity;
use crate::wire::pairing::{MAX_ATTEMPTS, MAX_TTL, MIN_TTL};

/// How long `fileagent pair` on the agent tries to reach the running agent
/// before warning that nothing listens.
const LISTEN_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often `fileagent pair` on the agent looks at its code's state.
const PAIR_POLL: Duration = Duration::from_millis(200);

/// `fileagent serve`: the agent, until SIGTERM or SIGINT.
pub(super) async fn serve(config_path: Option<&Path>, logging: &Logging) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    crate::agent::daemon::serve(config, source, logging).await
}

/// `fileagent client issue|list|revoke`
pub(super) fn client(command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Issue { name, out, agent } => issue(&name, &out, agent.config.as_deref()),
        ClientCommand::List { json, agent } => list(json, agent.config.as_deref()),
        ClientCommand::Revoke { who, agent } => revoke(&who, agent.config.as_deref()),
    }
}

/// The agent's errors that are the user's to fix (exit code 2): a config
/// that does not parse or validate, a command run where no agent keys are.
pub(super) fn is_usage_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<ConfigError>().is_some()
        || cause.downcast_ref::<pki::NoAgentKeys>().is_some()
}

pub(super) fn init(config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    let prepared = crate::agent::daemon::prepare(&config, false)?;
    give_back(&config)?;
    let report = &prepared.report;
    say!("config          {source}");
    say!("state dir       {}", config.state_dir.display());
    say!("spool dir       {}", config.spool_dir.display());
    say!(
        "CA              {} (SHA-256 {})",
        if report.created_ca { "created" } else { "kept" },
        report.ca_fingerprint
    );
    say!(
        "server cert     {:?} for {}",
        report.server_cert,
        report.names.join(", ")
    );
    say!("next: fileagent pair   (prints a one-time code for the workstation)");
    Ok(())
}

/// After root worked on the packaged agent's directories: hands what it
/// created to the service user (see [`crate::durable::adopt_owner`]).
pub(crate) fn give_back(config: &Config) -> Result<()> {
    for dir in [&config.state_dir, &config.spool_dir] {
        crate::durable::adopt_owner(dir)
            .with_context(|| format!("cannot give {} back to its owner", dir.display()))?;
    }
    Ok(())
}

/// `fileagent pair` on the agent: prints a one-time code and waits for the
/// workstation to use it.
pub(super) async fn pair(args: PairArgs) -> Result<()> {
    let (config, source) = Config::load(args.config.as_deref())?;
    pki::require_existing(&config, &source)?;
    if let Some(name) = &args.name {
        identity::validate_client_name(name).map_err(|e| UsageError(e.to_string()))?;
    }
    if args.ttl < MIN_TTL || args.ttl > MAX_TTL {
        bail!(UsageError(format!(
            "--ttl must be between {} and {}",
            humantime::format_duration(MIN_TTL),
            humantime::format_duration(MAX_TTL)
        )));
    }
    let report = pki::init(&config)?;
    let ticket = ticket::create(
        &config.state_dir,
        &report.ca_fingerprint,
        args.name.clone(),
        args.ttl,
    )?;
    // Removes the code if this command ends before it was used (Ctrl-C).
    let _cleanup = RemoveTicket(config.state_dir.clone(), ticket.ticket.clone());
    give_back(&config)?;
    print_code(&config, &ticket, &args, &report.ca_fingerprint)?;
    if !agent_listening(&config).await {
        eprintln!(
            "fileagent: note: nothing answers on {}: start the agent (`systemctl start fileagent` or \
             `fileagent serve`) before the code is used",
            config.listen
        );
    }
    say!("waiting for the workstation (Ctrl-C cancels the code)...");
    std::io::stdout().flush().ok();
    wait_for_workstation(&config, &ticket.ticket).await
}

/// The code, how long it holds, and the command to run where.
fn print_code(
    config: &Config,
    ticket: &ticket::Ticket,
    args: &PairArgs,
    ca_fingerprint: &str,
) -> Result<()> {
    // An agent on loopback only is reachable from this machine alone.
    let loopback = config.listen.ip().is_loopback();
    let host = match loopback {
        true => "localhost".to_string(),
        false => (pki::server_names(config).into_iter().next()).unwrap_or_else(|| "HOST".into()),
    };
    let port = config.listen.port();
    let until = time::OffsetDateTime::from_unix_timestamp(ticket.expires)
        .map(|t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()))
        .unwrap_or_default();
    say!("pairing code   {}", ticket.code());
    say!(
        "               one use, valid {} (until {until} UTC), void after {MAX_ATTEMPTS} wrong attempts",
        humantime::format_duration(args.ttl)
    );
    if let Some(name) = &args.name {
        say!("client name    {name}");
    }
    say!("agent CA       sha256 {ca_fingerprint}");
    if loopback {
        say!(
            "on this machine (the agent listens on {} only; set listen = \"0.0.0.0:{port}\" in its config for other machines):\n  fileagent pair {host}:{port} {}",
            config.listen,
            ticket.code()
        );
    } else {
        say!(
            "on the workstation:\n  fileagent pair {host}:{port} {}",
            ticket.code()
        );
    }
    Ok(())
}

/// Follows the code's ticket until the workstation paired, the code went
/// void or expired.
async fn wait_for_workstation(config: &Config, id: &str) -> Result<()> {
    loop {
        tokio::time::sleep(PAIR_POLL).await;
        let Some(now) = ticket::load(&config.state_dir, id)? else {
            bail!(
                "the pairing code was removed from {}",
                config.state_dir.display()
            );
        };
        match now.outcome {
            Some(Outcome::Paired {
                client,
                serial,
                address,
                replaced,
            }) => {
                say!("paired \"{client}\" (serial {serial}) from {address}");
                if !replaced.is_empty() {
                    say!(
                        "revoked the earlier certificate of \"{client}\" (serial {}): it no longer works",
                        replaced.join(", ")
                    );
                }
                return Ok(());
            }
            Some(Outcome::Void) => {
                bail!(
                    "the code is void after {MAX_ATTEMPTS} failed attempts (see the agent's log); \
                     run `fileagent pair` again for a new one"
                );
            }
            _ if now.expired() => {
                bail!("the code expired unused; run `fileagent pair` again for a new one")
            }
            _ => {}
        }
    }
}

struct RemoveTicket(PathBuf, String);

impl Drop for RemoveTicket {
    /// A code that ended is kept (the agent sweeps it an hour after it
    /// expires), so reusing it is refused as "used"; a pending one is removed.
    fn drop(&mut self) {
        if let Ok(Some(t)) = ticket::load(&self.0, &self.1)
            && t.outcome.is_none()
        {
            ticket::remove(&self.0, &self.1);
        }
    }
}

async fn agent_listening(config: &Config) -> bool {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(
        tokio::time::timeout(LISTEN_PROBE_TIMEOUT, connect).await,
        Ok(Ok(_))
    )
}

/// `fileagent client list`
fn list(json: bool, config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    pki::require_existing(&config, &source)?;
    let records = registry::list(&config.state_dir)?;
    if json {
        return print_json(&records);
    }
    let mut out = std::io::stdout().lock();
    if records.is_empty() {
        writeln!(
            out,
            "no client certificates issued yet: pair one with `fileagent pair`"
        )?;
        return Ok(());
    }
    let width = records
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:<32}  {:<10}  {:<10}  {:<20}  {:<7}  FINGERPRINT (SHA-256)",
        "NAME", "SERIAL", "ISSUED", "EXPIRES", "LAST SEEN (UTC)", "STATE"
    )?;
    for r in &records {
        writeln!(
            out,
            "{:<width$}  {:<32}  {:<10}  {:<10}  {:<20}  {:<7}  {}",
            r.name,
            r.serial,
            r.issued.get(..10).unwrap_or(&r.issued),
            r.expires.get(..10).unwrap_or(&r.expires),
            r.last_seen.as_deref().map_or("never".into(), |t| t
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string()),
            state(r),
            r.fingerprint
        )?;
    }
    Ok(())
}

fn state(record: &ClientRecord) -> &'static str {
    match (&record.revoked, record.expired) {
        (Some(_), _) => "revoked",
        (None, true) => "expired",
        (None, false) => "valid",
    }
}

/// `fileagent client revoke`
fn revoke(who: &str, config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    pki::require_existing(&config, &source)?;
    let revoked = registry::revoke(&config, who).map_err(|e| UsageError(format!("{e:#}")))?;
    give_back(&config)?;
    if revoked.is_empty() {
        say!("{who}: already revoked, nothing to do");
    }
    for r in &revoked {
        say!("revoked \"{}\" serial {}", r.name, r.serial);
    }
    if !revoked.is_empty() {
        say!("the agent refuses these certificates from the next connection on");
    }
    Ok(())
}

/// `fileagent client issue`: an identity file made on the agent (key
/// included), for machines that cannot run `fileagent pair`.
fn issue(name: &str, out: &Path, config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    pki::require_existing(&config, &source)?;
    identity::validate_client_name(name).map_err(|e| UsageError(e.to_string()))?;
    pki::init(&config)?;
    if out.exists() {
        return Err(UsageError(format!(
            "{} already exists: choose another --out or remove it first",
            out.display()
        ))
        .into());
    }
    let issued = pki::issue_client(&config, name)?;
    give_back(&config)?;
    pki::write_new(out, issued.pem.as_bytes(), 0o600)?;
    say!(
        "issued \"{name}\" (serial {}, valid until {}) -> {}",
        issued.serial,
        issued.not_after.date(),
        out.display()
    );
    say!(
        "copy it to the workstation as ~/.config/fileagent/identity.pem (mode 0600; on Windows %APPDATA%\\fileagent\\identity.pem), then:\n  fileagent send part.gcode --agent {}\n\
         (`fileagent pair` does this without the key ever leaving the workstation)",
        pki::server_names(&config)
            .first()
            .map_or("HOST", String::as_str)
    );
    Ok(())
}
