//! Configuration files: any text loads or fails with the file, key and reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bellwether::config::Config::from_toml(text, std::path::Path::new("fuzz.toml"));
    }
});
