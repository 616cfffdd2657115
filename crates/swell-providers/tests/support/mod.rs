//! What the qemu provider's test files share: the test image (built on first use), a
//! unique owner tag per test, and a guard that SIGKILLs a test's QEMU processes when it
//! ends, passed or failed.

use std::sync::atomic::{AtomicU32, Ordering};
pub use swell_providers::test_image::{IMAGE, images_dir};

/// An owner tag no other test (of this or another process) uses: `<prefix>-<pid>-<n>`.
pub fn unique_owner(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// SIGKILLs the QEMU processes it was given when dropped.
#[derive(Default)]
pub struct VmGuard(std::sync::Mutex<Vec<i32>>);

impl VmGuard {
    /// Kills `pid` when the guard goes.
    pub fn watch(&self, pid: i32) {
        self.0.lock().unwrap().push(pid);
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap().iter() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
