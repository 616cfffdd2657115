//! VM images: a directory per image under the provider's images directory, described
//! by its `image.json`, and each VM's own copy-on-write disk (a qcow2 overlay made with
//! `qemu-img`) when the image has a disk.
//!
//! ```json
//! {"kernel": "vmlinux", "initrd": "initrd.img", "cmdline": "console=ttyS0 quiet",
//!  "disk": "disk.qcow2", "guest_port": 8080}
//! ```
//!
//! Every file name is a plain name inside the image's directory. `kernel` (an ELF
//! `vmlinux` or a bzImage) is booted directly with `initrd` and `cmdline`; without a
//! `kernel` the VM boots its `disk` through the firmware. `guest_port` is the port the
//! guest serves on, which the host forwards an instance's port to. `cloud_init: true`
//! says the image reads a cloud-init NoCloud seed: each VM gets one
//! ([`super::cloud_init`]) with its instance id, hostname, SSH keys and user data.

use crate::ProviderError;
use std::path::{Path, PathBuf};

/// The port a guest serves on when its manifest says nothing.
pub const DEFAULT_GUEST_PORT: u16 = 8080;

/// The manifest's name inside an image directory.
pub const MANIFEST: &str = "image.json";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    initrd: Option<String>,
    #[serde(default)]
    cmdline: String,
    #[serde(default)]
    disk: Option<String>,
    #[serde(default)]
    disk_format: Option<String>,
    #[serde(default = "default_guest_port")]
    guest_port: u16,
    #[serde(default)]
    cloud_init: bool,
}

fn default_guest_port() -> u16 {
    DEFAULT_GUEST_PORT
}

/// One image, its files resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmImage {
    /// The image's name (its directory's).
    pub name: String,
    /// The kernel to boot directly, if any.
    pub kernel: Option<PathBuf>,
    /// Its initramfs.
    pub initrd: Option<PathBuf>,
    /// Its command line (the provider appends `swell.port=` and `swell.instance=`).
    pub cmdline: String,
    /// The base disk every VM gets an overlay of, with its format (`qcow2`, `raw`).
    pub disk: Option<(PathBuf, String)>,
    /// The port the guest serves on.
    pub guest_port: u16,
    /// Whether the image reads a cloud-init NoCloud seed (each VM then gets one).
    pub cloud_init: bool,
}

