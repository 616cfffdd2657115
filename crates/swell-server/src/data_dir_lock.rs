//! One server per data directory: an exclusive `flock` on `<data_dir>/swell.lock`, held
//! for the server's life. Two servers on one data directory would both adopt its
//! instances (two controllers acting on one fleet); the kernel drops the lock when the
//! holder exits, however it exits (kill -9 included), so recovery needs no cleanup.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "swell.lock";

/// How long a lock whose recorded holder no longer runs is waited for.
const GONE_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the data directory's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another process (another `swell serve`) holds it.
    #[error(
        "another swell server ({holder}) holds the data directory {dir} (lock file {lock}); \
         only one server may manage a data directory's groups: stop the other one, \
         or give this one its own --data-dir"
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Who holds it: `pid N` as the holder wrote it, or `pid unknown`.
        holder: String,
    },
    /// The lock file cannot be opened, locked or written.
    #[error("cannot lock the data directory ({lock}): {source}")]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    // Held only for its open file description, which carries the lock. Opened with
    // O_CLOEXEC (Rust's default), so no instance process inherits it and outlives us
    // holding it.
    _file: File,
}

impl DataDirLock {
    /// Takes the lock without waiting and writes this process's pid into the file.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, DataDirLockError> {
        let lock = data_dir.join(LOCK_FILE);
        let io = |source| DataDirLockError::Io {
            lock: lock.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        let mut waited_since = None;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    // The holder may not have written its pid yet: then it is unknown.
                    let _ = (&mut file).take(64).read_to_string(&mut text);
                    let _ = file.seek(SeekFrom::Start(0));
                    let pid = text.trim().parse::<u32>().ok();
                    // A holder that is gone (killed) leaves the lock to a child it was
                    // forking at that moment, until the child's `exec` closes it: a
                    // restart right after a kill -9 waits for that, briefly.
                    let gone = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                    let started = *waited_since.get_or_insert_with(std::time::Instant::now);
                    if gone && started.elapsed() < GONE_HOLDER_WAIT {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                    return Err(DataDirLockError::Held {
                        dir: data_dir.to_path_buf(),
                        lock,
                        holder: pid.map_or("pid unknown".to_string(), |pid| format!("pid {pid}")),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let written = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        // flock locks belong to the open file description: a second open in the same
        // process conflicts just as another process's would.
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("another swell server"), "{text}");
        drop(first);
        // Another test of this binary may fork (to start a process) while the lock is
        // held: until its child execs, the child holds a copy of the lock's open file
        // description, and the lock with it. So the dropped lock is free once no such
        // copy is left, a moment later at most.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(e) = DataDirLock::acquire(dir.path()) {
            assert!(std::time::Instant::now() < deadline, "still held: {e}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_lock_left_by_a_gone_holder_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        // The recorded holder is a process that has exited; the lock itself is still
        // held (here by this process, as a forking child would hold it) for a moment.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), format!("{}\n", gone.id())).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        DataDirLock::acquire(dir.path()).unwrap();
        release.join().unwrap();
    }
}
