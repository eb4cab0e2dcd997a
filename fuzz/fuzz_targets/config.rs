//! The agent's config parser: any text is either a valid, validated config
//! or an error naming what is wrong; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) =
            fileagent::agent::config::Config::parse(text, std::path::Path::new("fuzz.toml"))
        {
            // What parses must also pass validation (parse validates).
            assert!(config.validate().is_ok());
        }
    }
});
