//! Authentication: Argon2id passwords, opaque bearer tokens and API keys stored only as
//! SHA-256 hashes, rate-limited logins that never reveal whether a user exists, and the
//! bootstrap admin. Authorization is the table in [`rules`], enforced by [`middleware`].

pub mod limit;
pub mod middleware;
pub mod rules;

use crate::clock::Clock;
use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use limit::{Limiter, Rate};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use swell_core::{InstanceId, TenantId, Timestamp, ValidationError};
use swell_store::{Role, Store, StoreError, TenantRecord, TokenRecord, UserRecord};

/// How long a token lives unless configured otherwise.
pub const DEFAULT_TOKEN_TTL_MS: i64 = 12 * 3600 * 1000;

/// The name of the user created on first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// Prefix of login tokens.
pub const TOKEN_PREFIX: &str = "swt_";

/// Prefix of API keys.
pub const KEY_PREFIX: &str = "swk_";

/// The one message of every failed login, whatever failed.
pub const LOGIN_FAILED: &str = "invalid user, password or tenant";

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Longest password accepted (Argon2 hashes anything, but a megabyte is not a password).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Who is calling: resolved from the token or API key, never from the request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The user (`None` for an API key).
    pub user: Option<String>,
    /// The API key's name (`None` for a user's token).
    pub key: Option<String>,
    /// The tenant the credential acts in.
    pub tenant: TenantId,
    /// The role in that tenant, read at each request (a revoked role stops at once).
    pub role: Option<Role>,
    /// A service-wide administrator.
    pub admin: bool,
    /// The instances this principal owns in the tenant (seed 3).
    pub owned: Vec<InstanceId>,
    /// The hash of the token used (for `DELETE /v1/auth/tokens/current`).
    pub token_hash: Option<String>,
}

impl Principal {
    /// The name shown in the audit log: the user, or `key:NAME`.
    pub fn name(&self) -> String {
        match (&self.user, &self.key) {
            (Some(u), _) => u.clone(),
            (None, Some(k)) => format!("key:{k}"),
            (None, None) => "unknown".into(),
        }
    }

    /// Whether the principal has at least `role` in its tenant (admins always do).
    pub fn at_least(&self, role: Role) -> bool {
        self.admin || self.role.is_some_and(|r| r >= role)
    }

    /// Whether the principal owns the instance `id` in its tenant.
    pub fn owns(&self, id: &str) -> bool {
        self.owned.iter().any(|i| i.as_str() == id)
    }
}

/// Why a login or a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or a bad, expired or revoked one; or a failed login.
    #[error("{0}")]
    Unauthorized(String),
    /// Too many login attempts.
    #[error("too many login attempts; retry in {0} s")]
    RateLimited(u64),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Hashing failed (never expected).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The authentication service.
pub struct Auth {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    per_user: Limiter,
    per_source: Limiter,
    dummy_hash: String,
    token_ttl_ms: i64,
}

/// SHA-256 of a token or key, lowercase hex: what the store keeps.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh random credential with `prefix` (32 random bytes, base64url).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A random password for the bootstrap admin (24 characters).
pub fn generate_password() -> String {
    let mut bytes = [0u8; 18];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes), as a PHC
