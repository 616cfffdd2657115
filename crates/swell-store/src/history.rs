//! What a group's policies remember: load summaries and learned states.

use crate::Result;
use crate::sql::{RowLock, SqlStore, Tx, corrupt, not_found, sql};
use async_trait::async_trait;
use swell_core::{LearnedState, LoadSummary, TenantId, Timestamp};

/// What a group's policies remember: load summaries and learned states.
#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
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
}

/// `NotFound` (kind `group`) unless the group exists; its row locked with `lock` until
/// the transaction ends.
async fn group_exists(tx: &mut Tx, tenant: &TenantId, group: &str, lock: RowLock) -> Result<()> {
    sql("SELECT 1 FROM scaling_groups WHERE tenant = $1 AND name = $2")
        .bind(tenant)
        .bind(group)
        .lock(lock)
        .fetch_optional(tx)
        .await?
        .map(|_| ())
        .ok_or_else(|| not_found("group", group))
}

#[async_trait]
impl<S: SqlStore> HistoryStore for S {
    async fn append_load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        summaries: &[LoadSummary],
    ) -> Result<()> {
        let mut tx = self.db().begin().await?;
        // KEY SHARE: the group cannot be deleted under us (its rows would be orphans),
        // but its other writers need not wait.
        group_exists(&mut tx, tenant, group, RowLock::KeyShare).await?;
        for s in summaries {
            sql(
                "INSERT INTO load_history (tenant, group_name, metric, at, mean, max) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, group_name, metric, at) \
                 DO UPDATE SET mean = excluded.mean, max = excluded.max",
            )
            .bind(tenant)
            .bind(group)
            .bind(s.metric.as_str())
            .bind(s.at)
            .bind(s.mean)
            .bind(s.max)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }

    async fn load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        since: Timestamp,
    ) -> Result<Vec<LoadSummary>> {
        sql("SELECT metric, at, mean, max FROM load_history \
             WHERE tenant = $1 AND group_name = $2 AND at >= $3 ORDER BY at, metric")
        .bind(tenant)
        .bind(group)
        .bind(since)
        .fetch_all_as(self.db(), |row| {
            let metric: String = row.get("metric")?;
            let metric = serde_json::from_value(serde_json::Value::String(metric))
                .map_err(|e| corrupt("metric", e))?;
            Ok(LoadSummary {
                at: row.time("at")?,
                metric,
                mean: row.get("mean")?,
                max: row.get("max")?,
            })
        })
        .await
    }

    async fn prune_load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        before: Timestamp,
    ) -> Result<u64> {
        sql("DELETE FROM load_history WHERE tenant = $1 AND group_name = $2 AND at < $3")
            .bind(tenant)
            .bind(group)
            .bind(before)
            .execute(self.db())
            .await
    }

    async fn save_learned_states(
        &self,
        tenant: &TenantId,
        group: &str,
        states: &[LearnedState],
        at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.db().begin().await?;
        // Saves of one group take turns: two interleaved delete-then-insert transactions
        // would collide on the primary key.
        group_exists(&mut tx, tenant, group, RowLock::NoKeyUpdate).await?;
        sql("DELETE FROM learned_state WHERE tenant = $1 AND group_name = $2")
            .bind(tenant)
            .bind(group)
            .execute(&mut tx)
            .await?;
        for s in states {
            sql(
                "INSERT INTO learned_state (tenant, group_name, policy, state, saved_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(tenant)
            .bind(group)
            .bind(&s.policy)
            .bind(s.state.to_string())
            .bind(at)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }

    async fn learned_states(&self, tenant: &TenantId, group: &str) -> Result<Vec<LearnedState>> {
        sql("SELECT policy, state FROM learned_state \
             WHERE tenant = $1 AND group_name = $2 ORDER BY policy")
        .bind(tenant)
        .bind(group)
        .fetch_all_as(self.db(), |row| {
            let state: String = row.get("state")?;
            Ok(LearnedState {
                policy: row.get("policy")?,
                state: serde_json::from_str(&state).map_err(|e| corrupt("state", e))?,
            })
        })
        .await
    }
}
