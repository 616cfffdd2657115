//! Policy memory: the load history forecasting policies learn from, and what they
//! learned, kept in the store across restarts.

use super::*;

/// The period of the load summaries kept for forecasting policies: the resolution of
/// their seasonal history (`LoadHistory`'s buckets).
pub(super) const LOAD_SUMMARY_PERIOD: Duration = Duration::from_secs(300);

/// How long load summaries are kept: the two weeks and a day a forecasting policy reads
/// (two weekly lags), with a day to spare.
pub(super) const LOAD_HISTORY_KEPT: Duration = Duration::from_secs(16 * 86_400);

/// Load summaries kept in memory while the store refuses them: a day of three metrics,
/// then the oldest are dropped.
pub(super) const UNSAVED_KEPT: usize = 3 * 288;

impl GroupWorker {
    /// Hands a new engine the group's stored load history, if a policy learns from it.
    /// Unreadable history is not fatal: the policies start with an empty memory.
    pub(super) async fn remember(&mut self, group: &GroupRecord, engine: &mut PolicyEngine) {
        let metrics = engine.remembered_metrics();
        if metrics.is_empty() {
            return;
        }
        let since = self.controller.clock.now().sub(LOAD_HISTORY_KEPT);
        let store = &self.controller.store;
        match store
            .load_history(&group.tenant, &group.spec.name, since)
            .await
        {
            Ok(past) => engine.remember(&past),
            Err(e) => tracing::warn!(group = %group.spec.name, "load history: {e}"),
        }
    }

    /// What the group's policies learned before this worker started. Unreadable state
    /// is not fatal: the policies start from scratch.
    pub(super) async fn stored_learned(&mut self, group: &GroupRecord) -> Vec<LearnedState> {
        let store = &self.controller.store;
        store
            .learned_states(&group.tenant, &group.spec.name)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(group = %group.spec.name, "learned state: {e}");
                Vec::new()
            })
    }

    /// Adds a group-level sample to the window, and to the load history when a policy
    /// learns from its metric.
    pub(super) fn observe(&mut self, sample: MetricSample) {
        self.window.push(sample);
        let remembered = self
            .engine
            .as_ref()
            .is_some_and(|(_, e)| e.remembered_metrics().contains(&sample.metric));
        if remembered {
            let closed = self.summarizer.push(&sample);
            self.unsaved.extend(closed);
        }
    }

    /// Stores the load summaries closed since the last call with what the policies have
    /// learned by now (so every five minutes, and when the worker stops), and hourly drops
    /// summaries past [`LOAD_HISTORY_KEPT`]. Summaries the store refuses are kept for the
    /// next call, up to [`UNSAVED_KEPT`]; a refused learned state waits for the next save.
    pub(super) async fn save_memory(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let store = self.controller.store.clone();
        let (tenant, name) = (&self.key.0, &self.key.1);
        if let Err(e) = store.append_load_history(tenant, name, &self.unsaved).await {
            tracing::warn!(group = %name, "load history: {e}");
            let excess = self.unsaved.len().saturating_sub(UNSAVED_KEPT);
            self.unsaved.drain(..excess);
            return;
        }
        self.unsaved.clear();
        let now = self.controller.clock.now();
        let learned = self.engine.as_ref().map(|(_, e)| e.learned());
        if let Some(learned) = learned
            && let Err(e) = store.save_learned_states(tenant, name, &learned, now).await
        {
            tracing::warn!(group = %name, "learned state: {e}");
        }
        if self
            .history_pruned_at
            .is_none_or(|at| now.since(at) >= Duration::from_secs(3600))
        {
            self.history_pruned_at = Some(now);
            let before = now.sub(LOAD_HISTORY_KEPT);
            if let Err(e) = store.prune_load_history(tenant, name, before).await {
                tracing::warn!(group = %name, "load history: {e}");
            }
        }
    }
}
