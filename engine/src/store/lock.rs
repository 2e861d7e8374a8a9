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

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use super::StoreError;

/// A held write lock on `<cache>/.lock`; dropping it unlocks.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl CacheLock {
    /// Blocks until the lock is ours.
    pub fn acquire(root: &Path) -> Result<CacheLock, StoreError> {
        let path = root.join(lkpkg_cache_format::layout::LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let whole_file = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        loop {
            match fcntl(&file, FcntlArg::F_OFD_SETLKW(&whole_file)) {
                Ok(_) => return Ok(CacheLock { _file: file }),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(StoreError::io(&path, io::Error::from(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

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
