//! What a file in the spool may be called: a plain name, safe to create in
//! `ready/`, that is not taken for a hidden or temporary file, whoever sent
//! it (a workstation, or a file dropped into `ready/` by hand).

use super::SpoolError;

/// Longest file name in bytes (the usual file-system limit).
pub(crate) const MAX_NAME_LEN: usize = 255;
/// Name endings of temporary files, which are never accepted or listed.
pub(crate) const TEMP_SUFFIXES: [&str; 3] = [".part", ".tmp", "~"];

/// Checks that `name` is a plain file name that is safe to create in
/// `ready/` and will not be taken for a hidden or temporary file.
pub(crate) fn validate_name(name: &str) -> Result<(), SpoolError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 255 bytes")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator ('/' or '\\'); send a plain file name")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.starts_with('.') {
        Some("it starts with a dot (hidden or relative names are not allowed)")
    } else if TEMP_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        Some("it ends like a temporary file (.part, .tmp or ~)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SpoolError::BadName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        let long = "x".repeat(256);
        for bad in [
            "",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "..",
            ".hidden",
            "a\0b",
            "a\nb",
            "x\u{7f}",
            &long,
            "f.part",
            "f~",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "cube.gcode",
            "Benchy v2 (0.2mm).gcode",
            "日本語.gcode",
            &"x".repeat(255),
        ] {
            validate_name(good).unwrap();
        }
    }
}
