//! The workstation's settings: which agent to talk to and with which
//! identity file.
//!
//! Precedence, highest first: `--agent`/`--identity` flags, the
//! `FILEAGENT_AGENT`/`FILEAGENT_IDENTITY` environment (both handled by clap),
//! then `client.toml` in the user's config directory
//! (`$XDG_CONFIG_HOME/fileagent/`, else `~/.config/fileagent/`):
//!
//! ```toml
//! default_agent = "printer"            # a name below, or HOST[:PORT]
//! [agents.printer]
//! address = "pi.local:7341"
//! identity = "printer.pem"             # relative to this file's folder
//! [groups]
//! farm = ["printer", "pi2"]            # `--agent farm` sends to each
//! ```
//!
//! An `--agent` given as an address rather than a name uses the identity of
//! the saved agent at that address (or, if only one is saved on that host,
//! of that one: the same agent moved to another port). Without any identity
//! setting, `identity.pem` in that folder is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// File name of the client config inside the config folder.
pub(crate) const CLIENT_CONFIG_FILE: &str = "client.toml";
/// Identity file used when nothing else names one.
pub(crate) const DEFAULT_IDENTITY_FILE: &str = "identity.pem";

/// Contents of `client.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Agent used when `--agent` is not given: a name from `agents` or an address.
    pub default_agent: Option<String>,
    /// Named agents.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentEntry>,
    /// Named groups of agents (names from `agents`, or addresses).
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// One named agent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// `HOST[:PORT]`.
    pub address: String,
    /// Identity file for this agent (relative to the config folder).
    pub identity: Option<PathBuf>,
}

/// The agent to connect to and the identity to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `HOST[:PORT]`.
    pub address: String,
    /// Identity file.
    pub identity: PathBuf,
    /// The agent is one saved in client.toml (by name or address).
    pub saved: bool,
}

/// The user's fileagent config folder: `$XDG_CONFIG_HOME/fileagent` when
/// that is set (on every system), else the system's own place for it
/// (`~/.config/fileagent` on Linux, `%APPDATA%\fileagent` on Windows,
/// `~/Library/Application Support/fileagent` on macOS).
pub(crate) fn config_dir() -> Option<PathBuf> {
    let system = || directories::BaseDirs::new().map(|dirs| dirs.config_dir().to_path_buf());
    choose_config_dir(std::env::var_os("XDG_CONFIG_HOME"), system)
}

/// The rule of [`config_dir`], apart from the environment: a non-empty
/// `XDG_CONFIG_HOME` wins, else the system's config folder (`system`).
fn choose_config_dir(
    xdg: Option<std::ffi::OsString>,
    system: impl FnOnce() -> Option<PathBuf>,
) -> Option<PathBuf> {
    let base = match xdg.filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => system()?,
    };
    Some(base.join("fileagent"))
}

