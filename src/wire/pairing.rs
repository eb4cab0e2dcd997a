//! Pairing a workstation with the agent by a one-time code, and the
//! cryptography both ends share (see `docs/pairing.md` for the design and
//! its threat model).
//!
//! A code is 16 characters of Crockford base32 in four groups,
//! `TTTT-SSSS-SSSS-CCCC`: the ticket (names the agent's pending code, not
//! secret), the secret (40 random bits, the SPAKE2 password) and a check of
//! the agent CA's SHA-256 fingerprint (its first 20 bits), which lets the
//! workstation refuse a wrong agent before it says anything. The full
//! fingerprint is bound by SPAKE2 itself (it is the agent's identity in the
//! exchange), and both key confirmations cover a TLS exporter of the
//! connection they run on.
//!
//! The two sides are `agent::pairing` (pending codes in
//! `state_dir/pairing/`, the agent's side of a pairing connection) and
//! `workstation::pair` (`fileagent pair HOST CODE`); this module is what
//! they share.

use std::fmt;

use anyhow::{Result, bail};
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Characters of a code (four groups of four).
pub(crate) const CODE_LEN: usize = 16;
/// Pairing attempts allowed per code; the code is void after that many failures.
pub const MAX_ATTEMPTS: u32 = 3;
/// Pairing requests allowed per source address within `RATE_WINDOW`.
pub const MAX_REQUESTS_PER_ADDRESS: usize = 6;
/// Window of the per-address rate limit.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub(crate) const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Lifetime of a code unless `--ttl` says otherwise.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// Shortest lifetime `--ttl` accepts.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub(crate) const MIN_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest lifetime `--ttl` accepts.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // used by the agent (Linux only)
pub(crate) const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Crockford's base32: no I, L, O or U, so nothing is ambiguous to type.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TICKET_LEN: usize = 4;
const SECRET_LEN: usize = 8;
const EXPORTER_LABEL: &[u8] = b"EXPORTER-fileagent-pair";

/// A pairing code, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode {
    /// Names the pending code on the agent (sent to it, not secret).
    pub ticket: String,
    /// The secret part (never sent in any form that can be replayed).
    pub secret: String,
    /// The first 20 bits of the agent CA's fingerprint, base32.
    pub ca_check: String,
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No secrets in logs.
        write!(
            f,
            "PairingCode({}-****-****-{})",
            self.ticket, self.ca_check
        )
    }
}

impl fmt::Display for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.secret.split_at(SECRET_LEN / 2);
        write!(f, "{}-{a}-{b}-{}", self.ticket, self.ca_check)
    }
}

impl PairingCode {
    /// A fresh random code for the agent whose CA has `ca_fingerprint` (hex).
    pub fn generate(ca_fingerprint: &str) -> Result<PairingCode> {
        let mut random = [0u8; TICKET_LEN + SECRET_LEN];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut random)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        // One character per byte, 5 of its 8 bits: uniform over 32 symbols.
        let chars: String = random
            .iter()
            .map(|b| ALPHABET[usize::from(b & 31)] as char)
            .collect();
        Ok(PairingCode {
            ticket: chars[..TICKET_LEN].to_string(),
            secret: chars[TICKET_LEN..].to_string(),
            ca_check: ca_check(ca_fingerprint),
        })
    }

    /// Parses a code as typed: any case, dashes or spaces anywhere, and
    /// `O`, `I`, `L` read as `0`, `1`, `1`.
    pub fn parse(text: &str) -> Result<PairingCode> {
        let mut chars = String::with_capacity(CODE_LEN);
        for c in text.chars().filter(|c| !matches!(c, '-' | ' ')) {
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
                bail!(
                    "{c:?} cannot be part of a pairing code: codes use digits and letters other than U, \
                     like 7KQ2-M9XD-4HTR-PW3C"
                );
            }
            chars.push(c);
        }
        if chars.len() != CODE_LEN {
            bail!(
                "a pairing code has {CODE_LEN} characters in four groups, like 7KQ2-M9XD-4HTR-PW3C; \
                 this one has {}",
                chars.len()
            );
        }
        Ok(PairingCode {
            ticket: chars[..TICKET_LEN].to_string(),
            secret: chars[TICKET_LEN..TICKET_LEN + SECRET_LEN].to_string(),
            ca_check: chars[TICKET_LEN + SECRET_LEN..].to_string(),
        })
    }
}

