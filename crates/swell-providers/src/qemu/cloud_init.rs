//! The cloud-init NoCloud seed of a VM whose image reads one (`cloud_init: true`).
//!
//! The seed is an ISO 9660 volume labelled `cidata` holding `meta-data` (the instance
//! id, the hostname and the SSH public keys) and `user-data` (the template's, else an
//! empty `#cloud-config`), made with `genisoimage` (no root needed) and attached
//! read-only as a virtio disk: cloud-init's NoCloud data source finds it by its label.
//! What the guest makes of it is the image's business; Swell only writes what the
//! template says ([`swell_core::QemuTemplate`]).

use crate::ProviderError;
use std::path::{Path, PathBuf};
use swell_core::QemuTemplate;

/// The volume label cloud-init's NoCloud data source looks for.
pub const VOLUME_ID: &str = "cidata";
/// The seed's file name in the VM's directory.
pub const SEED_FILE: &str = "seed.iso";

/// What a seed holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The `meta-data` file (YAML).
    pub meta_data: String,
    /// The `user-data` file, as given.
    pub user_data: String,
}

/// The seed of VM `instance_id` from its template's qemu part (`None`: the instance
/// id as hostname, no keys, an empty `#cloud-config`). The template's rules are
/// checked again here, so a seed never carries a line break where YAML would read one.
pub fn seed(instance_id: &str, template: Option<&QemuTemplate>) -> Result<Seed, ProviderError> {
    let default = QemuTemplate::default();
    let t = template.unwrap_or(&default);
    t.validate()
        .map_err(|e| ProviderError::InvalidTemplate(e.within("template.qemu").to_string()))?;
    // JSON strings are YAML strings: every value is quoted and escaped.
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let hostname = t.hostname.as_deref().unwrap_or(instance_id);
    let mut meta_data = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        quote(instance_id),
        quote(hostname)
    );
    if !t.ssh_authorized_keys.is_empty() {
        meta_data.push_str("public-keys:\n");
        for key in &t.ssh_authorized_keys {
            meta_data.push_str(&format!("  - {}\n", quote(key)));
        }
    }
    let user_data = t
        .user_data
        .clone()
        .unwrap_or_else(|| "#cloud-config\n{}\n".to_string());
    Ok(Seed {
        meta_data,
        user_data,
    })
}

/// Writes `seed` into `dir` (`cidata/meta-data`, `cidata/user-data`) and makes
/// `dir/seed.iso` of it with `genisoimage`; the ISO's path.
pub async fn write_seed(
    genisoimage: &str,
    dir: &Path,
    seed: &Seed,
) -> Result<PathBuf, ProviderError> {
    let files = dir.join("cidata");
    let io = |action: String| move |source| ProviderError::Io { action, source };
    tokio::fs::create_dir_all(&files)
        .await
        .map_err(io(format!("creating {}", files.display())))?;
    for (name, text) in [
        ("meta-data", &seed.meta_data),
        ("user-data", &seed.user_data),
    ] {
        let path = files.join(name);
        tokio::fs::write(&path, text)
            .await
            .map_err(io(format!("writing {}", path.display())))?;
    }
    let iso = dir.join(SEED_FILE);
    let output = tokio::process::Command::new(genisoimage)
        .arg("-quiet")
        .arg("-output")
        .arg(&iso)
        .args(["-volid", VOLUME_ID, "-joliet", "-rock"])
        .arg(files.join("user-data"))
        .arg(files.join("meta-data"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| ProviderError::Io {
            action: format!(
                "running `{genisoimage}` for a cloud-init seed (Debian package genisoimage)"
            ),
            source,
        })?;
    if !output.status.success() {
        return Err(ProviderError::Backend(format!(
            "`{genisoimage}` could not make the cloud-init seed {}: {}",
            iso.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_quotes_what_the_template_says() {
        let t = QemuTemplate {
            hostname: Some("web-1".into()),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nz lab \"x\"".into()],
            user_data: Some("#!/bin/sh\necho hi\n".into()),
        };
        let s = seed("vm-1", Some(&t)).unwrap();
        assert_eq!(
            s.meta_data,
            "instance-id: \"vm-1\"\nlocal-hostname: \"web-1\"\npublic-keys:\n  - \"ssh-ed25519 AAAAC3Nz lab \\\"x\\\"\"\n"
        );
        assert_eq!(s.user_data, "#!/bin/sh\necho hi\n");
        let plain = seed("vm-2", None).unwrap();
        assert_eq!(
            plain.meta_data,
            "instance-id: \"vm-2\"\nlocal-hostname: \"vm-2\"\n"
        );
        assert_eq!(plain.user_data, "#cloud-config\n{}\n");
    }

    #[test]
    fn a_key_with_a_line_break_is_refused_naming_the_field() {
        let t = QemuTemplate {
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA\ninstance-id: evil".into()],
            ..QemuTemplate::default()
        };
        let e = seed("vm-1", Some(&t)).unwrap_err().to_string();
        assert!(e.contains("template.qemu.ssh_authorized_keys[0]"), "{e}");
    }
}
