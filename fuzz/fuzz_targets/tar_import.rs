//! `cache import` of any bytes (a tar, or not): an import succeeds or fails, never panics, and
//! leaves the cache whole (`verify` finds no problem either way). One cache per process, on
//! the temporary directory (`TMPDIR`: a tmpfs makes runs faster), emptied now and then.
#![no_main]

use std::sync::Mutex;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lkpkg_engine::ops::cache::Store;

struct Cache {
    _dir: tempfile::TempDir,
    store: Store,
    runs: u64,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Mutex::new(Cache {
            _dir: dir,
            store,
            runs: 0,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut cache = cache().lock().unwrap();
    cache.runs += 1;
    let imported = cache.store.import(data);
    let report = cache.store.verify(false).expect("verify runs");
    assert!(
        report.problems.is_empty(),
        "import gave {imported:?} and left {:?}",
        report.problems
    );
    if cache.runs % 256 == 0 {
        cache.store.clean().unwrap();
    }
});
