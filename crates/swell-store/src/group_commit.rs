//! Group commit for SQLite: many callers' write transactions share one database
//! transaction and one `fsync`, and each caller still returns only once its writes are
//! durable.
//!
//! SQLite has one writer, and with `synchronous = FULL` every `COMMIT` waits for the disk
//! (about 4 ms on the development VM). One commit per caller caps a store at a few
//! hundred writes a second, and callers queued behind it wait for every commit ahead of
//! them (docs/benchmarks.md, "The controller"). Here callers take turns on one in-process
//! lock ([`Writer`], first come first served, so no caller sleeps in SQLite's busy
//! handler); each runs its statements inside a `SAVEPOINT` of the shared transaction, so
//! a caller's failure undoes only its own writes. When a caller commits, it releases its
//! savepoint and queues again on the lock behind the callers that were already waiting;
//! by the time its turn comes they have added their writes, and it commits them all
//! at once, unless one of them already has. A transaction holds at most
//! [`MAX_MEMBERS`] callers: the one that fills it commits at once, so under a burst
//! (thousands of callers queued) each caller's writes are still committed after at most
//! that many others', not after the whole queue's. A caller's `commit` returns after the
//! `COMMIT` that contains its writes: a create's `pending` row is on disk before the
//! provider is called (DESIGN.md invariant 2).
//!
//! The commit runs in a task of its own, so a caller that stops waiting (a cancelled
//! future) cannot leave the shared transaction open with others' writes in it. A caller
//! that drops its transaction without committing leaves its savepoint to be rolled back
//! by a task of its own, or by whoever takes the lock next.

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Sqlite, Transaction};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

/// How a shared transaction ended: `None` while it is open, then `Ok` once committed or
/// the error that lost it.
type Outcome = Option<Result<(), String>>;

/// The most callers one shared transaction holds: the one that fills it commits it.
/// Past a few dozen, a larger batch saves little `fsync` time per write and makes every
/// member wait longer for its `COMMIT`.
const MAX_MEMBERS: usize = 64;

/// The savepoint of the caller whose turn it is (one at a time: they never nest).
const SAVEPOINT: &str = "SAVEPOINT swell_member";
/// A caller's savepoint released and the next caller's opened, in one round trip to
/// SQLite's connection thread: each statement sent is a wait for that thread, and the
/// writer is held across it. A savepoint opened for a caller that never comes is empty:
/// a `COMMIT` commits it with the rest.
pub(crate) const RELEASE_AND_NEXT: &str = "RELEASE swell_member; SAVEPOINT swell_member";
/// An abandoned caller's writes undone and its savepoint closed.
const ROLL_BACK: &str = "ROLLBACK TO swell_member; RELEASE swell_member";

/// A file store's one writer: the turn of the callers that write, and the transaction
/// they share.
#[derive(Debug)]
pub(crate) struct Writer {
    batch: Arc<Mutex<Batch>>,
    /// `COMMIT`s done so far (each for one or more callers' writes).
    commits: Arc<AtomicU64>,
}

/// The shared transaction and who is in it.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The open transaction (`BEGIN IMMEDIATE`), if any.
    tx: Option<Transaction<'static, Sqlite>>,
    /// Callers whose writes are in it, waiting for its commit.
    members: usize,
    /// Tells those callers how it ended.
    done: watch::Sender<Outcome>,
    /// A caller dropped its transaction without committing: its savepoint is still open.
    abandoned: bool,
    /// The next caller's savepoint is open already (opened with the last caller's
    /// release, [`RELEASE_AND_NEXT`]).
    next_open: bool,
    /// `COMMIT`s done so far (the [`Writer`]'s count).
    commits: Arc<AtomicU64>,
}

impl Default for Writer {
    fn default() -> Self {
        let commits = Arc::new(AtomicU64::new(0));
        Writer {
            commits: commits.clone(),
            batch: Arc::new(Mutex::new(Batch {
                tx: None,
                members: 0,
                done: watch::channel(None).0,
                abandoned: false,
                next_open: false,
                commits,
            })),
        }
    }
}

/// The error a caller gets when the shared transaction its writes were in was lost.
fn lost(why: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("the shared write transaction was lost: {why}"))
}

impl Writer {
    /// `COMMIT`s done so far (each for one or more callers' writes).
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Waits for the caller's turn and opens its savepoint in the shared transaction
    /// (beginning one if none is open).
    pub(crate) async fn begin(&self, pool: &SqlitePool) -> Result<Member, sqlx::Error> {
        let mut guard = self.batch.clone().lock_owned().await;
        if guard.abandoned {
            guard.settle().await;
        }
        if guard.tx.is_none() {
            guard.tx = Some(pool.begin_with("BEGIN IMMEDIATE").await?);
            guard.next_open = false;
        }
        let ready = std::mem::take(&mut guard.next_open);
        let opened = match guard.tx.as_mut() {
            Some(_) if ready => Ok(()),
            Some(tx) => sqlx::query(SAVEPOINT).execute(&mut **tx).await.map(|_| ()),
            None => Err(lost("not open")),
        };
        if let Err(e) = opened {
            guard.fail(&e.to_string());
            return Err(e);
        }
        Ok(Member { guard: Some(guard) })
    }
}

