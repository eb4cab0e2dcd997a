//! Whether a file name from the agent can be a file here. The agent keeps
//! names a Linux file system takes; Windows refuses some of them or, worse,
//! takes them as something else (`aux.gcode` is the AUX device, `part.` is
//! `part`, `a:b` opens a stream of `a`). `get` refuses those with a clear
//! message, never writing a wrong file. The rules are data, so the Windows
//! ones are tested on every system.

/// A system's rules for the last component of a path.
#[derive(Debug)]
pub(crate) struct NameRules {
    /// Characters a name may not hold (besides control characters, where
    /// `no_control` says so).
    forbidden: &'static str,
    /// Control characters (below 0x20) are refused.
    no_control: bool,
    /// Names (compared without case, and without everything from their
    /// first dot) that are devices.
    reserved: &'static [&'static str],
    /// A trailing dot or space is dropped by the system.
    no_trailing_dot_or_space: bool,
}

/// Windows (Win32 paths): `<>:"/\|?*`, control characters, the device names
/// and a trailing dot or space. (Used on Windows; tested everywhere.)
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) const WINDOWS: NameRules = NameRules {
    forbidden: "<>:\"/\\|?*",
    no_control: true,
    reserved: &[
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
        "COM9", "COM¹", "COM²", "COM³", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7",
        "LPT8", "LPT9", "LPT¹", "LPT²", "LPT³", "CONIN$", "CONOUT$",
    ],
    no_trailing_dot_or_space: true,
};

/// Unix: only `/` (and NUL, which no name from the agent holds).
#[cfg_attr(windows, allow(dead_code))]
pub(crate) const UNIX: NameRules = NameRules {
    forbidden: "/\0",
    no_control: false,
    reserved: &[],
    no_trailing_dot_or_space: false,
};

/// The rules of the system this runs on.
#[cfg(windows)]
pub(crate) const HERE: NameRules = WINDOWS;
/// The rules of the system this runs on.
#[cfg(not(windows))]
pub(crate) const HERE: NameRules = UNIX;

impl NameRules {
    /// Why `name` cannot be a file name under these rules, if it cannot.
    pub(crate) fn problem(&self, name: &str) -> Option<String> {
        if let Some(c) = name
            .chars()
            .find(|c| self.forbidden.contains(*c) || (self.no_control && c.is_control()))
        {
            return Some(format!(
                "{name:?} holds {c:?}, which file names here cannot"
            ));
        }
        let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
        if let Some(device) = self.reserved.iter().find(|r| r.eq_ignore_ascii_case(stem)) {
            return Some(format!(
                "{name:?} would name the device {device} here, not a file"
            ));
        }
        if self.no_trailing_dot_or_space && name.ends_with(['.', ' ']) {
            return Some(format!(
                "{name:?} ends with a dot or a space, which this system drops (it would write {:?})",
                name.trim_end_matches(['.', ' '])
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_refuses_devices_reserved_characters_and_trailing_dots() {
        for ok in [
            "cube.gcode",
            "Benchy v2 (0.2mm) #1 50%.gcode",
            "console.gcode",
            "aux2.gcode",
        ] {
            assert_eq!(WINDOWS.problem(ok), None, "{ok}");
        }
        let said = |name| WINDOWS.problem(name).unwrap_or_default();
        assert!(said("aux.gcode").contains("device AUX"));
        assert!(said("CON").contains("device CON"));
        assert!(said("com1.tar.gz").contains("device COM1"));
        assert!(said("nul .gcode").contains("device NUL"));
        assert!(said("a:b.gcode").contains("':'"));
        assert!(said("what?.gcode").contains("'?'"));
        assert!(said("tab\there.gcode").contains("'\\t'"));
        assert!(said("part.").contains("would write \"part\""));
        assert!(said("part ").contains("dot or a space"));
    }

    #[test]
    fn unix_takes_what_the_agent_keeps() {
        for name in ["aux.gcode", "a:b.gcode", "part.", "what?.gcode", "CON"] {
            assert_eq!(UNIX.problem(name), None, "{name}");
        }
        assert!(UNIX.problem("a/b").is_some());
    }
}
