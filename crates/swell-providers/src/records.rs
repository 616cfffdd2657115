//! The record files a provider keeps of what it started, one JSON file per instance in a
//! directory only the server's user can enter: what adoption after a crash trusts (never
//! what an instance says of itself). Shared by the `process` and `qemu` providers.

use crate::ProviderError;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A provider's record of one instance.
pub(crate) trait Record: serde::Serialize + serde::de::DeserializeOwned {
    /// What the record is of, in log lines and errors ("a VM record").
    const WHAT: &'static str;
    /// The instance it records (records are listed in this order).
    fn instance_id(&self) -> &str;
}

/// Where an instance's record is.
pub(crate) fn record_path(records_dir: &Path, id: &str) -> PathBuf {
    records_dir.join(format!("{id}.json"))
}

/// Reads one record; a missing or unreadable one is `None`.
pub(crate) fn read_record<R: Record>(path: &Path) -> Option<R> {
    let text = fs::read(path).ok()?;
    match serde_json::from_slice::<R>(&text) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(file = %path.display(), "ignoring an unreadable {}: {e}", R::WHAT);
            None
        }
    }
}

/// Every record in the directory, by instance id (none when it does not exist yet).
pub(crate) fn read_records<R: Record>(dir: &Path) -> Vec<R> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records: Vec<R> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
        .filter_map(|e| read_record(&e.path()))
        .collect();
    records.sort_by(|a, b| a.instance_id().cmp(b.instance_id()));
    records
}

/// Writes a record whole (a temporary file renamed into place), in a directory only
/// the server's user can enter.
pub(crate) fn write_record<R: Record>(
    dir: &Path,
    path: &Path,
    record: &R,
) -> Result<(), ProviderError> {
    let io = |action: String| move |source| ProviderError::Io { action, source };
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("restricting {}", dir.display())))?;
    let text = serde_json::to_vec(record)
        .map_err(|e| ProviderError::Backend(format!("encoding {}: {e}", R::WHAT)))?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))
}
