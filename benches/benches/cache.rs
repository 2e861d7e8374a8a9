//! Cache lookups: `cache ls` and a by-name lookup through lkpkg's redb index, side by side with
//! what linuxkit does per lookup (read and parse `index.json`, scan for the name), on caches of
//! 100, 1,000 and 10,000 names; and publishing into each: one name, and eight names one
//! after another beside eight threads at once (which the store commits in groups).
//!
//! Setup is direct (no imports): one small image's blobs, and an `index.json` naming the same
//! manifest N times, written in linuxkit's shape; opening the store indexes it once.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex, ImageManifest, Platform};
use lkpkg_engine::ops::cache::Store;

const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn write_blob(root: &Path, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    std::fs::write(root.join(layout::blob_path(&digest)), bytes).unwrap();
    digest
}

fn name_of(i: usize) -> String {
    format!("docker.io/linuxkit/pkg{i}:0123456789abcdef0123456789abcdef01234567")
}

/// A cache with `n` names, in a temporary directory.
fn cache_with(n: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join(layout::BLOBS_DIR)).unwrap();
    std::fs::write(
        root.join(layout::OCI_LAYOUT_FILE),
        layout::OCI_LAYOUT_CONTENT,
    )
    .unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = write_blob(root, config);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(layout::MEDIA_TYPE_OCI_MANIFEST.into()),
        config: Descriptor::new(
            layout::MEDIA_TYPE_OCI_CONFIG,
            config_digest,
            config.len() as u64,
        ),
        layers: Vec::new(),
        annotations: Default::default(),
        extra: Default::default(),
    };
    let bytes = canonical_json::to_vec(&manifest).unwrap();
    let manifest_digest = write_blob(root, &bytes);
    let mut index = ImageIndex::empty();
    for i in 0..n {
        let mut desc = Descriptor::new(
            layout::MEDIA_TYPE_OCI_MANIFEST,
            manifest_digest,
            bytes.len() as u64,
        );
        desc.platform = Some(Platform::linux("amd64"));
        desc.annotations
            .insert(layout::REF_NAME_ANNOTATION.into(), name_of(i));
        index.manifests.push(desc);
    }
    std::fs::write(
        root.join(layout::INDEX_FILE),
        canonical_json::to_vec_index_json(&index).unwrap(),
    )
    .unwrap();
    let store = Store::open(root).unwrap();
    (dir, store)
}

/// linuxkit's way: parse index.json and scan for the name, on every lookup.
fn lookup_by_parsing(root: &Path, name: &str) -> Option<Descriptor> {
    let bytes = std::fs::read(root.join(layout::INDEX_FILE)).unwrap();
    let index: ImageIndex = serde_json::from_slice(&bytes).unwrap();
    index
        .manifests
        .into_iter()
        .find(|m| m.ref_name() == Some(name))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache");
    group.sample_size(20);
    for n in SIZES {
        let (dir, store) = cache_with(n);
        let wanted = name_of(n / 2);
        group.bench_with_input(BenchmarkId::new("ls", n), &n, |b, _| {
            b.iter(|| black_box(store.names().unwrap().len()))
        });
        group.bench_with_input(BenchmarkId::new("lookup_redb", n), &n, |b, _| {
            b.iter(|| black_box(store.lookup(&wanted).unwrap()))
        });
        group.bench_with_input(
            BenchmarkId::new("lookup_parse_index_json", n),
            &n,
            |b, _| b.iter(|| black_box(lookup_by_parsing(dir.path(), &wanted))),
        );
        // One name published (or re-pointed) into a cache of `n`, as a build does per unit:
        // the cost a first build of a large tree pays once per unit.
        let manifest = store.lookup(&name_of(0)).unwrap().unwrap();
        let new_name = name_of(n);
        group.bench_with_input(BenchmarkId::new("publish_one", n), &n, |b, _| {
            b.iter(|| {
                store
                    .set_names(vec![(new_name.clone(), manifest.clone())])
                    .unwrap()
            })
        });
        // Eight names at once, as eight units finishing together publish them: one thread
        // each (committed in groups) beside one after another (a commit each).
        let eight: Vec<String> = (0..8).map(|i| name_of(n + 1 + i)).collect();
        group.bench_with_input(BenchmarkId::new("publish_8_in_turn", n), &n, |b, _| {
            b.iter(|| {
                for name in &eight {
                    store
                        .set_names(vec![(name.clone(), manifest.clone())])
                        .unwrap()
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("publish_8_threads", n), &n, |b, _| {
            b.iter(|| {
                std::thread::scope(|scope| {
                    for name in &eight {
                        let (store, manifest) = (&store, &manifest);
                        scope.spawn(move || {
                            store
                                .set_names(vec![(name.clone(), manifest.clone())])
                                .unwrap()
                        });
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
