//! The corpus of real documents (`tests/corpus/`, its README says who wrote each), and the
//! canonical form every round trip is compared with.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One document of the corpus: its path under `tests/corpus/` and its exact bytes.
pub struct Document {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The corpus's kinds, one directory each.
pub const LAYOUT_INDEXES: &str = "layout";
pub const INDEXES: &str = "index";
pub const MANIFESTS: &str = "manifest";
pub const CONFIGS: &str = "config";
pub const DOCKER_ARCHIVES: &str = "docker-archive";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every document of one kind, by name.
pub fn corpus(kind: &str) -> Vec<Document> {
    let mut out: Vec<Document> = std::fs::read_dir(root().join(kind))
        .unwrap_or_else(|e| panic!("tests/corpus/{kind}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| Document {
            name: format!("{kind}/{}", path.file_name().unwrap().to_string_lossy()),
            bytes: std::fs::read(&path).unwrap(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "tests/corpus/{kind} is empty");
    out
}

/// The original, as a generic JSON value: nothing interpreted, nothing dropped.
pub fn value(doc: &Document) -> Value {
    serde_json::from_slice(&doc.bytes).unwrap_or_else(|e| panic!("{}: not JSON: {e}", doc.name))
}

/// Where two JSON values differ, one line per difference: `- path` (only in `original`),
/// `+ path` (only in `written`), `~ path: original → written`.
pub fn differences(original: &Value, written: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("", original, written, &mut out);
    out
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, av) in a {
                let sub = format!("{path}/{key}");
                match b.get(key) {
                    Some(bv) => diff(&sub, av, bv, out),
                    None => out.push(format!("- {sub}")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("+ {path}/{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}/{i}"), av, bv, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("~ {path}: {a} → {b}")),
    }
}

/// The README's table gives every file's sha256: the bytes are the producer's, unchanged.
#[test]
fn corpus_files_are_the_bytes_recorded_here() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let recorded: Vec<(&str, &str)> = readme
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let (name, digest) = (cells.next()?, cells.next()?);
            Some((name, digest.strip_prefix("sha256:")?))
        })
        .collect();
    let mut files = 0;
    for kind in [LAYOUT_INDEXES, INDEXES, MANIFESTS, CONFIGS, DOCKER_ARCHIVES] {
        for doc in corpus(kind) {
            files += 1;
            let (_, digest) = recorded
                .iter()
                .find(|(name, _)| *name == doc.name)
                .unwrap_or_else(|| panic!("{} is not in tests/corpus/README.md", doc.name));
            assert_eq!(
                lkpkg_cache_format::digest::Digest::of(&doc.bytes).hex(),
                *digest,
                "{}",
                doc.name
            );
        }
    }
    assert_eq!(
        files,
        recorded.len(),
        "the README lists a file that is not there"
    );
}
