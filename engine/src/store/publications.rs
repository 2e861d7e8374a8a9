//! Group commit of publications: the names that threads of one process publish while another
//! publication holds the cache lock go into the next `index.json` replacement together.
//!
//! `index.json` is one file in linuxkit's format, so each publication rewrites, `fsync`s and
//! renames all of it, and re-indexes nothing only because redb is committed with it: a cost
//! that grows with the cache (about 5 ms at 1,000 names, 58 ms at 10,000 on this project's
//! machines; `benches/benches/cache.rs`, `publish_one`). A build publishes twice per package
//! (its per-arch names, then its multi-arch index), so one publication at a time makes a first
//! build of a large tree quadratic. Databases solve the same problem with a group commit, and
//! so does this module:
//!
//! - a publisher queues its [`Publication`] and waits; the first waiter finding no commit under
//!   way becomes the *leader*: it takes the lock once, reads `index.json` once, and stages every
//!   queued publication in order against the index as the earlier ones left it;
//! - each publication is checked on its own ([`Store::check_entry`]): one whose content is
//!   missing or wrong fails alone, the others are published;
//! - what staged is written as one `index.json` replacement and one redb commit
//!   ([`Store::apply_locked`]), with the same crash-safety steps as a single publication: a
//!   kill leaves the old index or the new, never part of a batch;
//! - a failure of the commit itself (a full disk, the lock's timeout) is the leader's; the
//!   others go back to the queue and each tries again, so every caller gets its own error,
//!   except for a lock timeout or an interrupt, which end every wait at once rather than
//!   one timeout after another.
//!
//! Only publications of names are batched. Removals (`rm`, `gc`) and pins keep their own short
//! locked sections: they delete blobs, and batching them would widen what a kill can leave.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex, MEDIA_TYPE_OCI_INDEX};

use super::blobs::{self, TempBlob};
use super::publish::CheckedEntry;
use super::{CacheLock, Store, StoreError};

/// One publication: what a caller asks to be named.
#[derive(Debug)]
pub(crate) enum Publication {
    /// Names pointed at root descriptors (each replaces every entry with that name), all or
    /// none.
    Names(Vec<(String, Descriptor)>),
    /// The multi-arch index under `name`, merged with the one the cache holds (see
    /// [`super::Ingest::merge_index`]); its blob is written under the same lock.
    Index {
        name: String,
        manifests: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    },
}

/// What a publication gave: the index descriptor it wrote, for [`Publication::Index`].
pub(crate) type Published = Result<Option<Descriptor>, StoreError>;

#[derive(Debug)]
struct Request {
    id: u64,
    publication: Publication,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Request>,
    settled: HashMap<u64, Published>,
    /// A leader is committing a batch.
    committing: bool,
    next_id: u64,
}

/// The process's queue of publications for one store.
#[derive(Debug, Default)]
pub(crate) struct Publications {
    queue: Mutex<Queue>,
    changed: Condvar,
    /// Batches committed (`index.json` replacements), for tests.
    #[cfg(test)]
    commits: std::sync::atomic::AtomicUsize,
}

impl Publications {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the queue leaves plain data: still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publications queued behind the batch being committed, and whether one is.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> (usize, bool) {
        let queue = self.queue();
        (queue.waiting.len(), queue.committing)
    }