/// Whether `name` is a plain file or directory name (no separator, not `.`/`..`).
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Loads image `name` from `images_dir`; a bad name, a missing or malformed manifest
/// or a missing file is an invalid template naming what is wrong.
pub fn load(images_dir: &Path, name: &str) -> Result<VmImage, ProviderError> {
    let invalid = |rule: String| ProviderError::InvalidTemplate(format!("template.image: {rule}"));
    if !plain_name(name) {
        return Err(invalid(format!(
            "`{name}` must be an image name (1 to 128 ASCII letters, digits, '-', '_' or '.') under the qemu images directory"
        )));
    }
    let dir = images_dir.join(name);
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read(&manifest_path).map_err(|e| {
        invalid(format!(
            "image `{name}` has no readable {} ({e}); scripts/build-vm-image builds the test images",
            manifest_path.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| invalid(format!("{}: {e}", manifest_path.display())))?;
    let file = |field: &str, value: &Option<String>| -> Result<Option<PathBuf>, ProviderError> {
        let Some(value) = value else {
            return Ok(None);
        };
        if !plain_name(value) {
            return Err(invalid(format!(
                "{}: `{field}` must be a file name inside the image's directory, not `{value}`",
                manifest_path.display()
            )));
        }
        let path = dir.join(value);
        if !path.is_file() {
            return Err(invalid(format!(
                "image `{name}`: its {field} {} does not exist",
                path.display()
            )));
        }
        Ok(Some(path))
    };
    let kernel = file("kernel", &manifest.kernel)?;
    let initrd = file("initrd", &manifest.initrd)?;
    let disk = file("disk", &manifest.disk)?;
    if kernel.is_none() && disk.is_none() {
        return Err(invalid(format!(
            "{}: needs a `kernel` or a `disk` to boot",
            manifest_path.display()
        )));
    }
    if manifest.guest_port == 0 {
        return Err(invalid(format!(
            "{}: `guest_port` must be 1 to 65535",
            manifest_path.display()
        )));
    }
    let format = manifest.disk_format.unwrap_or_else(|| "qcow2".into());
    if !matches!(format.as_str(), "qcow2" | "raw") {
        return Err(invalid(format!(
            "{}: `disk_format` must be qcow2 or raw, not `{format}`",
            manifest_path.display()
        )));
    }
    Ok(VmImage {
        name: name.to_string(),
        kernel,
        initrd,
        cmdline: manifest.cmdline,
        disk: disk.map(|d| (d, format)),
        guest_port: manifest.guest_port,
        cloud_init: manifest.cloud_init,
    })
}

/// Makes `overlay`, a qcow2 disk whose unwritten blocks read from `base`, with
/// `qemu_img`: the VM writes only to its own file.
pub async fn make_overlay(
    qemu_img: &str,
    base: &Path,
    format: &str,
    overlay: &Path,
) -> Result<(), ProviderError> {
    let output = tokio::process::Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(base)
        .arg(overlay)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| ProviderError::Io {
            action: format!("running `{qemu_img}`"),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ProviderError::Backend(format!(
            "`{qemu_img} create` of {} failed: {}",
            overlay.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, name: &str, manifest: &str, files: &[&str]) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(MANIFEST), manifest).unwrap();
        for f in files {
            std::fs::write(d.join(f), "x").unwrap();
        }
    }

    fn err(dir: &Path, name: &str) -> String {
        match load(dir, name) {
            Err(ProviderError::InvalidTemplate(m)) => m,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn a_kernel_image_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        image(
            dir.path(),
            "httpd",
            r#"{"kernel": "vmlinux", "initrd": "initrd.img", "cmdline": "quiet"}"#,
            &["vmlinux", "initrd.img"],
        );
        let img = load(dir.path(), "httpd").unwrap();
        assert_eq!(img.kernel, Some(dir.path().join("httpd/vmlinux")));
        assert_eq!(img.initrd, Some(dir.path().join("httpd/initrd.img")));
        assert_eq!((img.cmdline.as_str(), img.guest_port), ("quiet", 8080));
        assert_eq!(img.disk, None);
    }

    #[test]
    fn bad_images_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for bad in ["", "..", "a/b", "../etc"] {
            assert!(err(d, bad).contains("must be an image name"), "{bad}");
        }
        assert!(err(d, "absent").contains("has no readable"));
        image(d, "junk", "{", &[]);
        assert!(err(d, "junk").contains("image.json"));
        image(d, "unknown", r#"{"kernel": "k", "colour": 1}"#, &["k"]);
        assert!(err(d, "unknown").contains("unknown field `colour`"));
        image(d, "escape", r#"{"kernel": "../../etc/passwd"}"#, &[]);
        assert!(err(d, "escape").contains("`kernel` must be a file name"));
        image(d, "missing", r#"{"kernel": "vmlinux"}"#, &[]);
        assert!(err(d, "missing").contains("does not exist"));
        image(d, "nothing", r#"{"cmdline": "x"}"#, &[]);
        assert!(err(d, "nothing").contains("needs a `kernel` or a `disk`"));
        image(d, "port0", r#"{"kernel": "k", "guest_port": 0}"#, &["k"]);
        assert!(err(d, "port0").contains("`guest_port` must be 1 to 65535"));
        image(d, "vmdk", r#"{"disk": "d", "disk_format": "vmdk"}"#, &["d"]);
        assert!(err(d, "vmdk").contains("qcow2 or raw"));
    }
}
