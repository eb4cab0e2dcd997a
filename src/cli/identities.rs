//! Commands about identities: pairing on both ends, and listing, revoking
//! and issuing client certificates on the agent; connecting with an
//! identity, renewing it when it nears expiry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{give_back, print_json};
use crate::agent::config::Config;
use crate::agent::pairing::ticket::{self, Outcome};
use crate::agent::pki;
use crate::agent::pki::registry::{self, ClientRecord};
use crate::cli::args::{PairArgs, TargetArgs, UsageError};
use crate::wire::identity::Identity;
use crate::wire::pairing::{MAX_ATTEMPTS, MAX_TTL, MIN_TTL, PairingCode};
use crate::workstation::Client;
use crate::workstation::config::{ClientConfig, config_dir, save_agent};

/// How long `fileagent pair` on the agent tries to reach the running agent
/// before warning that nothing listens.
const LISTEN_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often `fileagent pair` on the agent looks at its code's state.
const PAIR_POLL: Duration = Duration::from_millis(200);

/// `fileagent pair`: the agent's side without arguments, else the workstation's.
pub(super) async fn pair(args: PairArgs) -> Result<()> {
    match (&args.agent, &args.code) {
        (Some(agent), Some(code)) => pair_workstation(agent, code, &args).await,
        _ => pair_agent(args).await,
    }
}

