//! lkpkg's engine: everything that does work. The `lkpkg` binary only parses flags, calls
//! [`ops`], and renders what comes back: `ops` is the engine's whole public surface (its
//! functions, and the types they take and return, re-exported there). Every other module is
//! `pub(crate)`, `unreachable_pub` keeps it so, and `layering` tests which module may use
//! which.
//!
//! The pipeline of one build, each stage a module:
//! `discover` → `build_yml` → `package` (tags, `@lkt:` arguments) → `graph` → `schedule`
//! (keys and decisions; a unit to build is first asked of `remote`, then built by `executor`
//! through `buildkit`) → `store`. Registries: `registry` (the protocol, on oci-client) and
//! `transfer` (images between the store and registries), neither of which knows packages.

#![warn(unreachable_pub)]

pub(crate) mod build_args;
pub(crate) mod build_yml;
pub(crate) mod buildkit;
mod confine;
pub(crate) mod discover;
pub(crate) mod dockerfile;
pub(crate) mod error;
pub(crate) mod executor;
pub(crate) mod fingerprint;
pub(crate) mod graph;
#[cfg(test)]
mod layering;
pub mod ops;
pub(crate) mod package;
pub(crate) mod registry;
pub(crate) mod remote;
pub(crate) mod schedule;
pub(crate) mod store;
pub(crate) mod tag;
pub(crate) mod tag_template;
pub(crate) mod transfer;
pub(crate) mod workspace;
