//! lkpkg's end-to-end suite: it drives the `lkpkg` binary against fixture git repositories
//! built in temporary directories, the real Docker engine and real third-party tools (git,
//! skopeo, docker). Tests that need an engine fail when it is missing; they never skip.

mod agreement;
mod bounds;
mod build;
mod builders;
mod buildkit;
mod cache;
mod compat;
mod graph;
mod incremental;
mod kill;
mod malformed;
mod registry;
mod snapshots;
mod support;
mod tags;