    #[cfg(test)]
    pub(crate) fn commits(&self) -> usize {
        self.commits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What became of a request in a batch.
enum Fate {
    Settled(Published),
    /// The batch's commit failed for a reason the request should meet itself.
    Retry(Request),
}

impl Store {
    /// Publishes under the lock, together with what other threads publish meanwhile.
    pub(crate) fn publish(&self, publication: Publication) -> Published {
        let publications = &self.publications;
        let mut queue = publications.queue();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiting.push_back(Request { id, publication });
        loop {
            if let Some(published) = queue.settled.remove(&id) {
                return published;
            }
            if queue.committing {
                queue = publications
                    .changed
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            queue.committing = true;
            let batch: Vec<Request> = queue.waiting.drain(..).collect();
            drop(queue);
            let ids: Vec<u64> = batch.iter().map(|r| r.id).collect();
            let mut leading = Leading {
                publications,
                ids,
                fates: Vec::new(),
            };
            leading.fates = self.commit_batch(batch, id);
            drop(leading);
            queue = publications.queue();
        }
    }

    /// Stages and commits one batch under one lock; `leader` is the request whose thread
    /// commits it (a failure of the commit itself is its own).
    fn commit_batch(&self, batch: Vec<Request>, leader: u64) -> Vec<(u64, Fate)> {
        let size = batch.len();
        let span = tracing::debug_span!("publish", publications = size).entered();
        let locked = self
            .lock()
            .and_then(|lock| self.sync_locked(&lock).map(|index| (lock, index)));
        let (lock, index) = match locked {
            Ok(locked) => locked,
            Err(e) => return fail_batch(batch, e, leader),
        };
        let mut staged: Vec<CheckedEntry> = Vec::new();
        let mut accepted: Vec<(Request, Option<Descriptor>)> = Vec::new();
        let mut fates = Vec::new();
        for request in batch {
            match self.stage(&lock, &index, &staged, &request.publication) {
                Ok((entries, written)) => {
                    for entry in entries {
                        // The last publication of a name in the batch wins, as if each had
                        // been committed in turn.
                        match staged.iter_mut().find(|e| e.name == entry.name) {
                            Some(earlier) => *earlier = entry,
                            None => staged.push(entry),
                        }
                    }
                    accepted.push((request, written));
                }
                Err(e) => fates.push((request.id, Fate::Settled(Err(e)))),
            }
        }
        if !staged.is_empty()
            && let Err(e) = self.apply_locked(&lock, index, staged, &[], None)
        {
            let requests = accepted.into_iter().map(|(r, _)| r).collect();
            fates.extend(fail_batch(requests, e, leader));
            return fates;
        }
        #[cfg(test)]
        self.publications
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        drop(lock);
        drop(span);
        fates.extend(
            accepted
                .into_iter()
                .map(|(request, written)| (request.id, Fate::Settled(Ok(written)))),
        );
        fates
    }

    /// Checks one publication against the index as the batch has it so far.
    fn stage(
        &self,
        lock: &CacheLock,
        index: &ImageIndex,
        staged: &[CheckedEntry],
        publication: &Publication,
    ) -> Result<(Vec<CheckedEntry>, Option<Descriptor>), StoreError> {
        match publication {
            Publication::Names(names) => {
                let entries = names
                    .iter()
                    .map(|(name, desc)| self.check_entry(name.clone(), desc.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((entries, None))
            }
            Publication::Index {
                name,
                manifests,
                annotations,
            } => {
                let current = staged
                    .iter()
                    .rev()
                    .find(|e| &e.name == name)
                    .map(|e| &e.desc)
                    .or_else(|| {
                        index
                            .manifests
                            .iter()
                            .rev()
                            .find(|m| m.ref_name() == Some(name))
                    });
                let desc = self.write_merged_index(lock, name, current, manifests, annotations)?;
                let entry = self.check_entry(name.clone(), desc.clone())?;
                Ok((vec![entry], Some(desc)))
            }
        }
    }

    /// Writes the multi-arch index merging `manifests` into `current` (what `name` holds):
    /// entries whose os/arch/variant match a new manifest are replaced, others kept,
    /// attestation manifests of a replaced image dropped. Under the lock, and published in the
    /// same locked section, so that no `gc` can come between: it needs no pin.
    fn write_merged_index(
        &self,
        _lock: &CacheLock,
        name: &str,
        current: Option<&Descriptor>,
        manifests: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor, StoreError> {
        let mut entries: Vec<Descriptor> = Vec::new();
        if let Some(current) = current {
            if layout::is_index_media_type(&current.media_type) {
                if let Ok(old) = self.read_index(&current.digest) {
                    entries = old.manifests;
                }
            } else if current.platform.is_some() {
                let mut single = current.clone();
                single.annotations.clear();
                entries.push(single);
            }
        }
        let new_index = ImageIndex {
            manifests: layout::merge_index_entries(entries, manifests),
            annotations: annotations.clone(),
            ..ImageIndex::empty()
        };
        let bytes = canonical_json::to_vec(&new_index).map_err(|e| StoreError::Json {
            what: format!("index of `{name}`"),
            message: e.to_string(),
        })?;
        let mut tmp = TempBlob::create(self.root())?;
        tmp.copy_from(bytes.as_slice())?;
        let (file, digest, size) = tmp.finish()?;
        blobs::install(self.root(), file, &digest)?;
        Ok(Descriptor::new(MEDIA_TYPE_OCI_INDEX, digest, size))
    }
}

/// A batch whose lock or commit failed with `error`: the leader's request gets it; a lock
/// timeout, an interrupt or a read-only cache end every request's wait (a copy each); the
/// others retry, each meeting its own error.
fn fail_batch(batch: Vec<Request>, error: StoreError, leader: u64) -> Vec<(u64, Fate)> {
    let owner = batch
        .iter()
        .find(|r| r.id == leader)
        .or(batch.first())
        .map(|r| r.id);
    let mut fates = Vec::with_capacity(batch.len());
    for request in batch {
        if Some(request.id) == owner {
            continue;
        }
        let id = request.id;
        let fate = match same_for_everyone(&error) {
            Some(copy) => Fate::Settled(Err(copy)),
            None => Fate::Retry(request),
        };
        fates.push((id, fate));
    }
    if let Some(owner) = owner {
        fates.push((owner, Fate::Settled(Err(error))));
    }
    fates
}

/// A copy of an error every waiter of the batch would meet at once.
fn same_for_everyone(error: &StoreError) -> Option<StoreError> {
    match error {
        StoreError::LockTimeout {
            path,
            seconds,
            holder,
        } => Some(StoreError::LockTimeout {
            path: path.clone(),
            seconds: *seconds,
            holder: holder.clone(),
        }),
        StoreError::Interrupted => Some(StoreError::Interrupted),
        StoreError::ReadOnly { root } => Some(StoreError::ReadOnly { root: root.clone() }),
        _ => None,
    }
}

/// The leader's hold on the queue: when dropped (the batch committed, or its thread
/// panicked) it settles the batch, puts retries back first in line and wakes the waiters.
struct Leading<'p> {
    publications: &'p Publications,
    ids: Vec<u64>,
    fates: Vec<(u64, Fate)>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut queue = self.publications.queue();
        queue.committing = false;
        let mut retries = Vec::new();
        for (id, fate) in std::mem::take(&mut self.fates) {
            match fate {
                Fate::Settled(published) => {
                    queue.settled.insert(id, published);
                }
                Fate::Retry(request) => retries.push(request),
            }
        }
        // Retries go first in line, in their order.
        for request in retries.into_iter().rev() {
            queue.waiting.push_front(request);
        }
        // A panic left requests unsettled: their callers get an error, never a wait for ever.
        for id in &self.ids {
            let retried = queue.waiting.iter().any(|r| r.id == *id);
            if !retried && !queue.settled.contains_key(id) {
                queue.settled.insert(
                    *id,
                    Err(StoreError::Internal(
                        "a publication in the same batch panicked".into(),
                    )),
                );
            }
        }
        self.publications.changed.notify_all();
    }
}
