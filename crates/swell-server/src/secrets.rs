//! Secrets at rest: provider credentials are sealed with AES-256-GCM before they reach
//! the store (seed 2's `should_encrypt_pwd`), and never returned by the API or logged.
//!
//! The key comes from `SWELL_SECRET_KEY` (32 bytes as base64 or hex), or a key file; when
//! neither is given, `<data dir>/secret.key` is used, generated with mode 0600 on first
//! start. A sealed value is `nonce (12 bytes) || ciphertext+tag`, with the tenant and
//! the credential's name as AES-GCM associated data: a value copied to another
//! tenant's row, or under another name, does not open.
//!
//! (No released version stored sealed values with another binding: the store's
//! `provider_credentials` table had no route and no consumer, so there is nothing old
//! to keep reading.)

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use swell_store::Sealed;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "secret.key";

const NONCE_LEN: usize = 12;

/// Text that must never be shown: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What can go wrong with keys and sealed values.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key text is not 32 bytes of base64 or hex.
    #[error("the secret key must be 32 bytes as base64 or hex ({0})")]
    BadKey(String),
    /// The key file cannot be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Decryption failed: another key, or a damaged value.
    #[error("cannot decrypt: wrong key or damaged value")]
    Decrypt,
    /// Encryption failed (never expected).
    #[error("cannot encrypt")]
    Encrypt,
}

/// What binds a sealed value to its place: a version tag, the tenant and the name,
/// each length-prefixed so that no two (tenant, name) pairs give the same bytes.
fn associated_data(tenant: &str, name: &str) -> Vec<u8> {
    let mut aad = b"swell-credential-v1".to_vec();
    for part in [tenant, name] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// The AES-256-GCM key.
#[derive(Clone)]
pub struct SecretKey(Key<Aes256Gcm>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl SecretKey {
    /// A key from text: 64 hex digits or base64 of 32 bytes.
    pub fn from_text(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bytes = if text.len() == 64 {
            decode_hex(text)
        } else {
            None
        }
        .or_else(|| STANDARD.decode(text).ok())
        .ok_or_else(|| SecretError::BadKey("neither hex nor base64".into()))?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey(format!("{} bytes", bytes.len())));
        }
        Ok(SecretKey(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        SecretKey(Aes256Gcm::generate_key(OsRng))
    }

    /// The key as base64 (what a key file holds).
    pub fn to_base64(&self) -> SecretString {
        SecretString(STANDARD.encode(self.0.as_slice()))
    }

    /// The key to use: `text` (from `SWELL_SECRET_KEY`) if given, else `file` if given,
    /// else `<data_dir>/secret.key`, created with mode 0600 when absent.
    pub fn load_or_create(
        data_dir: &Path,
        text: Option<&SecretString>,
        file: Option<&Path>,
    ) -> Result<Self, SecretError> {
        if let Some(t) = text {
            return Self::from_text(t.expose());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SecretError::KeyFile { path, source }
        };
        if let Some(f) = file {
            return Self::from_text(&std::fs::read_to_string(f).map_err(io(f))?);
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_text(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(io(&path))?;
                writeln!(f, "{}", key.to_base64().expose()).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                tracing::info!(path = %path.display(), "generated the secret key");
                Ok(key)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Seals `plaintext`, tenant `tenant`'s credential `name`, with a fresh random nonce.
    pub fn seal(&self, tenant: &str, name: &str, plaintext: &[u8]) -> Result<Sealed, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(tenant, name);
        let ct = Aes256Gcm::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Encrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(Sealed(out))
    }

    /// Opens a value sealed as tenant `tenant`'s credential `name` (any other tenant or
    /// name fails like a wrong key).
    pub fn open(&self, tenant: &str, name: &str, sealed: &Sealed) -> Result<Vec<u8>, SecretError> {
        if sealed.0.len() < NONCE_LEN {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ct) = sealed.0.split_at(NONCE_LEN);
        let aad = associated_data(tenant, name);
        Aes256Gcm::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = SecretKey::generate();
        let sealed = key.seal("acme", "openstack", b"hunter2-openstack").unwrap();
        assert!(!sealed.0.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open("acme", "openstack", &sealed).unwrap(),
            b"hunter2-openstack"
        );
        assert_ne!(
            key.seal("acme", "openstack", b"hunter2-openstack").unwrap(),
            sealed,
            "fresh nonce"
        );
        let mut bad = sealed.clone();
        let last = bad.0.len() - 1;
        bad.0[last] ^= 1;
        assert!(matches!(
            key.open("acme", "openstack", &bad),
            Err(SecretError::Decrypt)
        ));
        assert!(
            SecretKey::generate()
                .open("acme", "openstack", &sealed)
                .is_err()
        );
        assert!(format!("{key:?}").contains("redacted"));
    }

    /// A sealed value opens only as what it was sealed as: another tenant's row or
    /// another name does not open it, even when the bytes join to the same text.
    #[test]
    fn bound_to_tenant_and_name() {
        let key = SecretKey::generate();
        let sealed = key.seal("acme", "openstack", b"s3cret").unwrap();
        for (tenant, name) in [
            ("globex", "openstack"),
            ("acme", "docker"),
            ("acmeopen", "stack"),
            ("acme-", "openstack"),
            ("", "acmeopenstack"),
        ] {
            assert!(
                matches!(key.open(tenant, name, &sealed), Err(SecretError::Decrypt)),
                "{tenant}/{name}"
            );
        }
        assert_eq!(key.open("acme", "openstack", &sealed).unwrap(), b"s3cret");
    }

    #[test]
    fn keys_from_text() {
        let hex = "00".repeat(32);
        SecretKey::from_text(&hex).unwrap();
        let b64 = SecretKey::generate().to_base64();
        SecretKey::from_text(b64.expose()).unwrap();
        assert!(SecretKey::from_text("short").is_err());
        assert!(SecretKey::from_text(&"00".repeat(16)).is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = SecretKey::load_or_create(dir.path(), None, None).unwrap();
        let meta = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let k2 = SecretKey::load_or_create(dir.path(), None, None).unwrap();
        let sealed = k1.seal("t", "n", b"x").unwrap();
        assert_eq!(k2.open("t", "n", &sealed).unwrap(), b"x");
        let explicit = SecretString::new("11".repeat(32));
        let k3 = SecretKey::load_or_create(dir.path(), Some(&explicit), None).unwrap();
        assert!(k3.open("t", "n", &sealed).is_err());
    }
}
