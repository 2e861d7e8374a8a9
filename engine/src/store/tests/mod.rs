//! Store tests on temporary caches, with `docker save` archives made in memory; one module
//! per part of the store they exercise.

mod archives;
mod crash;
mod export;
mod gc;
mod hostile;
mod import;
mod open;
mod pins;
mod publish;
mod repair;
pub(crate) mod written;

use std::collections::BTreeMap;

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::index_db::RefRecord;
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex, Platform};
use redb::ReadableDatabase;

use super::*;

pub(crate) use archives::{docker_save, layer_tar, oci_archive};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn raw_index(store: &Store) -> ImageIndex {
    let bytes = std::fs::read(store.root().join("index.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