impl Batch {
    /// Ends the shared transaction on `why`: rolled back, its callers told.
    fn fail(&mut self, why: &str) {
        // Dropping an sqlx transaction rolls it back.
        self.tx = None;
        self.abandoned = false;
        self.next_open = false;
        self.finish(Err(why.to_string()));
    }

    /// Tells the callers in the shared transaction how it ended, and starts afresh.
    fn finish(&mut self, outcome: Result<(), String>) {
        self.done.send_replace(Some(outcome));
        self.done = watch::channel(None).0;
        self.members = 0;
    }

    /// Rolls back an abandoned caller's savepoint; with nobody else's writes in the
    /// transaction, the transaction too, so the write lock is let go.
    async fn settle(&mut self) {
        self.abandoned = false;
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        if let Err(e) = sqlx::query(ROLL_BACK).execute(&mut **tx).await {
            self.fail(&e.to_string());
            return;
        }
        if self.members == 0
            && let Some(tx) = self.tx.take()
            && let Err(e) = tx.rollback().await
        {
            tracing::warn!("rolling back an empty write transaction: {e}");
        }
    }

    /// Commits the shared transaction and tells its callers.
    async fn commit(&mut self) -> Result<(), String> {
        if self.abandoned {
            self.settle().await;
        }
        self.next_open = false;
        let outcome = match self.tx.take() {
            Some(tx) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                tx.commit().await.map_err(|e| e.to_string())
            }
            None => Err("not open".to_string()),
        };
        self.finish(outcome.clone());
        outcome
    }
}

/// One caller's write transaction: its turn on the [`Writer`] and its savepoint.
#[derive(Debug)]
pub(crate) struct Member {
    /// `None` once committed.
    guard: Option<OwnedMutexGuard<Batch>>,
}

impl Member {
    /// The connection its statements run on.
    pub(crate) fn conn(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        match self.guard.as_mut().and_then(|g| g.tx.as_mut()) {
            Some(tx) => Ok(&mut **tx),
            None => Err(lost("not open")),
        }
    }

    /// Adds its writes to the shared transaction and returns once a `COMMIT` containing
    /// them is done (the module documentation says how).
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(mut guard) = self.guard.take() else {
            return Err(lost("already committed"));
        };
        let released = match guard.tx.as_mut() {
            Some(tx) => sqlx::query(RELEASE_AND_NEXT)
                .execute(&mut **tx)
                .await
                .map(|_| ()),
            None => Err(lost("not open")),
        };
        if let Err(e) = released {
            guard.fail(&e.to_string());
            return Err(e);
        }
        Member { guard: Some(guard) }.released().await
    }

    /// [`Member::commit`] once its last statement has run [`RELEASE_AND_NEXT`] itself
    /// (sent with it in one round trip).
    pub(crate) async fn released(mut self) -> Result<(), sqlx::Error> {
        let Some(mut guard) = self.guard.take() else {
            return Err(lost("already committed"));
        };
        guard.next_open = true;
        guard.members += 1;
        let finishing = if guard.members >= MAX_MEMBERS {
            // A full transaction commits in this caller's turn: a caller's wait for the
            // `COMMIT` holding its writes is then at most MAX_MEMBERS writes, however
            // many callers queue behind it (a burst of thousands of creates).
            tokio::spawn(async move { guard.commit().await })
        } else {
            let mut outcome = guard.done.subscribe();
            let batch = OwnedMutexGuard::mutex(&guard).clone();
            let finisher = tokio::spawn(async move {
                // Ends as soon as another caller's `COMMIT` carried these writes: a
                // finisher that waited for its lock turn regardless would queue behind
                // every writer of a busy store for nothing.
                let ended = async {
                    outcome
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|o| o.clone())
                };
                let mut guard = tokio::select! {
                    Some(ended) = ended => return ended,
                    guard = batch.lock_owned() => guard,
                };
                if let Some(ended) = outcome.borrow().clone() {
                    return ended;
                }
                // Still open, so it is this caller's: nobody has committed it since.
                guard.commit().await
            });
            // The callers already waiting take their turns now, and join this
            // transaction. The next one is woken after the spawn: a task woken last runs
            // next on this thread, so the writer is not left idle behind the finisher.
            drop(guard);
            finisher
        };
        match finishing.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(lost(&why)),
            Err(e) => Err(lost(&e.to_string())),
        }
    }
}

impl Drop for Member {
    /// A transaction dropped without commit: its savepoint is rolled back, in a task
    /// (it takes statements), or by the next caller when there is no runtime.
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        guard.abandoned = true;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { guard.settle().await });
        }
    }
}
