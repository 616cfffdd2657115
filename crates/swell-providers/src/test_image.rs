//! The VM image the qemu provider's tests boot (this crate's and the server's), built
//! by scripts/build-vm-image on first use.

use std::path::PathBuf;
use std::process::Command;

/// The image the tests boot.
pub const IMAGE: &str = "busybox-httpd";

/// The images directory ([`crate::qemu::default_images_dir`]), with the test image
/// built if it is missing.
pub fn images_dir() -> PathBuf {
    let dir = crate::qemu::default_images_dir();
    if !dir.join(IMAGE).join("image.json").is_file() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-vm-image");
        let status = Command::new(&script)
            .arg("--no-demo-app")
            .arg(&dir)
            .status()
            .expect("running scripts/build-vm-image");
        assert!(
            status.success(),
            "scripts/build-vm-image failed (needs linux-image-amd64 and busybox-static; scripts/test installs them)"
        );
    }
    dir
}
