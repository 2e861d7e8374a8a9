//! lkpkg's engine: everything that does work. The `lkpkg` binary only parses flags, calls one
//! function of [`ops`]-like entry points here, and renders what comes back.
//!
//! The pipeline of one build, each stage a module:
//! `discover` → `build_yml` → `package` (tags, `@lkt:` arguments) → `graph` → `schedule`
//! (keys and decisions; a unit to build is first asked of `remote`, then built by `executor`
//! through `buildkit`) → `store`. Registries: `registry` (the protocol, on oci-client) and
//! `transfer` (images between the store and registries), neither of which knows packages.

pub mod build_args;
pub mod build_yml;
pub(crate) mod buildkit;
mod confine;
pub mod discover;
pub mod dockerfile;
pub mod error;
pub mod executor;
pub mod fingerprint;
pub mod graph;
pub mod ops;
pub mod package;
pub mod registry;
pub mod remote;
pub mod schedule;
pub mod store;
pub mod tag;
pub mod tag_template;
pub mod transfer;
pub mod workspace;