async fn pair_agent(args: PairArgs) -> Result<()> {
    let (config, source) = Config::load(args.config.as_deref())?;
    pki::require_existing(&config, &source)?;
    if let Some(name) = &args.name {
        pki::validate_client_name(name).map_err(|e| UsageError(e.to_string()))?;
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
    // An agent on loopback only is reachable from this machine alone.
    let loopback = config.listen.ip().is_loopback();
    let host = match loopback {
        true => "localhost".to_string(),
        false => (pki::server_names(&config).into_iter().next()).unwrap_or_else(|| "HOST".into()),
    };
    let port = config.listen.port();
    let until = time::OffsetDateTime::from_unix_timestamp(ticket.expires)
        .map(|t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()))
        .unwrap_or_default();
    println!("pairing code   {}", ticket.code());
    println!(
        "               one use, valid {} (until {until} UTC), void after {MAX_ATTEMPTS} wrong attempts",
        humantime::format_duration(args.ttl)
    );
    if let Some(name) = &args.name {
        println!("client name    {name}");
    }
    println!("agent CA       sha256 {}", report.ca_fingerprint);
    if loopback {
        println!(
            "on this machine (the agent listens on {} only; set listen = \"0.0.0.0:{port}\" in its config for other machines):\n  fileagent pair {host}:{port} {}",
            config.listen,
            ticket.code()
        );
    } else {
        println!(
            "on the workstation:\n  fileagent pair {host}:{port} {}",
            ticket.code()
        );
    }
    if !agent_listening(&config).await {
        eprintln!(
            "fileagent: note: nothing answers on {}: start the agent (`systemctl start fileagent` or \
             `fileagent serve`) before the code is used",
            config.listen
        );
    }
    println!("waiting for the workstation (Ctrl-C cancels the code)...");
    std::io::stdout().flush().ok();
    loop {
        tokio::time::sleep(PAIR_POLL).await;
        let Some(now) = ticket::load(&config.state_dir, &ticket.ticket)? else {
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
                println!("paired \"{client}\" (serial {serial}) from {address}");
                if !replaced.is_empty() {
                    println!(
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

async fn pair_workstation(agent: &str, code: &str, args: &PairArgs) -> Result<()> {
    let code = PairingCode::parse(code).map_err(|e| UsageError(e.to_string()))?;
    let client_name = match &args.as_client {
        Some(name) => name.clone(),
        None => default_client_name(),
    };
    pki::validate_client_name(&client_name)
        .map_err(|e| UsageError(format!("{e} (choose one with --as)")))?;
    let (host, _) = crate::workstation::parse_agent(agent)?;
    let alias = args.name.clone().unwrap_or_else(|| default_alias(&host));
    pki::validate_client_name(&alias).map_err(|_| {
        UsageError(format!(
            "{alias:?} cannot name an agent: use letters, digits, '.', '_' or '-' (--name)"
        ))
    })?;
    let dir = config_dir()
        .context("neither XDG_CONFIG_HOME nor HOME is set: cannot save the identity")?;
    let config = ClientConfig::load(&dir).map_err(|e| UsageError(format!("{e:#}")))?;

    let paired = crate::workstation::pair::pair(agent, &code, &client_name).await?;

    crate::durable::create_dir(&dir, 0o700)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let file = format!("{alias}.pem");
    let path = dir.join(&file);
    let replaced = path.exists();
    crate::durable::write(
        &path,
        paired.identity_pem.as_bytes(),
        0o600,
        crate::durable::Existing::Replace,
    )
    .with_context(|| format!("cannot write the identity file {}", path.display()))?;
    let made_default = save_agent(&dir, &alias, &paired.address, &file)?;
    let issued = &paired.issued;
    let expires = time::OffsetDateTime::from_unix_timestamp(issued.not_after)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    println!(
        "paired with {} as \"{}\" (serial {}, valid until {expires})",
        paired.address, issued.name, issued.serial
    );
    println!("agent CA   sha256 {}", paired.ca_fingerprint);
    println!(
        "identity   {}{}",
        path.display(),
        if replaced {
            " (replaced the previous one)"
        } else {
            ""
        }
    );
    println!(
        "saved as agent \"{alias}\" in {}{}",
        dir.join(crate::workstation::config::CLIENT_CONFIG_FILE)
            .display(),
        if made_default || config.default_agent.as_deref() == Some(&alias) {
            " (the default agent)"
        } else {
            ""
        }
    );
    println!("try: fileagent send part.gcode --agent {alias}");
    Ok(())
}

/// This host's name, made into a valid client name.
fn default_client_name() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(pki::MAX_CLIENT_NAME_LEN)
        .collect();
    let name = name.trim_start_matches(['.', '-']).to_string();
    if name.is_empty() {
        "workstation".into()
    } else {
        name
    }
}

/// `pi.local` → `pi`; an IP address stays as it is.
fn default_alias(host: &str) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_string();
    }
    host.split('.').next().unwrap_or(host).to_string()
}

/// `fileagent client list`
pub(super) fn list(json: bool, config_path: Option<&Path>) -> Result<()> {
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
pub(super) fn revoke(who: &str, config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    pki::require_existing(&config, &source)?;
    let revoked = registry::revoke(&config, who).map_err(|e| UsageError(format!("{e:#}")))?;
    give_back(&config)?;
    if revoked.is_empty() {
        println!("{who}: already revoked, nothing to do");
    }
    for r in &revoked {
        println!("revoked \"{}\" serial {}", r.name, r.serial);
    }
    if !revoked.is_empty() {
        println!("the agent refuses these certificates from the next connection on");
    }
    Ok(())
}

/// `fileagent client issue`: an identity file made on the agent (key
/// included), for machines that cannot run `fileagent pair`.
pub(super) fn issue(name: &str, out: &Path, config_path: Option<&Path>) -> Result<()> {
    let (config, source) = Config::load(config_path)?;
    pki::require_existing(&config, &source)?;
    pki::validate_client_name(name).map_err(|e| UsageError(e.to_string()))?;
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
    println!(
        "issued \"{name}\" (serial {}, valid until {}) -> {}",
        issued.serial,
        issued.not_after.date(),
        out.display()
    );
    println!(
        "copy it to the workstation as ~/.config/fileagent/identity.pem (mode 0600), then:\n  fileagent send part.gcode --agent {}\n\
         (`fileagent pair` does this without the key ever leaving the workstation)",
        pki::server_names(&config)
            .first()
            .map_or("HOST", String::as_str)
    );
    Ok(())
}

/// Warns, as ssh does, when an identity file (a private key) can be read by
/// other users: they could send to the printers as this workstation.
fn warn_if_exposed(identity: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(identity) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        eprintln!(
            "fileagent: warning: the identity file {} is readable by others (mode {mode:04o}): its private key \
             lets them send to your printers as you; run `chmod 600 {}`",
            identity.display(),
            identity.display()
        );
    }
}

/// Resolves agent and identity (flags, environment, client.toml) and
/// connects; renews the identity first when it is within 30 days of expiry.
pub(super) async fn connect(target: &TargetArgs) -> Result<Client> {
    let dir = config_dir().unwrap_or_else(|| PathBuf::from("."));
    let config = ClientConfig::load(&dir).map_err(|e| UsageError(format!("{e:#}")))?;
    let resolved = config
        .resolve(&dir, target.agent.as_deref(), target.identity.as_deref())
        .map_err(|e| UsageError(format!("{e:#}")))?;
    let identity = Identity::load(&resolved.identity)
        .and_then(|id| id.check_validity().map(|()| id))
        .map_err(|e| {
            let saved = match config.saved_agents() {
                none if none.is_empty() => String::new(),
                saved => format!("; paired agents, for --agent: {saved}"),
            };
            // An agent nobody paired with: that is the news, not the file.
            if !resolved.saved && target.identity.is_none() && !resolved.identity.exists() {
                return UsageError(format!(
                    "no paired agent {:?} (in {}) and no identity for it: pair with it first \
                     (`fileagent pair {} CODE`, after `fileagent pair` on the agent printed the code), \
                     or pass --identity FILE{saved}",
                    resolved.address,
                    dir.join(crate::workstation::config::CLIENT_CONFIG_FILE).display(),
                    resolved.address
                ));
            }
            UsageError(format!(
                "{e:#}\n(pair this workstation with `fileagent pair HOST CODE`, after `fileagent pair` on the agent \
                 printed the code; or pass --identity FILE{saved})"
            ))
        })?;
    warn_if_exposed(&resolved.identity);
    let renew = identity.due_for_renewal();
    let mut client = Client::connect(&resolved.address, identity).await?;
    if renew {
        match client.renew(&resolved.identity).await {
            Ok(until) => eprintln!(
                "fileagent: renewed this workstation's certificate in {} (valid until {})",
                resolved.identity.display(),
                until.date()
            ),
            // The current certificate still works: go on, and say so.
            Err(e) => eprintln!(
                "fileagent: warning: could not renew the certificate, which expires soon: {e:#}"
            ),
        }
    }
    Ok(client)
}