/// The first 20 bits of a hex fingerprint as four base32 characters.
pub fn ca_check(fingerprint: &str) -> String {
    let bits = u32::from_str_radix(fingerprint.get(..5).unwrap_or("0"), 16).unwrap_or(0);
    (0..4)
        .rev()
        .map(|i| ALPHABET[((bits >> (5 * i)) & 31) as usize] as char)
        .collect()
}

/// Which end of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The workstation (SPAKE2 side A).
    Workstation,
    /// The agent (SPAKE2 side B).
    Agent,
}

/// A started SPAKE2 exchange.
pub struct Exchange(Spake2<Ed25519Group>);

impl Exchange {
    /// Starts the exchange for `role`, with the ticket and secret as the
    /// password and the agent CA's full fingerprint as the agent's identity;
    /// returns the message to send.
    pub fn start(
        role: Role,
        ticket: &str,
        secret: &str,
        ca_fingerprint: &str,
    ) -> (Exchange, Vec<u8>) {
        let password = Password::new(format!("fileagent-pair:{ticket}:{secret}"));
        let workstation = Identity::new(b"fileagent workstation");
        let agent =
            Identity::new(format!("fileagent agent, CA sha256:{ca_fingerprint}").as_bytes());
        let (state, message) = match role {
            Role::Workstation => Spake2::<Ed25519Group>::start_a(&password, &workstation, &agent),
            Role::Agent => Spake2::<Ed25519Group>::start_b(&password, &workstation, &agent),
        };
        (Exchange(state), message)
    }

    /// Completes the exchange with the peer's message. The key only matches
    /// the peer's if both used the same code and CA fingerprint.
    pub fn finish(self, peer_message: &[u8]) -> Result<SharedKey> {
        let key = self
            .0
            .finish(peer_message)
            .map_err(|e| anyhow::anyhow!("malformed pairing message: {e:?}"))?;
        Ok(SharedKey(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &key,
        )))
    }
}

/// The key both ends derived; used only for key confirmation.
pub struct SharedKey(ring::hmac::Key);

impl SharedKey {
    /// `role`'s confirmation over the connection's TLS `exporter` and `extra`
    /// (what else the message vouches for).
    pub fn confirm(&self, role: Role, exporter: &[u8], extra: &[u8]) -> String {
        hex::encode(ring::hmac::sign(&self.0, &confirm_input(role, exporter, extra)).as_ref())
    }

    /// Checks `role`'s confirmation (constant time).
    pub(crate) fn verify(
        &self,
        role: Role,
        exporter: &[u8],
        extra: &[u8],
        confirmation: &str,
    ) -> bool {
        let Ok(tag) = hex::decode(confirmation) else {
            return false;
        };
        ring::hmac::verify(&self.0, &confirm_input(role, exporter, extra), &tag).is_ok()
    }
}

fn confirm_input(role: Role, exporter: &[u8], extra: &[u8]) -> Vec<u8> {
    let label: &[u8] = match role {
        Role::Workstation => b"fileagent pair: workstation confirms\0",
        Role::Agent => b"fileagent pair: agent confirms\0",
    };
    [label, exporter, extra].concat()
}

