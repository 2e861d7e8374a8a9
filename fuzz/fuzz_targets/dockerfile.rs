//! The Dockerfile scanner (instructions, continuations, `ARG` substitution, `FROM` and
//! `COPY --from` images): any text, with build arguments taken from its first line, reads
//! without a panic and every substitution stays within its bound.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let args: BTreeMap<String, String> = first
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let read = lkpkg_engine::ops::fuzzing::read_dockerfile(rest, &args);
    for image in &read.images {
        assert!(image.reference.len() <= lkpkg_engine::ops::fuzzing::MAX_EXPANSION * 2);
    }
});
