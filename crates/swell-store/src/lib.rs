//! Swell's storage: the source of truth (DESIGN.md invariant 2).
//!
//! One [`Store`] trait, one adapter per engine (SQLite, the default; PostgreSQL), one
//! conformance suite run against each. Every row carries its tenant; every query that
//! reads tenant data takes the tenant and filters by it. State changes that deserve an
//! event record it in the same transaction, so no event is ever lost or invented.
#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod identity;
#[cfg(feature = "conformance")]
pub mod pg_test_server;
pub mod postgres;
pub mod sqlite;

pub use identity::{
    ApiKeyRecord, AuditRecord, InstanceOwner, NewAudit, Quota, Role, RoleBinding, Sealed,
    TenantRecord, TokenRecord, UserRecord,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use swell_core::{
    Cause, EventKind, GroupSpec, InstanceId, InstanceStatus, LearnedState, Lifecycle, LoadSummary,
    TenantId, Timestamp,
};

/// A stored scaling group: its spec plus the state the controller keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    /// Owning tenant.
    pub tenant: TenantId,
    /// The group's configuration (validated before it was stored).
    pub spec: GroupSpec,
    /// The capacity the reconciler converges to.
    pub desired_capacity: u32,
    /// When a scaling action last changed `desired_capacity` (cooldown reference).
    pub last_scaling_at: Option<Timestamp>,
    /// Set when a delete was requested: the controller scales to zero, then removes the row.
    pub deleting: bool,
    /// When the group was created.
    pub created_at: Timestamp,
    /// When the spec or desired capacity last changed.
    pub updated_at: Timestamp,
}

/// A stored instance. A `pending` row is the durable create intent, a `terminating` row
/// the delete intent; `id` is the idempotency key stamped on the instance itself.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// The instance's id (also the intent's idempotency key).
    pub id: InstanceId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The group's name.
    pub group: String,
    /// Where it is in its life.
    pub status: InstanceStatus,
    /// Permanent (part of `min`) or scaled-up (seed 1's ScaledUpResource).
    pub lifecycle: Lifecycle,
    /// Creation order within the group, 1, 2, 3… (seed 1's ScaledUpOrder); assigned by
    /// the store on insert.
    pub created_order: i64,
    /// The provider's name (`process`, …).
    pub provider: String,
    /// The host it runs on, once known.
    pub host: Option<String>,
    /// The address the load balancer sends traffic to (`127.0.0.1:41234`), once known.
    pub address: Option<String>,
    /// The provider's own id (a pid, a container id, a server id), once known.
    pub native_id: Option<String>,
    /// Never chosen for scale-in.
    pub protected: bool,
    /// Why it is in its status (an error, "adopted after restart", …).
    pub status_reason: Option<String>,
    /// When the intent was recorded.
    pub created_at: Timestamp,
    /// When it started running (its warmup counts from here).
    pub started_at: Option<Timestamp>,
    /// When the row last changed.
    pub updated_at: Timestamp,
}

/// Changes to an instance, applied together with its new status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceUpdate {
    /// New host, if it changed.
    pub host: Option<String>,
    /// New address, if it changed.
    pub address: Option<String>,
    /// New native id, if it changed.
    pub native_id: Option<String>,
    /// New start time, if it changed.
    pub started_at: Option<Timestamp>,
    /// New reason (replaces the old one when set).
    pub status_reason: Option<String>,
    /// New protection flag, if it changed.
    pub protected: Option<bool>,
}

/// An event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Owning tenant.
    pub tenant: TenantId,
    /// The group it is about.
    pub group: String,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The instance it is about, if any.
    pub instance_id: Option<InstanceId>,
    /// The decision's cause, for scaling events.
    pub cause: Option<Cause>,
    /// One line for humans.
    pub message: String,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Increasing id (also the order of recording).
    pub id: i64,
    /// The event.
    pub event: NewEvent,
}

/// Which events to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
    /// Only events with an id greater than this (for following).
    pub after_id: Option<i64>,
    /// At most this many; default 1000. Without `after_id` these are the newest matches
    /// (a tail); with it, the oldest after that id (so a follower paging with the last id
    /// it saw skips nothing). Either way they are returned oldest first.
    pub limit: Option<u32>,
}

