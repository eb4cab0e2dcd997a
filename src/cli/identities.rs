//! A workstation's identity: pairing with an agent (`fileagent pair HOST
//! CODE`), connecting with the identity, renewing it when it nears expiry.
//! The agent's side of identities is in [`super::agent`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::args::{PairArgs, TargetArgs, UsageError};
use crate::wire::identity::{self, Identity};
use crate::wire::pairing::PairingCode;
use crate::workstation::Client;
use crate::workstation::config::{ClientConfig, config_dir, save_agent};
use crate::workstation::pair::Paired;

/// `fileagent pair HOST CODE`: the workstation's side of pairing.
pub(super) async fn pair(agent: &str, code: &str, args: &PairArgs) -> Result<()> {
    let code = PairingCode::parse(code).map_err(|e| UsageError(e.to_string()))?;
    let client_name = match &args.as_client {
        Some(name) => name.clone(),
        None => default_client_name(),
    };
    identity::validate_client_name(&client_name)
        .map_err(|e| UsageError(format!("{e} (choose one with --as)")))?;
    let (host, _) = crate::workstation::parse_agent(agent)?;
    let alias = args.name.clone().unwrap_or_else(|| default_alias(&host));
    identity::validate_client_name(&alias).map_err(|_| {
        UsageError(format!(
            "{alias:?} cannot name an agent: use letters, digits, '.', '_' or '-' (--name)"
        ))
    })?;
    let dir = config_dir()
        .context("cannot find this user's config folder (HOME, or APPDATA on Windows, is not set; or set XDG_CONFIG_HOME): cannot save the identity")?;
    let config = ClientConfig::load(&dir).map_err(|e| UsageError(format!("{e:#}")))?;

    let paired = crate::workstation::pair::pair(agent, &code, &client_name).await?;
    let saved = save_identity(&dir, &alias, &paired)?;
    let made_default = saved.made_default || config.default_agent.as_deref() == Some(&alias);
    report_paired(
        &paired,
        &dir,
        &alias,
        &saved.path,
        saved.replaced,
        made_default,
    )?;
    Ok(())
}

/// Where an identity from pairing was saved.
struct Saved {
    path: PathBuf,
    /// An identity file of that name was there and is replaced.
    replaced: bool,
    /// The agent became the default one (the first saved).
    made_default: bool,
}

/// Writes the identity file (0600) and saves the agent under `alias` in
/// client.toml.
fn save_identity(dir: &Path, alias: &str, paired: &Paired) -> Result<Saved> {
    crate::durable::create_dir(dir, 0o700)
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
    let made_default = save_agent(dir, alias, &paired.address, &file)?;
    Ok(Saved {
        path,
        replaced,
        made_default,
    })
}

fn report_paired(
    paired: &Paired,
    dir: &Path,
    alias: &str,
    path: &Path,
    replaced: bool,
    made_default: bool,
) -> Result<()> {
    let issued = &paired.issued;
    let expires = time::OffsetDateTime::from_unix_timestamp(issued.not_after)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    say!(
        "paired with {} as \"{}\" (serial {}, valid until {expires})",
        paired.address,
        issued.name,
        issued.serial
    );
    say!("agent CA   sha256 {}", paired.ca_fingerprint);
    let replaced = if replaced {
        " (replaced the previous one)"
    } else {
        ""
    };
    say!("identity   {}{replaced}", path.display());
    let default = if made_default {
        " (the default agent)"
    } else {
        ""
    };
    say!(
        "saved as agent \"{alias}\" in {}{default}",
        dir.join(crate::workstation::config::CLIENT_CONFIG_FILE)
            .display()
    );
    say!("try: fileagent send part.gcode --agent {alias}");
    Ok(())
}

/// This host's name, made into a valid client name.
fn default_client_name() -> String {
    let host = identity::host_name();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(identity::MAX_CLIENT_NAME_LEN)
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

/// Warns, as ssh does, when an identity file (a private key) can be read by
/// other users: they could send to the printers as this workstation. (On
/// Windows the file is in the user's profile, whose ACL keeps other users
/// out.)
#[cfg(unix)]
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
    let identity = Identity::load_valid(&resolved.identity)
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
    #[cfg(unix)]
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
