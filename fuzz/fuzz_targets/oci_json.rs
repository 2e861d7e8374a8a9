//! OCI manifests, indexes and image configs as the cache, registries and archives give them:
//! any bytes parse or are an error, and what parses writes back canonically to bytes that
//! parse to the same value (the bytes the cache hashes are stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::layout::{ImageConfigSummary, ImageIndex, ImageManifest};

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let bytes = canonical_json::to_vec(&value).expect("a parsed value serializes");
        let again: T = serde_json::from_slice(&bytes).expect("canonical bytes parse");
        assert_eq!(value, again);
        assert_eq!(canonical_json::to_vec(&again).unwrap(), bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ImageManifest>(data);
    round_trip::<ImageIndex>(data);
    let _ = serde_json::from_slice::<ImageConfigSummary>(data);
});