/// string with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (false for a malformed hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Checks a new password's length (field `password`).
pub fn check_password(password: &str) -> Result<(), ValidationError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ValidationError::new(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ValidationError::new(
            "password",
            format!("must be at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))
}

impl Auth {
    /// Authentication over `store` on `clock`; logins limited to 10 per user (one more
    /// every 30 s) and 60 per source address (one more every 2 s).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        // Unknown users are checked against this, so that they cost the same Argon2 work.
        let dummy_hash = hash_password(&generate_password()).unwrap_or_default();
        Auth {
            per_user: Limiter::new(
                Rate {
                    burst: 10,
                    refill_ms: 30_000,
                },
                clock.clone(),
            ),
            per_source: Limiter::new(
                Rate {
                    burst: 60,
                    refill_ms: 2_000,
                },
                clock.clone(),
            ),
            store,
            clock,
            dummy_hash,
            token_ttl_ms: DEFAULT_TOKEN_TTL_MS,
        }
    }

    /// Logs `user` in to `tenant`: a new token and its expiry. Every failure (unknown
    /// user, wrong password, unknown tenant, no role there) is the same
    /// [`LOGIN_FAILED`], after the same Argon2 work.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        tenant: &str,
        source: Option<&str>,
    ) -> Result<(String, Timestamp), AuthError> {
        self.per_user
            .check(&format!("user:{user}"))
            .map_err(AuthError::RateLimited)?;
        if let Some(src) = source {
            self.per_source
                .check(&format!("source:{src}"))
                .map_err(AuthError::RateLimited)?;
        }
        let record = self.store.get_user(user).await?;
        let phc = record
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let pw = password.to_string();
        let ok = blocking(move || verify_password(&pw, &phc)).await?;
        let fail = || AuthError::Unauthorized(LOGIN_FAILED.into());
        let (Some(record), true) = (record, ok) else {
            return Err(fail());
        };
        let tenant = TenantId::new(tenant).map_err(|_| fail())?;
        let t = self.store.get_tenant(&tenant).await?.ok_or_else(fail)?;
        if t.deleting {
            return Err(fail());
        }
        let allowed = record.is_admin
            || self.store.get_role(user, &tenant).await?.is_some()
            || !self
                .store
                .list_instance_owners(&tenant, Some(user))
                .await?
                .is_empty();
        if !allowed {
            return Err(fail());
        }
        let token = new_secret(TOKEN_PREFIX);
        let now = self.clock.now();
        let expires_at = Timestamp::from_millis(now.as_millis() + self.token_ttl_ms);
        self.store
            .create_token(&TokenRecord {
                hash: hash_token(&token),
                user: user.to_string(),
                tenant,
                created_at: now,
                expires_at,
                revoked: false,
            })
            .await?;
        Ok((token, expires_at))
    }

    /// The principal of a bearer credential (token or API key), or why not.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError> {
        let bad = |why: &str| AuthError::Unauthorized(why.to_string());
        let hash = hash_token(bearer);
        if bearer.starts_with(KEY_PREFIX) {
            let key = self
                .store
                .get_api_key(&hash)
                .await?
                .ok_or_else(|| bad("invalid API key"))?;
            self.live_tenant(&key.tenant)
                .await?
                .ok_or_else(|| bad("invalid API key"))?;
            return Ok(Principal {
                user: None,
                key: Some(key.name),
                tenant: key.tenant,
                role: Some(key.role),
                admin: false,
                owned: Vec::new(),
                token_hash: None,
            });
        }
        let token = self
            .store
            .get_token(&hash)
            .await?
            .ok_or_else(|| bad("invalid token; log in again"))?;
        if token.revoked {
            return Err(bad("the token was revoked; log in again"));
        }
        if self.clock.now() >= token.expires_at {
            return Err(bad("the token expired; log in again"));
        }
        let user = self
            .store
            .get_user(&token.user)
            .await?
            .ok_or_else(|| bad("invalid token; log in again"))?;
        self.live_tenant(&token.tenant)
            .await?
            .ok_or_else(|| bad("the token's tenant no longer exists"))?;
        let role = self.store.get_role(&user.name, &token.tenant).await?;
        let owned = self
            .store
            .list_instance_owners(&token.tenant, Some(&user.name))
            .await?
            .into_iter()
            .map(|o| o.instance)
            .collect();
        Ok(Principal {
            user: Some(user.name),
            key: None,
            tenant: token.tenant,
            role,
            admin: user.is_admin,
            owned,
            token_hash: Some(hash),
        })
    }

    async fn live_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, AuthError> {
        Ok(self.store.get_tenant(id).await?.filter(|t| !t.deleting))
    }

    /// On an empty store, creates the `default` tenant and the admin with `password`
    /// (or a generated one, returned so that `swell serve` prints it once). Does nothing
    /// when any user exists.
    pub async fn bootstrap(&self, password: Option<&str>) -> Result<Option<String>, AuthError> {
        if !self.store.list_users().await?.is_empty() {
            return Ok(None);
        }
        let now = self.clock.now();
        let tenant = TenantId::default_tenant();
        if self.store.get_tenant(&tenant).await?.is_none() {
            self.store.ensure_tenant(&tenant, now).await?;
        }
        let (password, generated) = match password {
            Some(p) => (p.to_string(), None),
            None => {
                let p = generate_password();
                (p.clone(), Some(p))
            }
        };
        let phc = blocking(move || hash_password(&password)).await??;
        self.store
            .create_user(&UserRecord {
                name: BOOTSTRAP_ADMIN.into(),
                password_hash: phc,
                is_admin: true,
                created_at: now,
                password_changed_at: now,
            })
            .await?;
        tracing::info!(user = BOOTSTRAP_ADMIN, "created the bootstrap admin");
        Ok(generated)
    }

    /// Hashes a password off the async threads.
    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let pw = password.to_string();
        blocking(move || hash_password(&pw)).await?
    }

    /// Whether `password` matches the PHC string `phc`, off the async threads.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, AuthError> {
        let (pw, phc) = (password.to_string(), phc.to_string());
        blocking(move || verify_password(&pw, &phc)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong horse", &a));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let t = new_secret(TOKEN_PREFIX);
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() > 40);
        assert_ne!(t, new_secret(TOKEN_PREFIX));
        let h = hash_token(&t);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&t));
    }

    #[test]
    fn password_rules_name_the_field() {
        let e = check_password("short").unwrap_err();
        assert_eq!(e.field, "password");
        assert!(check_password(&"x".repeat(2000)).is_err());
        assert!(check_password("long enough").is_ok());
    }
}
