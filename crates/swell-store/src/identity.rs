//! Stored identity, access and accounting records: tenants, users, role bindings,
//! instance owners, tokens, API keys, the audit log, quotas and sealed credentials.
//!
//! Nothing here holds a secret in clear: a user keeps an Argon2id PHC string, a token or
//! an API key only its SHA-256 hash, a credential only its ciphertext ([`Sealed`]).

use std::fmt;
use std::str::FromStr;
use swell_core::{Grants, InstanceId, TenantId, Timestamp};

/// A role within one tenant. `Owner` > `Member` > `Viewer`; the service-wide admin is a
/// flag on the user, not a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Groups, instances, providers.
    Member,
    /// Everything in the tenant, including its users.
    Owner,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Member, Role::Owner];

    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "owner" => Ok(Role::Owner),
            other => Err(format!(
                "unknown role `{other}`: one of owner, member, viewer"
            )),
        }
    }
}

/// Per-tenant limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most live instances over all the tenant's groups.
    pub max_instances: Option<u32>,
    /// Most vCPUs over all the tenant's live instances.
    pub max_vcpus: Option<u32>,
    /// Most memory (MiB) over all the tenant's live instances.
    pub max_memory_mb: Option<u64>,
    /// Most groups of the tenant (those being deleted count until they are gone).
    pub max_groups: Option<u32>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    /// Its id (also its name).
    pub id: TenantId,
    /// A name for humans.
    pub display_name: String,
    /// A description for humans.
    pub description: String,
    /// Its own limits; a `None` field falls back to the service-wide default.
    pub quota: Quota,
    /// What an admin granted it: providers, listen ranges, image patterns (stored as
    /// one JSON document; nothing until an admin grants it).
    pub grants: Grants,
    /// Set while a forced delete scales its groups to zero.
    pub deleting: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A user (a person or a service).
#[derive(Clone, PartialEq)]
pub struct UserRecord {
    /// Unique name.
    pub name: String,
    /// Argon2id PHC string (never the password).
    pub password_hash: String,
    /// Service-wide administrator.
    pub is_admin: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its password last changed.
    pub password_changed_at: Timestamp,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("is_admin", &self.is_admin)
            .field("created_at", &self.created_at)
            .field("password_changed_at", &self.password_changed_at)
            .finish()
    }
}

/// A user's role in a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleBinding {
    /// The user.
    pub user: String,
    /// The tenant.
    pub tenant: TenantId,
    /// The role.
    pub role: Role,
}

/// A login token (only its hash is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// SHA-256 of the token, lowercase hex.
    pub hash: String,
    /// Whose it is.
    pub user: String,
    /// The tenant it acts in.
    pub tenant: TenantId,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// Revoked by logout or a password change.
    pub revoked: bool,
}

/// An API key for automation, scoped to a tenant and a role (only its hash is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// SHA-256 of the key, lowercase hex.
    pub hash: String,
    /// The tenant it acts in.
    pub tenant: TenantId,
    /// Its name, unique in the tenant.
    pub name: String,
    /// The role it acts with.
    pub role: Role,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

/// A binding of a user to an instance they may see, pause and resume (seed 3).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceOwner {
    /// The tenant.
    pub tenant: TenantId,
    /// The instance.
    pub instance: InstanceId,
    /// The user.
    pub user: String,
}

/// One audit record to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// When.
    pub at: Timestamp,
    /// Who (`None`: unauthenticated; API keys appear as `key:NAME`).
    pub user: Option<String>,
    /// In which tenant (`None`: none resolved).
    pub tenant: Option<TenantId>,
    /// What (`POST /v1/groups`).
    pub action: String,
    /// On what (the request path).
    pub target: String,
    /// From where (the peer address).
    pub source: Option<String>,
    /// The HTTP status of the answer.
    pub result: u16,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Increasing id.
    pub id: i64,
    /// The record.
    pub entry: NewAudit,
}

/// Encrypted bytes (nonce and ciphertext) as stored; its `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(pub Vec<u8>);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}
