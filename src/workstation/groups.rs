//! Groups of agents in `client.toml` (`[groups] farm = ["pi1", "pi2"]`):
//! one name for several printers, for `send --agent farm` and the bridge's
//! `/g/farm` URL. A group's members are saved agents' names or addresses;
//! groups do not nest, and a group may not take a saved agent's name.

use anyhow::{Result, bail};

use super::config::ClientConfig;

impl ClientConfig {
    /// The members of group `name`, if there is such a group.
    pub(crate) fn group(&self, name: &str) -> Option<&[String]> {
        self.groups.get(name).map(Vec::as_slice)
    }

    /// `--agent` values with each group replaced by its members, in order,
    /// each agent once.
    pub(crate) fn expand_agents(&self, agents: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for agent in agents {
            let members = self.group(agent).unwrap_or(std::slice::from_ref(agent));
            for member in members {
                if !out.contains(member) {
                    out.push(member.clone());
                }
            }
        }
        out
    }

    /// What a group may not be: empty, named like a saved agent, or
    /// holding another group or something that is no agent.
    pub(super) fn check_groups(&self) -> Result<()> {
        for (name, members) in &self.groups {
            if members.is_empty() {
                bail!(
                    "group {name:?} has no members: list agents, e.g. {name} = [\"pi1\", \"pi2\"]"
                );
            }
            if self.agents.contains_key(name) {
                bail!("{name:?} names both an agent and a group: rename one of them");
            }
            for member in members {
                if self.groups.contains_key(member) {
                    bail!(
                        "group {name:?} holds the group {member:?}: groups do not nest, list its agents instead"
                    );
                }
                if !self.agents.contains_key(member)
                    && crate::workstation::parse_agent(member).is_err()
                {
                    bail!(
                        "group {name:?}: {member:?} is neither a paired agent ({}) nor HOST[:PORT]",
                        self.saved_agents()
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<ClientConfig> {
        let config: ClientConfig = toml::from_str(text)?;
        config.check_groups().map(|()| config)
    }

    const AGENTS: &str =
        "[agents.pi1]\naddress = \"pi1.local\"\n[agents.pi2]\naddress = \"pi2.local\"\n";

    #[test]
    fn a_group_expands_to_its_members_in_order_each_once() {
        let c = config(&format!(
            "{AGENTS}[groups]\nfarm = [\"pi2\", \"pi1\", \"10.0.0.9:7341\"]\n"
        ))
        .unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            c.expand_agents(&args(&["farm"])),
            ["pi2", "pi1", "10.0.0.9:7341"]
        );
        assert_eq!(
            c.expand_agents(&args(&["pi1", "farm", "pi1"])),
            ["pi1", "pi2", "10.0.0.9:7341"]
        );
        assert_eq!(c.expand_agents(&args(&["other:1"])), ["other:1"]);
        assert_eq!(c.group("farm").unwrap().len(), 3);
        assert!(c.group("pi1").is_none());
    }

    #[test]
    fn a_group_that_cannot_be_is_refused_with_what_to_do() {
        let bad = [
            ("[groups]\nfarm = []\n", "has no members"),
            (
                "[groups]\npi1 = [\"pi2\"]\n",
                "names both an agent and a group",
            ),
            (
                "[groups]\na = [\"pi1\"]\nb = [\"a\"]\n",
                "groups do not nest",
            ),
            (
                "[groups]\nfarm = [\"no such/agent\"]\n",
                "neither a paired agent (pi1 (pi1.local), pi2 (pi2.local)) nor HOST[:PORT]",
            ),
        ];
        for (groups, why) in bad {
            let e = config(&format!("{AGENTS}{groups}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{groups}: {e}");
        }
    }
}
