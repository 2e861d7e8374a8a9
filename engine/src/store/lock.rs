//! The cache write lock: an `fcntl` write lock over the whole of `<cache>/.lock`, the same file
//! and byte range linuxkit locks (`util.Lock`, `F_SETLKW`).
//!
//! lkpkg takes it as an *open file description* lock (`F_OFD_SETLKW`). On Linux, OFD locks and
//! classic POSIX record locks conflict with each other, so lkpkg and linuxkit exclude each other;
//! unlike POSIX locks, an OFD lock also excludes another thread of the same process that opened
//! the file separately (each [`CacheLock::acquire`] opens its own description), and it is not
//! dropped when some unrelated descriptor of the file is closed. The lock is released when the
//! [`CacheLock`] is dropped (its descriptor closes), or by the kernel if the process dies.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use super::StoreError;

/// How long to wait for a lock held by someone else before giving up, unless the binary says
/// otherwise ([`set_lock_timeout`], from `LKPKG_LOCK_TIMEOUT`). Writers hold the lock for one
/// publication (milliseconds), so a holder for this long is stuck (stopped, or hung).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The wait set by the binary (`None` inside: for ever).
static TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();
const POLL: Duration = Duration::from_millis(50);
/// How long a wait lasts before it is reported.
const REPORT_AFTER: Duration = Duration::from_secs(1);

/// What to tell the user when the lock is busy, set once by the binary (cargo's "Blocking
/// waiting for file lock"). Without it, nothing is printed.
static WAIT_REPORTER: OnceLock<fn(&str)> = OnceLock::new();
/// Set by the binary on Ctrl-C: waits end at once with [`StoreError::Interrupted`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Where waiting for the lock is reported (once, after `REPORT_AFTER`).
pub fn report_waits_with(reporter: fn(&str)) {
    let _ = WAIT_REPORTER.set(reporter);
}

/// How long a wait for the lock lasts before it fails (`None`: for ever), for the whole
/// process; set once, by the binary.
pub fn set_lock_timeout(timeout: Option<Duration>) {
    let _ = TIMEOUT.set(timeout);
}

/// Ends every wait for the lock (Ctrl-C).
pub fn interrupt_waits() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// A held write lock on `<cache>/.lock`; dropping it unlocks.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl CacheLock {
    /// Takes the lock, waiting while someone else holds it: it says once whom it waits for,
    /// and gives up after the timeout (or on Ctrl-C) with an error that says so.
    pub fn acquire(root: &Path) -> Result<CacheLock, StoreError> {
        let timeout = TIMEOUT.get().copied().unwrap_or(Some(DEFAULT_TIMEOUT));
        Self::acquire_within(root, timeout)
    }

    /// [`CacheLock::acquire`] with an explicit timeout (`None`: wait for ever).
    pub fn acquire_within(root: &Path, timeout: Option<Duration>) -> Result<CacheLock, StoreError> {
        let path = root.join(lkpkg_cache_format::layout::LOCK_FILE);
        let file = open_lock_file(&path)?;
        let started = Instant::now();
        let mut reported = false;
        let mut attempt: u32 = 0;
        loop {
            if try_write_lock(&file, &path)? {
                if attempt > 0 {
                    tracing::debug!(
                        lock = %path.display(),
                        waited_ms = started.elapsed().as_millis() as u64,
                        "took the cache lock after waiting"
                    );
                } else {
                    tracing::trace!(lock = %path.display(), "took the cache lock");
                }
                return Ok(CacheLock { _file: file });
            }
            if attempt == 0 {
                tracing::debug!(lock = %path.display(), holder = %holder(&file), "the cache lock is held: waiting");
            }
            // Writers hold the lock for milliseconds: only a wait that lasts is worth a line.
            if !reported && started.elapsed() >= REPORT_AFTER {
                reported = true;
                if let Some(report) = WAIT_REPORTER.get() {
                    report(&format!(
                        "waiting for the cache lock `{}`, held by {}",
                        path.display(),
                        holder(&file)
                    ));
                }
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(StoreError::Interrupted);
            }
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                return Err(StoreError::LockTimeout {
                    path: path.clone(),
                    seconds: started.elapsed().as_secs(),
                    holder: holder(&file),
                });
            }
            // Short waits first (the common case is a publication by another task), then
            // a steady poll.
            std::thread::sleep(POLL.min(Duration::from_millis(1 << attempt.min(6))));
            attempt += 1;
        }
    }
}

/// The proof a function that reads both indexes together (`index.json` and redb) asks for,
/// instead of a comment saying "the caller holds the lock": the [`CacheLock`] itself, or, on a
/// cache opened read-only, the fact that there is none to take (nobody writes through this
/// process, and a writer elsewhere replaces `index.json` whole by rename). A function that
/// writes either index asks for a [`CacheLock`], which only a writable cache hands out.
pub(crate) trait Consistent {
    /// The lock, when one is held: what writing `index.json` needs.
    fn writer(&self) -> Option<&CacheLock>;
}

impl Consistent for CacheLock {
    fn writer(&self) -> Option<&CacheLock> {
        Some(self)
    }
}

