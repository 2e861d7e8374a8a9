//! build.yml's decoder (yaml.v3's rules, the Go-JSON round trip, the field checks): any bytes
//! give a `BuildYml` or an error, never a panic, a hang or unbounded memory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lkpkg_engine::ops::fuzzing::parse_build_yml(Path::new("pkg/build.yml"), Path::new("pkg"), text);
    }
});