/// One write of a batch applied in one transaction ([`Store::apply_groups`]).
#[derive(Debug, Clone, PartialEq)]
pub enum GroupWrite {
    /// Create a group, as [`Store::create_group`] does.
    Create {
        /// The new group's spec.
        spec: GroupSpec,
        /// Its `group_created` event.
        event: NewEvent,
    },
    /// Replace a group's spec, as [`Store::update_group`] does.
    Update {
        /// The new spec (its name says which group).
        spec: GroupSpec,
        /// Its `group_updated` event.
        event: NewEvent,
    },
    /// Mark a group for deletion, as [`Store::mark_group_deleting`] does.
    MarkDeleting {
        /// The group.
        name: String,
        /// Its `group_deleted` event.
        event: NewEvent,
    },
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist (in this tenant).
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// `group`, `instance`, …
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The object already exists.
    #[error("{kind} `{name}` already exists")]
    Conflict {
        /// `group`, …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A stored row could not be decoded (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
}

/// Result of store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A tenant's grants as stored (column `grants`, JSON).
pub(crate) fn encode_grants(grants: &swell_core::Grants) -> Result<String> {
    serde_json::to_string(grants).map_err(|e| StoreError::Corrupt(format!("grants: {e}")))
}

/// A tenant's stored grants; a document that no longer parses is reported as corrupt,
/// never read as "nothing granted" or rewritten.
pub(crate) fn decode_grants(raw: &str) -> Result<swell_core::Grants> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("column `grants`: {e}")))
}

