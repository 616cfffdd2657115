//! Swell's storage: the source of truth (DESIGN.md invariant 2).
//!
//! One [`Store`] trait, the sum of one trait per aggregate (its module holds the trait
//! and its SQL: [`tenants`], [`groups`], [`instances`], [`events`], [`history`], [`metric_points`],
//! [`access`], [`audit`], [`credentials`], [`providers`], [`cost`], [`notifications`]); each statement written once and run on either
//! engine (SQLite, the default; PostgreSQL) through a small dialect layer (`sql.rs`);
//! one conformance suite run against each. Every row carries its tenant; every query
//! that reads tenant data takes the tenant and filters by it. State changes that deserve
//! an event record it in the same transaction, so no event is ever lost or invented.
#![warn(missing_docs)]

pub mod access;
pub mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod cost;
pub mod credentials;
pub mod events;
mod group_commit;
pub mod groups;
pub mod history;
pub mod identity;
pub mod instances;
pub mod metric_points;
pub mod notifications;
#[cfg(feature = "conformance")]
pub mod pg_test_server;
pub mod postgres;
pub mod providers;
mod sql;
pub mod sqlite;
pub mod tenants;

pub use access::AccessStore;
pub use audit::AuditStore;
pub use cost::{CostStore, PriceRecord};
pub use credentials::CredentialStore;
pub use events::DEFAULT_EVENT_LIMIT;
pub use events::EventStore;
pub use groups::GroupStore;
pub use history::HistoryStore;
pub use instances::{InstanceStore, LiveCount};
pub use metric_points::{
    GroupMetricPoint, InstanceMetricPoint, InstanceReading, MetricInterval, MetricPointStore,
    PointFilter,
};
pub use notifications::{DeliveryOutcome, DeliveryRecord, NotificationStore, WebhookRecord};
pub use providers::{ProviderRecord, ProviderStore};
pub use tenants::TenantStore;

pub use identity::{
    ApiKeyRecord, AuditRecord, InstanceOwner, NewAudit, Quota, Role, RoleBinding, Sealed,
    TenantRecord, TokenRecord, UserRecord,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use swell_core::{
    Cause, EventKind, GroupSpec, InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp,
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
    /// When a user suspended the group's autoscaling, while it is suspended: the
    /// policies then change no desired capacity (a user still can).
    pub suspended_at: Option<Timestamp>,
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

/// One instance's move to a status, as [`InstanceStore::update_instances`] applies it
/// (the arguments of one [`InstanceStore::update_instance`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceChange {
    /// The instance's tenant.
    pub tenant: TenantId,
    /// The instance.
    pub id: InstanceId,
    /// Its new status.
    pub status: InstanceStatus,
    /// The fields that change with it.
    pub update: InstanceUpdate,
    /// Its `updated_at`.
    pub now: Timestamp,
    /// The event recorded with it.
    pub event: Option<NewEvent>,
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

/// One write of a batch applied in one transaction ([`GroupStore::apply_groups`]).
#[derive(Debug, Clone, PartialEq)]
pub enum GroupWrite {
    /// Create a group, as [`GroupStore::create_group`] does.
    Create {
        /// The new group's spec.
        spec: GroupSpec,
        /// Its `group_created` event.
        event: NewEvent,
    },
    /// Replace a group's spec, as [`GroupStore::update_group`] does.
    Update {
        /// The new spec (its name says which group).
        spec: GroupSpec,
        /// Its `group_updated` event.
        event: NewEvent,
    },
    /// Mark a group for deletion, as [`GroupStore::mark_group_deleting`] does.
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

impl StoreError {
    /// The same error for one more caller, when one failure answers many (the callers
    /// of a shared write): the kinds a caller acts on are kept; a database or migration
    /// error, which cannot be copied, becomes one with its message.
    pub fn for_another_caller(&self) -> StoreError {
        match self {
            StoreError::NotFound { kind, name } => StoreError::NotFound {
                kind,
                name: name.clone(),
            },
            StoreError::Conflict { kind, name } => StoreError::Conflict {
                kind,
                name: name.clone(),
            },
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            other => StoreError::lost(&other.to_string()),
        }
    }

    /// A write whose outcome cannot be known any more (what carried it stopped, or
    /// failed with an error that answers another caller): to be read as not done.
    pub fn lost(why: &str) -> StoreError {
        StoreError::Database(sqlx::Error::Protocol(format!("the write was lost: {why}")))
    }
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
///
/// It is the sum of one trait per aggregate, so a caller holding `Arc<dyn Store>` (or a
/// `S: Store`) reaches every method, while a concrete store's methods need the
/// aggregate's trait in scope (`use swell_store::GroupStore`). Any type that implements
/// every aggregate trait is a `Store`.
pub trait Store:
    TenantStore
    + GroupStore
    + InstanceStore
    + EventStore
    + HistoryStore
    + MetricPointStore
    + AccessStore
    + AuditStore
    + CredentialStore
    + ProviderStore
    + CostStore
    + NotificationStore
{
}

impl<T> Store for T where
    T: TenantStore
        + GroupStore
        + InstanceStore
        + EventStore
        + HistoryStore
        + MetricPointStore
        + AccessStore
        + AuditStore
        + CredentialStore
        + ProviderStore
        + CostStore
        + NotificationStore
{
}
