//! The instance recorder: the moves of many tasks' instances (a create's `running`, a
//! retirement's `draining`, `terminating` and `terminated`) written together, in one
//! [`InstanceStore::update_instances`](swell_store::InstanceStore::update_instances)
//! transaction, instead of one turn each at the store's writer.
//!
//! Under a burst (thousands of groups scaling at once) each move costs a turn at the one
//! SQLite writer, and an evaluation's one write queues behind all of them
//! (docs/benchmarks.md, "The controller"). Here the moves asked for while the recorder's
//! transactions are under way ([`IN_FLIGHT`] at most) wait in one queue and go together
//! in the next, so a transaction's size follows the load (one move when idle, up to
//! [`MAX_MOVES`] in a burst). A transaction runs in a task of the recorder's, so a caller
//! that stops waiting (a worker's task aborted with its group) cannot cancel other
//! callers' moves.

use super::*;
use swell_store::InstanceChange;
use tokio::sync::oneshot;

/// The most moves one transaction carries: enough that a burst's moves take a few turns
/// at the writer, few enough that one turn does not hold the writer for long.
const MAX_MOVES: usize = 128;

/// How many transactions of moves may be under way at once: one would leave the writer
/// to other callers while it waits for its `COMMIT`; a few keep a burst's moves flowing.
const IN_FLIGHT: usize = 4;

/// A move and where its outcome goes.
type Asked = (
    InstanceChange,
    oneshot::Sender<Result<InstanceRecord, StoreError>>,
);

/// Gathers instance moves into shared transactions (the module documentation).
pub(super) struct InstanceRecorder {
    store: Arc<dyn Store>,
    /// The queue to the recorder's task, started with the first move (inside the
    /// runtime). Unbounded, but every caller waits for its answer: it holds at most one
    /// move per create or retirement under way.
    queue: std::sync::OnceLock<mpsc::UnboundedSender<Asked>>,
}

impl InstanceRecorder {
    /// A recorder writing to `store`.
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        InstanceRecorder {
            store,
            queue: std::sync::OnceLock::new(),
        }
    }

    /// Moves an instance as [`InstanceStore::update_instance`] does, in a transaction
    /// shared with the moves other tasks ask for meanwhile; returns once it is stored.
    ///
    /// [`InstanceStore::update_instance`]: swell_store::InstanceStore::update_instance
    pub(super) async fn update(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        status: InstanceStatus,
        update: InstanceUpdate,
        now: Timestamp,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord, StoreError> {
        let change = InstanceChange {
            tenant: tenant.clone(),
            id: id.clone(),
            status,
            update,
            now,
            event,
        };
        let (answer, outcome) = oneshot::channel();
        let queue = self.queue.get_or_init(|| spawn(self.store.clone()));
        if queue.send((change, answer)).is_err() {
            return Err(StoreError::lost("the instance recorder stopped"));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::lost("the instance recorder stopped")))
    }
}

/// Starts the recorder's task: it takes what is queued (up to [`MAX_MOVES`]) and writes
/// it in one transaction of its own, up to [`IN_FLIGHT`] at a time; what queues meanwhile
/// goes in the next.
fn spawn(store: Arc<dyn Store>) -> mpsc::UnboundedSender<Asked> {
    let (queue, mut asked) = mpsc::unbounded_channel::<Asked>();
    tokio::spawn(async move {
        let turns = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        loop {
            let Ok(turn) = turns.clone().acquire_owned().await else {
                return;
            };
            let mut batch = Vec::with_capacity(MAX_MOVES);
            if asked.recv_many(&mut batch, MAX_MOVES).await == 0 {
                return;
            }
            let store = store.clone();
            tokio::spawn(async move {
                write(store.as_ref(), batch).await;
                drop(turn);
            });
        }
    });
    queue
}

/// Writes `batch` in one transaction and answers each caller.
async fn write(store: &dyn Store, batch: Vec<Asked>) {
    let (changes, answers): (Vec<InstanceChange>, Vec<_>) = batch.into_iter().unzip();
    let ids: Vec<InstanceId> = changes.iter().map(|c| c.id.clone()).collect();
    match store.update_instances(changes).await {
        Ok(moved) => {
            for ((answer, id), moved) in answers.into_iter().zip(ids).zip(moved) {
                let _ = answer.send(moved.ok_or_else(|| StoreError::NotFound {
                    kind: "instance",
                    name: id.0,
                }));
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.for_another_caller()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_store::SqliteStore;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// Moves asked for at once (more than one transaction holds) each come back with
    /// their own instance's record, stored; a move of an instance the tenant does not
    /// have is `NotFound` without failing the moves beside it.
    #[tokio::test]
    async fn each_caller_gets_its_own_move_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("swell.db"))
                .await
                .unwrap(),
        );
        let tenant = TenantId::new("recorder").unwrap();
        let spec = swell_store::conformance::spec("web", 0, 10);
        let event = NewEvent {
            tenant: tenant.clone(),
            group: "web".into(),
            at: at(1_000),
            kind: EventKind::GroupCreated,
            instance_id: None,
            cause: None,
            message: "created".into(),
        };
        store
            .create_group(&tenant, &spec, at(1_000), event)
            .await
            .unwrap();
        let n = MAX_MOVES * 2 + 7;
        let intents: Vec<InstanceRecord> = (0..n)
            .map(|i| swell_store::conformance::instance(&tenant, "web", &format!("i-{i}"), 1_000))
            .collect();
        store.create_instances(&intents).await.unwrap();
        let recorder = InstanceRecorder::new(store.clone());
        let moves = (0..n).map(|i| {
            let update = InstanceUpdate {
                host: Some(format!("host-{i}")),
                ..InstanceUpdate::default()
            };
            recorder.update(
                &tenant,
                &intents[i].id,
                InstanceStatus::Running,
                update,
                at(2_000 + i as i64),
                None,
            )
        });
        let nope = InstanceId("nope".into());
        let missing = recorder.update(
            &tenant,
            &nope,
            InstanceStatus::Running,
            InstanceUpdate::default(),
            at(3_000),
            None,
        );
        let (moved, missing) = tokio::join!(futures_util::future::join_all(moves), missing);
        for (i, moved) in moved.into_iter().enumerate() {
            let record = moved.unwrap_or_else(|e| panic!("move {i}: {e}"));
            assert_eq!(record.id, intents[i].id);
            assert_eq!(record.host.as_deref(), Some(format!("host-{i}").as_str()));
            assert_eq!(record.updated_at, at(2_000 + i as i64));
            assert_eq!(
                store.get_instance(&tenant, &record.id).await.unwrap(),
                Some(record)
            );
        }
        assert!(
            matches!(
                missing,
                Err(StoreError::NotFound {
                    kind: "instance",
                    ..
                })
            ),
            "{missing:?}"
        );
    }
}