/// Keying material exported from a TLS connection: binds the confirmations
/// to this one connection, so they cannot be relayed into another.
pub(crate) fn exporter<D>(tls: &rustls::ConnectionCommon<D>) -> Result<[u8; 32]> {
    tls.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| anyhow::anyhow!("cannot export keying material from TLS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_forgive_typing() {
        let fp = "a3f9c0ffee";
        let code = PairingCode::generate(fp).unwrap();
        let text = code.to_string();
        assert_eq!(text.len(), CODE_LEN + 3);
        assert_eq!(PairingCode::parse(&text).unwrap(), code);
        let sloppy = text.to_lowercase().replace('-', " ");
        assert_eq!(PairingCode::parse(&sloppy).unwrap(), code);
        assert_eq!(ca_check(fp), code.ca_check);
        assert_ne!(ca_check("03f9c0ffee"), code.ca_check);
        assert_eq!(
            PairingCode::parse("7kq2-m9xd-4htr-pw3c").unwrap().ticket,
            "7KQ2"
        );
        assert_eq!(
            PairingCode::parse("OIL0-0000-0000-0000").unwrap().ticket,
            "0110"
        );
        assert!(!format!("{code:?}").contains(&code.secret));
    }

    #[test]
    fn malformed_codes_say_what_a_code_looks_like() {
        for bad in [
            "",
            "7KQ2-M9XD-4HTR",
            "7KQ2-M9XD-4HTR-PW3C-X",
            "7KQ2-M9XD-4HTR-PW3U",
            "7KQ2-M9XD-4HTR-PW3!",
        ] {
            let err = PairingCode::parse(bad).unwrap_err().to_string();
            assert!(err.contains("7KQ2-M9XD-4HTR-PW3C"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_ca_check_is_the_fingerprints_first_20_bits() {
        assert_eq!(ca_check("00000"), "0000");
        assert_eq!(ca_check("fffff"), "ZZZZ");
        // 0x08421 = 00001 00001 00001 00001
        assert_eq!(ca_check("08421abc"), "1111");
    }

    #[test]
    fn secrets_are_spread_over_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.extend(PairingCode::generate("00").unwrap().secret.chars());
        }
        assert_eq!(seen.len(), 32);
    }

    fn run(agent_secret: &str, agent_fp: &str, exporter_b: &[u8]) -> (bool, bool) {
        let (ws, msg_a) = Exchange::start(Role::Workstation, "T1CK", "SECRET00", "fp");
        let (ag, msg_b) = Exchange::start(Role::Agent, "T1CK", agent_secret, agent_fp);
        let ws_key = ws.finish(&msg_b).unwrap();
        let ag_key = ag.finish(&msg_a).unwrap();
        let from_agent = ag_key.confirm(Role::Agent, exporter_b, b"");
        let from_ws = ws_key.confirm(Role::Workstation, b"exporter", b"csr");
        (
            ws_key.verify(Role::Agent, b"exporter", b"", &from_agent),
            ag_key.verify(Role::Workstation, exporter_b, b"csr", &from_ws),
        )
    }

    #[test]
    fn confirmations_hold_only_for_the_same_code_ca_and_connection() {
        assert_eq!(run("SECRET00", "fp", b"exporter"), (true, true));
        assert_eq!(run("SECRET01", "fp", b"exporter"), (false, false));
        assert_eq!(run("SECRET00", "other-ca", b"exporter"), (false, false));
        assert_eq!(run("SECRET00", "fp", b"relayed"), (false, false));
        // A confirmation is not accepted for the other role.
        let (ws, msg_a) = Exchange::start(Role::Workstation, "T", "S", "fp");
        let (ag, msg_b) = Exchange::start(Role::Agent, "T", "S", "fp");
        let (ws, ag) = (ws.finish(&msg_b).unwrap(), ag.finish(&msg_a).unwrap());
        let mine = ws.confirm(Role::Workstation, b"e", b"");
        assert!(!ag.verify(Role::Agent, b"e", b"", &mine));
        assert!(!ag.verify(Role::Workstation, b"e", b"", "not hex"));
    }
}
