//! Authentication: Argon2id passwords, opaque bearer tokens and API keys stored only as
//! SHA-256 hashes, rate-limited logins that never reveal whether a user exists, and the
//! bootstrap admin. Authorization is the table in [`rules`], enforced by [`middleware`].

pub mod limit;
pub mod middleware;
pub mod rules;
pub mod source;

use crate::clock::Clock;
use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use limit::{Limiter, LimiterSize, Rate};
use sha2::{Digest, Sha256};
use source::Cidr;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use swell_core::{InstanceId, TenantId, Timestamp, ValidationError};
use swell_store::{ApiKeyRecord, Role, Store, StoreError, TenantRecord, TokenRecord, UserRecord};

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
    /// Too many password hashes are waiting already (503): the server is busy.
    #[error("too many password checks in progress; retry in a second")]
    Busy,
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Hashing failed (never expected).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Login attempts from one source address (IPv6: its /64): 60, one more every 2 s.
pub const PER_SOURCE: Rate = Rate {
    burst: 60,
    refill_ms: 2_000,
};

/// Login attempts for one user from one source: 10, one more every 30 s.
pub const PER_USER_AND_SOURCE: Rate = Rate {
    burst: 10,
    refill_ms: 30_000,
};

/// Login attempts for one user from all sources together: 300, one more every 2 s.
/// The ceiling against guessing spread over many addresses; to keep a user out, an
/// attacker must sustain one try every 2 s, which [`PER_USER_AND_SOURCE`] makes take
/// at least 15 addresses.
pub const PER_USER: Rate = Rate {
    burst: 300,
    refill_ms: 2_000,
};

/// Argon2 hashes waiting for a permit at most; one more is refused with 503.
pub const MAX_HASHES_WAITING: usize = 64;

/// How the authentication service is configured beyond its defaults.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// Peers whose `X-Forwarded-For` is believed (`swell serve --trusted-proxy`).
    pub trusted_proxies: Vec<Cidr>,
    /// Argon2 hashes run at once at most (`None`: the cores, at most 4).
    pub max_hashes: Option<usize>,
}

/// What the login limiters hold (see [`Auth::limiter_sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterSizes {
    /// By source address.
    pub per_source: LimiterSize,
    /// By user and source.
    pub per_user_and_source: LimiterSize,
    /// By user.
    pub per_user: LimiterSize,
}

/// The authentication service.
pub struct Auth {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    per_source: Limiter,
    per_user_and_source: Limiter,
    per_user: Limiter,
    trusted_proxies: Vec<Cidr>,
    hashes: tokio::sync::Semaphore,
    hashes_waiting: AtomicUsize,
    dummy_hash: String,
    token_ttl_ms: i64,
}

/// Counts a request waiting for an Argon2 permit while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn default_max_hashes() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
}

