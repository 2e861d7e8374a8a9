//! The scheduler's decisions with a fake executor and no daemon: fresh, rebuilt with a reason,
//! early cutoff, failures skipping dependents, `--keep-going`, cancellation.
//!
//! The fake writes real (tiny) images into a real store on a temporary cache, so freshness is
//! decided exactly as in a build: by keys, records and the blobs the cache holds.

mod bounds;
mod failures;
mod fakes;
mod fixture;
mod freshness;
mod platforms;
mod remote;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lkpkg_cache_format::layout::{Descriptor, Platform as OciPlatform};

use super::*;
use crate::package::Loader;
use crate::tag::TagOptions;

use fakes::{Answer, Fake, FakeRemote};
use fixture::{APP, BASE, Fixture, build_reason, fresh_reason, skipped};