/// Swell's storage.
///
/// Every adapter passes the conformance suite (`swell_store::conformance`, feature
/// `conformance`). Rules that hold for every method: a group or instance of another
/// tenant is absent (`None`, `NotFound`); an event recorded together with a state change
/// is stored under the call's tenant, whatever its own `tenant` field says; a call that
/// fails records nothing.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates the tenant if it does not exist.
    async fn ensure_tenant(&self, tenant: &TenantId, now: Timestamp) -> Result<()>;

    /// Stores a new group with `desired_capacity = spec.initial_desired()` and records
    /// `event` in the same transaction; `Conflict` if the name is taken in the tenant.
    async fn create_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// The group, if it exists in the tenant.
    async fn get_group(&self, tenant: &TenantId, name: &str) -> Result<Option<GroupRecord>>;

    /// The tenant's groups, by name.
    async fn list_groups(&self, tenant: &TenantId) -> Result<Vec<GroupRecord>>;

    /// Every group of every tenant (for the controller only).
    async fn list_all_groups(&self) -> Result<Vec<GroupRecord>>;

    /// Replaces the spec (the name cannot change), clamps `desired_capacity` into the new
    /// `[min, max]`, records `event`; `NotFound` if absent.
    async fn update_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// Sets the desired capacity and, when `scaling_at` is given, the cooldown reference;
    /// records `event` in the same transaction.
    async fn set_desired_capacity(
        &self,
        tenant: &TenantId,
        name: &str,
        desired: u32,
        scaling_at: Option<Timestamp>,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// Marks the group for deletion and records `event`.
    async fn mark_group_deleting(
        &self,
        tenant: &TenantId,
        name: &str,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// Applies every write, in order, in ONE transaction: all of them or, if any fails
    /// (`Conflict`, `NotFound`, …), none, with that error. Each write does what its
    /// single-group method does (events included). The records, in the writes' order.
    async fn apply_groups(
        &self,
        tenant: &TenantId,
        writes: &[GroupWrite],
        now: Timestamp,
    ) -> Result<Vec<GroupRecord>>;

    /// Removes the group row (and its instances' rows); its events stay.
    async fn delete_group(&self, tenant: &TenantId, name: &str) -> Result<()>;

    /// Records a create intent: inserts `instance` (its `created_order` is assigned here,
    /// one more than the group's largest) and `event`, in one transaction. Returns the
    /// stored record.
    async fn create_instance(
        &self,
        instance: &InstanceRecord,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord>;

    /// Moves an instance to `status` with `update`, and records `event`, in one transaction.
    async fn update_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        status: InstanceStatus,
        update: InstanceUpdate,
        now: Timestamp,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord>;

    /// The instance, if it exists in the tenant.
    async fn get_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>>;

    /// The group's instances by `created_order`; final ones (terminated, failed) only when
    /// `include_final`.
    async fn list_instances(
        &self,
        tenant: &TenantId,
        group: &str,
        include_final: bool,
    ) -> Result<Vec<InstanceRecord>>;

    /// Every non-final instance of every tenant (for the reconciler only).
    async fn list_live_instances(&self) -> Result<Vec<InstanceRecord>>;

    /// Records an event.
    async fn append_event(&self, event: NewEvent) -> Result<EventRecord>;

    /// Keeps summaries of the group's load (an existing `(metric, at)` is
    /// replaced). `NotFound` if the group does not exist.
    async fn append_load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        summaries: &[LoadSummary],
    ) -> Result<()>;

    /// The group's load summaries at or after `since`, oldest first.
    async fn load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        since: Timestamp,
    ) -> Result<Vec<LoadSummary>>;

    /// Drops the group's summaries older than `before`; returns how many.
    async fn prune_load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        before: Timestamp,
    ) -> Result<u64>;

    /// Replaces what the group's policies have learned (a policy missing from `states`
    /// keeps nothing). `NotFound` if the group does not exist.
    async fn save_learned_states(
        &self,
        tenant: &TenantId,
        group: &str,
        states: &[LearnedState],
        at: Timestamp,
    ) -> Result<()>;

    /// What the group's policies learned, as last saved (none for an unknown group).
    async fn learned_states(&self, tenant: &TenantId, group: &str) -> Result<Vec<LearnedState>>;

    /// The group's events, oldest first, per `filter`.
    async fn list_events(
        &self,
        tenant: &TenantId,
        group: &str,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>>;

    // ---- identity, access and accounting (see `identity`) ----

    /// Stores a new tenant; `Conflict` if the id is taken.
    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord>;

    /// The tenant, if it exists.
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>>;

    /// Every tenant, by id.
    async fn list_tenants(&self) -> Result<Vec<TenantRecord>>;

    /// Replaces the tenant's display fields, quota, grants, deleting flag and `updated_at`;
    /// `NotFound` if absent.
    async fn update_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord>;

    /// Removes the tenant with its role bindings, instance owners, tokens, API keys and
    /// credentials (its events and audit records stay); `NotFound` if absent, `Conflict`
    /// (kind `tenant`) while it still has groups.
    async fn delete_tenant(&self, id: &TenantId) -> Result<()>;

    /// The tenant's effective quota: its own limits, each missing one taken from the
    /// service-wide default. `NotFound` if the tenant does not exist.
    async fn get_quota(&self, tenant: &TenantId) -> Result<Quota>;

    /// The service-wide default quota (unlimited until an admin sets one).
    async fn get_default_quota(&self) -> Result<Quota>;

    /// Sets the service-wide default quota.
    async fn set_default_quota(&self, quota: &Quota) -> Result<()>;

    /// Stores a new user; `Conflict` if the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<()>;

    /// The user, if it exists.
    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>>;

    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;

    /// Removes the user with its bindings and tokens; `NotFound` if absent.
    async fn delete_user(&self, name: &str) -> Result<()>;

    /// Replaces the password hash and revokes every token of the user, in one
    /// transaction; `NotFound` if absent.
    async fn set_password(&self, name: &str, password_hash: &str, now: Timestamp) -> Result<()>;

    /// Gives the user `role` in the tenant (replacing any other role there); `NotFound`
    /// (kind `user` or `tenant`) if either is absent.
    async fn set_role(
        &self,
        user: &str,
        tenant: &TenantId,
        role: Role,
        now: Timestamp,
    ) -> Result<()>;

    /// Takes the user's role in the tenant away; `NotFound` (kind `role`) if there is none.
    async fn remove_role(&self, user: &str, tenant: &TenantId) -> Result<()>;

    /// The user's role in the tenant, if any.
    async fn get_role(&self, user: &str, tenant: &TenantId) -> Result<Option<Role>>;

    /// The tenant's role bindings, by user.
    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<RoleBinding>>;

    /// Binds a user to an instance of the tenant; `NotFound` (kind `instance` or `user`)
    /// if either is absent. Idempotent.
    async fn add_instance_owner(&self, owner: &InstanceOwner, now: Timestamp) -> Result<()>;

    /// Removes the binding; `NotFound` (kind `instance owner`) if there is none.
    async fn remove_instance_owner(&self, owner: &InstanceOwner) -> Result<()>;

    /// The tenant's instance-owner bindings (of one user when `user` is given), by
    /// instance then user.
    async fn list_instance_owners(
        &self,
        tenant: &TenantId,
        user: Option<&str>,
    ) -> Result<Vec<InstanceOwner>>;

    /// Stores a new token (by hash).
    async fn create_token(&self, token: &TokenRecord) -> Result<()>;

    /// The token with this hash, if any (revoked and expired ones too).
    async fn get_token(&self, hash: &str) -> Result<Option<TokenRecord>>;

    /// Revokes one token; `NotFound` if absent.
    async fn revoke_token(&self, hash: &str) -> Result<()>;

    /// Revokes every token of the user; returns how many were live.
    async fn revoke_user_tokens(&self, user: &str) -> Result<u64>;

    /// Stores a new API key; `Conflict` if the name is taken in its tenant, `NotFound`
    /// (kind `tenant`) if the tenant is absent.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()>;

    /// The API key with this hash, if any.
    async fn get_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;

    /// The tenant's API keys, by name.
    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>>;

    /// Removes the tenant's API key; `NotFound` if absent.
    async fn delete_api_key(&self, tenant: &TenantId, name: &str) -> Result<()>;

    /// Appends an audit record.
    async fn append_audit(&self, entry: &NewAudit) -> Result<AuditRecord>;

    /// Audit records oldest first: of one tenant, or of all when `tenant` is `None`; the
    /// newest `limit` (default 1000).
    async fn list_audit(
        &self,
        tenant: Option<&TenantId>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>>;

    /// Stores (or replaces) an encrypted provider credential of the tenant.
    async fn put_credential(
        &self,
        tenant: &TenantId,
        name: &str,
        sealed: &Sealed,
        now: Timestamp,
    ) -> Result<()>;

    /// The encrypted provider credential, if any.
    async fn get_credential(&self, tenant: &TenantId, name: &str) -> Result<Option<Sealed>>;
}
