//! lkpkg's on-disk and wire formats, as plain data: no I/O, no async.
//!
//! - [`digest`]: `sha256:<hex>` content digests.
//! - [`reference`](mod@reference): linuxkit's canonical image references (`docker.io/org/image:tag`).
//! - [`canonical_json`]: byte-stable JSON (sorted keys) for everything lkpkg hashes.
//! - [`layout`]: the OCI image layout of the linuxkit cache (`oci-layout`, `index.json`, blobs).
//! - [`build_record`]: what lkpkg remembers of each build, by build key.
//! - [`index_db`]: the redb index beside the layout: table definitions and record encodings.
//!
//! `FORMAT.md` beside this crate documents the layout byte by byte.

pub mod build_record;
pub mod canonical_json;
pub mod digest;
pub mod index_db;
pub mod layout;
pub mod reference;