/// The limiter key of a source address (IPv6 by its /64; anything else as given).
fn source_key(source: &str) -> String {
    source
        .parse::<IpAddr>()
        .map_or_else(|_| source.to_string(), source::limit_key)
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
    /// Authentication over `store` on `clock`; logins limited per source address
    /// ([`PER_SOURCE`]), then per user and source ([`PER_USER_AND_SOURCE`]), then per
    /// user ([`PER_USER`]).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        // Unknown users are checked against this, so that they cost the same Argon2 work.
        let dummy_hash = hash_password(&generate_password()).unwrap_or_default();
        Auth {
            per_source: Limiter::new(PER_SOURCE, clock.clone()),
            per_user_and_source: Limiter::new(PER_USER_AND_SOURCE, clock.clone()),
            per_user: Limiter::new(PER_USER, clock.clone()),
            trusted_proxies: Vec::new(),
            hashes: tokio::sync::Semaphore::new(default_max_hashes()),
            hashes_waiting: AtomicUsize::new(0),
            store,
            clock,
            dummy_hash,
            token_ttl_ms: DEFAULT_TOKEN_TTL_MS,
        }
    }

    /// The same service with `options`.
    pub fn with_options(mut self, options: AuthOptions) -> Self {
        self.trusted_proxies = options.trusted_proxies;
        if let Some(n) = options.max_hashes {
            self.hashes = tokio::sync::Semaphore::new(n.max(1));
        }
        self
    }

    /// The client's address of a request from `peer` with these `X-Forwarded-For`
    /// values (believed only from a trusted proxy).
    pub fn client_addr(&self, peer: IpAddr, forwarded: &[&str]) -> IpAddr {
        source::client_addr(peer, forwarded, &self.trusted_proxies)
    }

    /// What the login limiters hold now (their size is bounded; tests check it).
    pub fn limiter_sizes(&self) -> LimiterSizes {
        LimiterSizes {
            per_source: self.per_source.size(),
            per_user_and_source: self.per_user_and_source.size(),
            per_user: self.per_user.size(),
        }
    }

    /// Takes one attempt of the source's budget.
    fn check_source(&self, source: Option<&str>) -> Result<(), AuthError> {
        match source {
            Some(src) => self.per_source.check(&source_key(src)),
            None => Ok(()),
        }
        .map_err(AuthError::RateLimited)
    }

    /// Takes one attempt of `user`'s budget from `source` and of `user`'s overall one
    /// (`user` must be a valid user name: the keys stay short). Neither is taken when
    /// either is exhausted, so that a refused try costs the user nothing more.
    fn check_user(&self, user: &str, source: Option<&str>) -> Result<(), AuthError> {
        let pair = format!("{user}\n{}", source.map(source_key).unwrap_or_default());
        self.per_user_and_source
            .peek(&pair)
            .and_then(|()| self.per_user.peek(user))
            .and_then(|()| self.per_user_and_source.check(&pair))
            .and_then(|()| self.per_user.check(user))
            .map_err(AuthError::RateLimited)
    }

    /// Rate-limits a password check outside a login (a user giving their current
    /// password to change it): the same budgets as logins, so a stolen token does not
    /// open a faster way to guess.
    pub fn check_password_attempt(
        &self,
        user: &str,
        source: Option<&str>,
    ) -> Result<(), AuthError> {
        self.check_source(source)?;
        self.check_user(user, source)
    }

    /// Runs Argon2 work `f` on the blocking pool, at most `max_hashes` at once; with
    /// [`MAX_HASHES_WAITING`] already waiting, refuses with [`AuthError::Busy`].
    async fn argon<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        if self.hashes_waiting.fetch_add(1, Ordering::SeqCst) >= MAX_HASHES_WAITING {
            self.hashes_waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(AuthError::Busy);
        }
        let waiting = Waiting(&self.hashes_waiting);
        let _permit = self
            .hashes
            .acquire()
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        drop(waiting);
        blocking(f).await
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
        self.check_source(source)?;
        let fail = || AuthError::Unauthorized(LOGIN_FAILED.into());
        // A name that cannot be a user's never reaches a per-user map (so junk names
        // cannot grow them), but costs the same Argon2 work as any failure.
        if crate::identity::check_user_name("user", user).is_err() {
            let (pw, phc) = (password.to_string(), self.dummy_hash.clone());
            self.argon(move || verify_password(&pw, &phc)).await?;
            return Err(fail());
        }
        self.check_user(user, source)?;
        let record = self.store.get_user(user).await?;
        let phc = record
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let pw = password.to_string();
        let ok = self.argon(move || verify_password(&pw, &phc)).await?;
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
            if !self.creator_still_entitled(&key).await? {
                tracing::info!(key = %key.name, tenant = %key.tenant, creator = %key.created_by,
                    "API key refused: its creator no longer holds its role");
                return Err(bad(
                    "this API key's creator no longer holds its role in the tenant; create a new key",
                ));
            }
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

    /// Whether the key's creator still holds at least the key's role in its tenant: a
    /// user that still exists (the same one: created before the key) and is an admin or
    /// has the role there; or, for a key made by a key, that key, itself still entitled.
    async fn creator_still_entitled(&self, key: &ApiKeyRecord) -> Result<bool, AuthError> {
        let mut key = key.clone();
        // A chain of keys making keys ends at a user; its length is bounded by the keys
        // of the tenant, and a loop (impossible by construction) ends here too.
        for _ in 0..=self.store.list_api_keys(&key.tenant).await?.len() {
            if let Some(parent) = key.created_by.strip_prefix("key:") {
                let Some(parent) = self
                    .store
                    .list_api_keys(&key.tenant)
                    .await?
                    .into_iter()
                    .find(|k| k.name == parent && k.created_at <= key.created_at)
                else {
                    return Ok(false);
                };
                if parent.role < key.role {
                    return Ok(false);
                }
                key = parent;
                continue;
            }
            let Some(user) = self.store.get_user(&key.created_by).await? else {
                return Ok(false);
            };
            if user.created_at > key.created_at {
                return Ok(false);
            }
            if user.is_admin {
                return Ok(true);
            }
            let role = self.store.get_role(&user.name, &key.tenant).await?;
            return Ok(role.is_some_and(|r| r >= key.role));
        }
        Ok(false)
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
        let phc = self.argon(move || hash_password(&password)).await??;
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
        self.argon(move || hash_password(&pw)).await?
    }

    /// Whether `password` matches the PHC string `phc`, off the async threads.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, AuthError> {
        let (pw, phc) = (password.to_string(), phc.to_string());
        self.argon(move || verify_password(&pw, &phc)).await
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