impl ClientConfig {
    /// Reads `client.toml` from `dir`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<ClientConfig> {
        let path = dir.join(CLIENT_CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<ClientConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
                .and_then(|config| config.check_groups().map(|()| config))
                .with_context(|| format!("invalid client config {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Resolves the flags (or environment) against this config found in `dir`.
    pub(crate) fn resolve(
        &self,
        dir: &Path,
        agent: Option<&str>,
        identity: Option<&Path>,
    ) -> Result<Target> {
        let Some(agent) = agent.or(self.default_agent.as_deref()) else {
            bail!(
                "no agent given: pass --agent HOST[:PORT], set FILEAGENT_AGENT, or set default_agent in {}",
                dir.join(CLIENT_CONFIG_FILE).display()
            );
        };
        let named = self.agents.get(agent);
        let address = named.map_or(agent, |e| e.address.as_str()).to_string();
        if let Err(e) = crate::workstation::parse_agent(&address) {
            bail!("{e}");
        }
        let entry = named.or_else(|| self.agent_at(agent));
        let identity = match (identity, entry.and_then(|e| e.identity.as_deref())) {
            (Some(flag), _) => flag.to_path_buf(),
            (None, Some(configured)) => dir.join(expand_home(configured)),
            (None, None) => dir.join(DEFAULT_IDENTITY_FILE),
        };
        Ok(Target {
            address,
            identity,
            saved: entry.is_some(),
        })
    }

    /// The saved agent at `address` (`HOST[:PORT]`): the one at that host
    /// and port, else the only one at that host.
    fn agent_at(&self, address: &str) -> Option<&AgentEntry> {
        let (host, port) = crate::workstation::parse_agent(address).ok()?;
        let same_host: Vec<(&AgentEntry, u16)> = self
            .agents
            .values()
            .filter_map(|e| {
                let (h, p) = crate::workstation::parse_agent(&e.address).ok()?;
                h.eq_ignore_ascii_case(&host).then_some((e, p))
            })
            .collect();
        match same_host.iter().find(|(_, p)| *p == port) {
            Some((entry, _)) => Some(entry),
            None if same_host.len() == 1 => Some(same_host[0].0),
            None => None,
        }
    }

    /// The saved agents' names and addresses, for an error's advice.
    pub(crate) fn saved_agents(&self) -> String {
        let agents: Vec<String> = self
            .agents
            .iter()
            .map(|(name, e)| format!("{name} ({})", e.address))
            .collect();
        agents.join(", ")
    }
}

/// Records agent `alias` at `address` with identity file `identity`
/// (relative to `dir`) in `dir/client.toml`, keeping everything else in the
/// file, comments included; makes it the default agent when there is none.
/// Returns whether it became the default.
pub(crate) fn save_agent(dir: &Path, alias: &str, address: &str, identity: &str) -> Result<bool> {
    use toml_edit::{DocumentMut, Item, Table, value};
    let path = dir.join(CLIENT_CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("invalid client config {}", path.display()))?;
    let agents = doc
        .entry("agents")
        .or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        })
        .as_table_mut()
        .with_context(|| format!("`agents` in {} is not a table", path.display()))?;
    let entry = agents
        .entry(alias)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .with_context(|| format!("agents.{alias} in {} is not a table", path.display()))?;
    entry["address"] = value(address);
    entry["identity"] = value(identity);
    let made_default = !doc.contains_key("default_agent");
    if made_default {
        // toml_edit writes top-level values before the tables.
        doc.insert("default_agent", value(alias));
    }
    let text = doc.to_string();
    toml::from_str::<ClientConfig>(&text)
        .with_context(|| format!("the updated {} would not be valid", path.display()))?;
    crate::durable::write(
        &path,
        text.as_bytes(),
        0o600,
        crate::durable::Existing::Replace,
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(made_default)
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_folder_is_xdg_first_then_the_systems() {
        let windows = || Some(PathBuf::from(r"C:\Users\ann\AppData\Roaming"));
        assert_eq!(
            choose_config_dir(None, windows),
            Some(PathBuf::from(r"C:\Users\ann\AppData\Roaming").join("fileagent"))
        );
        let xdg = Some(std::ffi::OsString::from("/home/ann/.cfg"));
        assert_eq!(
            choose_config_dir(xdg, windows),
            Some(PathBuf::from("/home/ann/.cfg/fileagent"))
        );
        // An empty XDG_CONFIG_HOME is unset; no home at all is no folder.
        let empty = Some(std::ffi::OsString::new());
        assert_eq!(
            choose_config_dir(empty, || None),
            None,
            "no XDG and no system folder"
        );
    }

    fn config(text: &str) -> ClientConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_win_over_config() {
        let dir = Path::new("/cfg");
        let c = config(
            "default_agent = \"printer\"\n[agents.printer]\naddress = \"pi.local\"\nidentity = \"p.pem\"\n",
        );
        let t = c.resolve(dir, None, None).unwrap();
        assert_eq!(t.address, "pi.local");
        assert_eq!(t.identity, Path::new("/cfg/p.pem"));
        let t = c
            .resolve(dir, Some("other:1"), Some(Path::new("me.pem")))
            .unwrap();
        assert_eq!(t.address, "other:1");
        assert_eq!(t.identity, Path::new("me.pem"));
        let t = c
            .resolve(dir, Some("printer"), Some(Path::new("me.pem")))
            .unwrap();
        assert_eq!(
            (t.address.as_str(), t.identity.as_path()),
            ("pi.local", Path::new("me.pem"))
        );
    }

    #[test]
    fn an_address_uses_the_identity_saved_for_it() {
        let dir = Path::new("/cfg");
        let c = config(
            "[agents.pi]\naddress = \"pi.local:7341\"\nidentity = \"pi.pem\"\n\
             [agents.farm-a]\naddress = \"farm:7341\"\nidentity = \"a.pem\"\n\
             [agents.farm-b]\naddress = \"farm:7342\"\nidentity = \"b.pem\"\n",
        );
        let with = |agent| c.resolve(dir, Some(agent), None).unwrap();
        // The same address, with the default port left out or not.
        for agent in ["pi.local", "pi.local:7341", "PI.LOCAL"] {
            let t = with(agent);
            assert_eq!(
                (t.address.as_str(), t.identity),
                (agent, dir.join("pi.pem"))
            );
        }
        // The only agent on that host, moved to another port.
        assert_eq!(with("pi.local:8000").identity, dir.join("pi.pem"));
        // Two on that host: the port decides, and no port match is no guess.
        assert_eq!(with("farm:7342").identity, dir.join("b.pem"));
        assert_eq!(with("farm").identity, dir.join("a.pem"));
        assert_eq!(with("farm:9").identity, dir.join("identity.pem"));
        assert_eq!(with("other.lan").identity, dir.join("identity.pem"));
        assert_eq!(
            c.saved_agents(),
            "farm-a (farm:7341), farm-b (farm:7342), pi (pi.local:7341)"
        );
    }

    #[test]
    fn defaults_and_missing_agent() {
        let dir = Path::new("/cfg");
        let t = ClientConfig::default()
            .resolve(dir, Some("pi"), None)
            .unwrap();
        assert_eq!(t.identity, Path::new("/cfg/identity.pem"));
        let err = ClientConfig::default()
            .resolve(dir, None, None)
            .unwrap_err();
        assert!(err.to_string().contains("--agent"), "{err}");
    }

    #[test]
    fn saving_an_agent_keeps_the_rest_of_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(save_agent(dir, "pi", "pi.local:7341", "pi.pem").unwrap());
        let config = ClientConfig::load(dir).unwrap();
        assert_eq!(config.default_agent.as_deref(), Some("pi"));
        let t = config.resolve(dir, None, None).unwrap();
        assert_eq!(t.address, "pi.local:7341");
        assert_eq!(t.identity, dir.join("pi.pem"));

        let path = dir.join(CLIENT_CONFIG_FILE);
        let edited = std::fs::read_to_string(&path).unwrap()
            + "# my note\n[agents.farm]\naddress = \"farm:1\"\n";
        std::fs::write(&path, edited).unwrap();
        assert!(!save_agent(dir, "farm", "farm.lan:7341", "farm.pem").unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# my note"), "{text}");
        let config = ClientConfig::load(dir).unwrap();
        assert_eq!(config.default_agent.as_deref(), Some("pi"));
        assert_eq!(config.agents["farm"].address, "farm.lan:7341");
        assert_eq!(config.agents.len(), 2);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(CLIENT_CONFIG_FILE),
            "default_agnet = \"x\"\n",
        )
        .unwrap();
        let err = format!("{:#}", ClientConfig::load(tmp.path()).unwrap_err());
        assert!(
            err.contains("client.toml") && err.contains("default_agnet"),
            "{err}"
        );
    }
}