/// A [`Consistent`] view for reading: the lock, or a read-only cache.
pub(crate) enum ReadGuard {
    Held(CacheLock),
    ReadOnly,
}

impl Consistent for ReadGuard {
    fn writer(&self) -> Option<&CacheLock> {
        match self {
            ReadGuard::Held(lock) => Some(lock),
            ReadGuard::ReadOnly => None,
        }
    }
}

/// One unit being built: an OFD lock on one of 4,096 slot files in `<cache>/lkpkg-locks/`,
/// chosen by the unit's build key, so that two processes sharing a cache never build the same
/// key at once (two keys sharing a slot only wait for each other). Slot files are never
/// deleted: removing a lock file while someone waits on it would let a third process lock a new
/// file of the same name. Dropping the claim releases it; so does the kernel if the process dies.
#[derive(Debug)]
pub(crate) struct UnitClaim {
    _file: File,
}

impl UnitClaim {
    /// Claims `key` if no other process has it claimed; `None` when one has.
    pub(crate) fn try_claim(root: &Path, key: &[u8; 32]) -> Result<Option<UnitClaim>, StoreError> {
        let dir = root.join(UNIT_LOCKS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let slot = (u16::from(key[0]) << 4 | u16::from(key[1] >> 4)) & 0x0fff;
        let path = dir.join(format!("{slot:03x}"));
        let file = open_lock_file(&path)?;
        Ok(try_write_lock(&file, &path)?.then_some(UnitClaim { _file: file }))
    }
}

/// The whole file, for writing: linuxkit's byte range.
fn whole_file() -> libc::flock {
    libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| StoreError::io(path, e))
}

/// Takes the OFD write lock on `file` if it is free: `false` when someone holds it.
fn try_write_lock(file: &File, path: &Path) -> Result<bool, StoreError> {
    loop {
        return match fcntl(file, FcntlArg::F_OFD_SETLK(&whole_file())) {
            Ok(_) => Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
            Err(e) => Err(StoreError::io(path, io::Error::from(e))),
        };
    }
}

/// Where the unit claims live.
pub(crate) const UNIT_LOCKS_DIR: &str = "lkpkg-locks";

/// Who holds the lock, as far as the kernel says: a pid for a classic POSIX lock (linuxkit's),
/// none for an open file description lock (another lkpkg).
fn holder(file: &File) -> String {
    let mut probe = whole_file();
    match fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe)) {
        Ok(_) if probe.l_pid > 0 => match command_of(probe.l_pid as u32) {
            Some(comm) => format!(
                "process {} (`{comm}`: linuxkit, or another tool)",
                probe.l_pid
            ),
            None => format!("process {} (linuxkit, or another tool)", probe.l_pid),
        },
        // An OFD lock has no owning process (`l_pid` is -1): the holder is found by the lock
        // lines of the open files' `fdinfo`.
        _ => match ofd_holder(file) {
            Some((pid, comm)) if pid == std::process::id() => {
                format!("this process ({pid}, `{comm}`), in another of its tasks")
            }
            Some((pid, comm)) => format!("process {pid} (`{comm}`)"),
            None => "another lkpkg process".to_owned(),
        },
    }
}

/// A process's command name (`/proc/<pid>/comm`).
fn command_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

/// The process whose open file description holds a write OFD lock on `file`'s inode: the
/// `lock:` lines of `/proc/<pid>/fdinfo/<fd>` (`… OFDLCK ADVISORY WRITE -1 <maj>:<min>:<ino> …`).
/// `None` when none is readable (another user's processes, no `/proc`).
fn ofd_holder(file: &File) -> Option<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let ours = std::process::id();
    let mut own = None;
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            let holds = info.lines().any(|line| {
                line.starts_with("lock:")
                    && line.contains("OFDLCK")
                    && line.contains("WRITE")
                    && line.split_whitespace().any(|field| field == wanted)
            });
            if holds {
                let found = (pid, command_of(pid).unwrap_or_default());
                // The waiter's own description is not locked; another of this process's may
                // be (a thread publishing): said only if no other process holds it.
                if pid != ours {
                    return Some(found);
                }
                own = Some(found);
            }
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A holder that never lets go (a process stopped with SIGSTOP): the waiter gives up after
    /// its timeout with an error naming the lock, instead of waiting for ever in silence.
    #[test]
    fn a_stuck_holder_makes_waiters_give_up_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let _held = CacheLock::acquire(dir.path()).unwrap();
        let root = dir.path().to_owned();
        let started = Instant::now();
        let e = std::thread::spawn(move || {
            CacheLock::acquire_within(&root, Some(Duration::from_millis(300))).unwrap_err()
        })
        .join()
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(matches!(e, StoreError::LockTimeout { .. }), "{e}");
        let message = e.to_string();
        assert!(
            message.contains(".lock") && message.contains("LKPKG_LOCK_TIMEOUT"),
            "{message}"
        );
        // The holder, an OFD lock of this process, is named (not "another lkpkg process").
        assert!(
            message.contains(&format!("this process ({}", std::process::id())),
            "{message}"
        );
    }

    #[test]
    fn excludes_other_threads_of_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let root = dir.path().to_owned();
                let inside = inside.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _lock = CacheLock::acquire(&root).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
