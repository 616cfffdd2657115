//! The reconciler's decisions, as one pure function: [`plan`] takes what a group's
//! worker knows at one pass (its desired capacity, its instances, what the providers
//! report, their room and backoff, the tenant's quota) and returns a [`Plan`]: which
//! instances to fail, replace, take back, create and retire, and why a scale-out was
//! cut or is waiting. The worker only carries the plan out and writes its events.
//!
//! "Why was this instance not created?" is answered here: [`Plan::capped`] (the
//! tenant's quota, the providers' room) and [`Plan::waiting`] (a provider backing off
//! after failed creates).
//!
//! The steps, in order (each sees the previous ones' outcome):
//!
//! 1. **Leftovers**: what a provider still runs of the group with no record or a
//!    `failed` one (an ERROR server whose cleanup failed) is swept ([`Plan::sweep`]).
//! 2. **Dead**: a `running` or `paused` instance its provider no longer runs is failed
//!    and replaced ([`Plan::fail`]).
//! 3. **Unhealthy**: a `running` instance the load balancer has found unhealthy for
//!    `replace_after` is retired and replaced ([`Plan::replace`]); protection does not
//!    keep a broken instance.
//! 4. **Scale-out**: draining instances whose retirement can still be called off are
//!    taken back first ([`Plan::reuse`]); the rest is created up to the tenant's quota
//!    (every instance counted at its provider's size, a new one at the largest among
//!    the group's providers) and the providers' room, each create on the first provider
//!    by priority that has room and is not backing off; one that failed
//!    [`YIELD_AFTER`] creates in a row yields to the next while it backs off.
//! 5. **Scale-in**: surplus instances are retired in [`scale_in_order`]: the group's
//!    `termination_policy` rules first, then the least-preferred provider's, then
//!    scaled-up before permanent, newest first; never a protected one
//!    ([`Plan::retire`]; the surplus protection keeps is [`Plan::kept_protected`]). A
//!    group being deleted retires its protected instances too: protection is against
//!    scale-in, and a deletion is asked for by a user. One still being created is
//!    retired once it is ([`Plan::retire_once_created`]).
//! 6. **Interrupted retirements** (a reload of the worker) are picked up again
//!    ([`Plan::resume`]).

use crate::group::TerminationRule;
use crate::{EventKind, InstanceId, InstanceStatus, Lifecycle, Timestamp};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// First wait after a failed create; it doubles with each further failure in a row.
pub const CREATE_BACKOFF_BASE: Duration = Duration::from_secs(5);
/// The longest wait between two creates that keep failing.
pub const CREATE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failed creates in a row after which a provider yields to the group's next one.
pub const YIELD_AFTER: u32 = 3;

/// A provider's failed creates in a row and when the next attempt may start, so that a
/// cloud that is out of quota or down is not asked again at every evaluation tick. A
/// successful create forgets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateBackoff {
    /// Failed creates in a row.
    pub failures: u32,
    /// The earliest next attempt.
    pub until: Timestamp,
}

impl CreateBackoff {
    /// The wait after `failures` failed creates in a row: 5 s, 10 s, 20 s, … up to 60 s.
    pub fn delay(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        CREATE_BACKOFF_BASE
            .saturating_mul(1u32 << doublings)
            .min(CREATE_BACKOFF_MAX)
    }

    /// The backoff after one more failed create at `now`.
    pub fn after_failure(previous: Option<CreateBackoff>, now: Timestamp) -> CreateBackoff {
        let failures = previous.map_or(0, |b| b.failures).saturating_add(1);
        CreateBackoff {
            failures,
            until: now.add(Self::delay(failures)),
        }
    }

    /// Whether it still holds at `now`.
    pub fn holds(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// How much more a provider can take (its `Provider::capacity`, e.g. an OpenStack
/// project's limits and its hypervisors under over-commit); `None` fields are
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Room {
    /// More instances.
    pub instances: Option<u32>,
    /// More vCPUs.
    pub vcpus: Option<f64>,
    /// More MiB of memory.
    pub memory_mb: Option<u64>,
}

/// What one instance takes of a provider's [`Room`] (its `Provider::instance_size`: an
/// OpenStack flavor, else the template's numbers); a 0 leaves that resource out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// vCPUs per instance.
    pub vcpus: u32,
    /// MiB per instance.
    pub memory_mb: u64,
}

/// What instances count against a tenant's vCPU and memory quota; `None` is unknown
/// (the provider could not say and the template gives 0).
///
/// Unknown is never read as 0: a template that leaves `vcpus`/`memory_mb` at 0 is the
/// normal case for OpenStack (the flavor says the size), and counting such instances as
/// taking nothing would lift the quota exactly when Nova is slow to answer. So an
/// unknown size under a limit on it lets no new instance be created until it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSize {
    /// vCPUs.
    pub vcpus: Option<u64>,
    /// MiB of memory.
    pub memory_mb: Option<u64>,
}

impl QuotaSize {
    /// Nothing: the start of a sum or of a maximum, and what an instance the provider
    /// counts nothing for takes.
    pub const ZERO: QuotaSize = QuotaSize {
        vcpus: Some(0),
        memory_mb: Some(0),
    };

    /// The sum; unknown when either is.
    pub fn plus(self, other: QuotaSize) -> QuotaSize {
        let add = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_add(b?));
        QuotaSize {
            vcpus: add(self.vcpus, other.vcpus),
            memory_mb: add(self.memory_mb, other.memory_mb),
        }
    }

    /// `n` instances of this size; unknown stays unknown.
    pub fn times(self, n: u64) -> QuotaSize {
        let times = |a: Option<u64>| Some(a?.saturating_mul(n));
        QuotaSize {
            vcpus: times(self.vcpus),
            memory_mb: times(self.memory_mb),
        }
    }

    /// The larger of each; unknown when either is.
    pub fn max(self, other: QuotaSize) -> QuotaSize {
        let max = |a: Option<u64>, b: Option<u64>| Some(a?.max(b?));
        QuotaSize {
            vcpus: max(self.vcpus, other.vcpus),
            memory_mb: max(self.memory_mb, other.memory_mb),
        }
    }
}

/// One of the group's providers, as this pass sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInput {
    /// Its name, as in the group's `provider`/`fallback_providers`.
    pub name: String,
    /// When the list of its instances in [`PlanInput::observed`] was taken; `None`: its
    /// list did not answer. An instance is only found dead there by a list taken after
    /// it started.
    pub listed_at: Option<Timestamp>,
    /// Its room (`Provider::capacity`); `None` when unknown or unreadable: no cap on a
    /// guess, the create itself will say what is wrong.
    pub room: Option<Room>,
    /// What one of the group's instances takes of `room`; `None` when unknown: only the
    /// instance count caps. Only read when `room` limits vCPUs or memory (the worker
    /// need not ask otherwise).
    pub size: Option<Size>,
    /// What one of the group's instances there counts against the tenant's quota. Only
    /// read under a vCPU or memory quota.
    pub quota_size: QuotaSize,
    /// Its create backoff, if a create failed since the last success.
    pub backoff: Option<CreateBackoff>,
}

/// Where an instance's retirement task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retirement {
    /// No task runs for it (none was started, or the worker was reloaded).
    #[default]
    None,
    /// Draining, and can still be called off: the instance can be taken back.
    Cancellable,
    /// Committed to deleting it.
    Committed,
}

/// One of the group's live (not final) instance records.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInput {
    /// Its id.
    pub id: InstanceId,
    /// The provider it runs on.
    pub provider: String,
    /// Its stored status.
    pub status: InstanceStatus,
    /// Permanent (the group's `min`) or scaled up.
    pub lifecycle: Lifecycle,
    /// Creation order within the group (higher = newer).
    pub created_order: u64,
    /// When its create finished (the record's `started_at`, else its `created_at`): a
    /// provider list taken before cannot show it.
    pub started_at: Timestamp,
    /// Never retired by a scale-in.
    pub protected: bool,
    /// The host it runs on, when known (for `most_loaded_host`).
    pub host: Option<String>,
    /// Its latest CPU reading, percent of one core, when known (for
    /// `most_loaded_host`).
    pub cpu_percent: Option<f64>,
    /// How long the load balancer has found it unhealthy; `None`: healthy or unknown.
    pub unhealthy_for: Option<Duration>,
    /// Its retirement task.
    pub retirement: Retirement,
    /// Retired because it was unhealthy (status reason `unhealthy`): never taken back,
    /// which would undo its replacement.
    pub replaced: bool,
}

/// An instance a provider reports for the group.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedInstance {
    /// Swell's id, read back from the instance's tags.
    pub id: InstanceId,
    /// The provider that reports it.
    pub provider: String,
    /// The provider's own id (server id, container id, pid), for the sweep's event.
    pub native_id: String,
    /// Whether it has exited (it is not running any more).
    pub exited: bool,
    /// The status of its store record, final ones included; `None`: no record.
    pub record: Option<InstanceStatus>,
}

/// A tenant's quota limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaLimits {
    /// Live instances.
    pub max_instances: Option<u32>,
    /// vCPUs of live instances.
    pub max_vcpus: Option<u32>,
    /// MiB of memory of live instances.
    pub max_memory_mb: Option<u64>,
}

impl QuotaLimits {
    /// Whether a vCPU or memory limit needs the instances' sizes.
    pub fn sized(&self) -> bool {
        self.max_vcpus.is_some() || self.max_memory_mb.is_some()
    }
}

/// What instances take of a tenant's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUse {
    /// Instances that count toward capacity (pending, running, paused).
    pub instances: u64,
    /// Their summed size ([`QuotaSize::ZERO`] when no vCPU or memory limit is set).
    pub size: QuotaSize,
}

/// The tenant's quota as this pass read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantQuota {
    /// No quota, or one without limits.
    Unlimited,
    /// The quota could not be read (a store error): no scale-out this pass.
    Unreadable,
    /// Limits, and what the tenant's instances *outside this group* take of them (the
    /// planner adds the group's own, after this pass's changes).
    Limited {
        /// The limits.
        limits: QuotaLimits,
        /// The use by the tenant's other groups.
        others: QuotaUse,
    },
}

/// The scale-out targets whose cuts have been announced (one event per cut target),
/// carried from one plan to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Announced {
    /// The target the quota last cut.
    pub quota: Option<u32>,
    /// The target the providers' room last cut.
    pub provider: Option<u32>,
}

/// Everything a pass of the reconciler decides from.
///
/// The caps (`quota`, each provider's `room`, `size` and `quota_size`) cost provider
/// and store reads and only matter to a scale-out: a worker may plan first without
/// them (`TenantQuota::Unlimited`, `room: None`) and, when that plan's `have` is below
/// its `desired`, read them and plan again.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// The group's stored desired capacity.
    pub desired: u32,
    /// The group is being deleted: the target is 0.
    pub deleting: bool,
    /// The group's `min`: creates below it are permanent, above it scaled up.
    pub min: u32,
    /// The group's providers this server has configured, by priority (first preferred).
    pub providers: Vec<ProviderInput>,
    /// The group's live instance records, in creation order.
    pub instances: Vec<InstanceInput>,
    /// The group's instances the providers report, except those already swept. Taken
    /// *before* `instances` is read: a create stores its record before the provider
    /// starts anything, so an instance without a record is then surely an orphan.
    pub observed: Vec<ObservedInstance>,
    /// The health check's `replace_after` when the group has a load balancer with
    /// health checks; `None`: no replacement.
    pub replace_after: Option<Duration>,
    /// The tenant's quota.
    pub quota: TenantQuota,
    /// The template's own size (0 read as unknown), for the group's instances on a
    /// provider not configured here. Only read under a vCPU or memory quota.
    pub template_size: QuotaSize,
    /// The cuts announced so far (the previous plan's [`Plan::announced`]).
    pub announced: Announced,
    /// The group's `termination_policy`: which surplus instances a scale-in retires
    /// first ([`scale_in_order`]).
    pub termination_policy: Vec<TerminationRule>,
}

/// An instance and its provider, for an action on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    /// The instance.
    pub id: InstanceId,
    /// Its provider.
    pub provider: String,
}

/// What a provider still has of a failed or unknown instance: to delete there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Swell's id of it.
    pub id: InstanceId,
    /// The provider that has it.
    pub provider: String,
    /// The provider's own id, for the event.
    pub native_id: String,
}

/// An instance to retire because it failed its health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The instance.
    pub id: InstanceId,
    /// Its provider.
    pub provider: String,
    /// How long it has been unhealthy, for the event.
    pub unhealthy_for: Duration,
}

/// One instance to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The provider it goes to.
    pub provider: String,
    /// Permanent while the group has fewer than `min` permanent ones.
    pub lifecycle: Lifecycle,
}

/// What cut a scale-out.
#[derive(Debug, Clone, PartialEq)]
pub enum CapBy {
    /// The tenant's quota.
    Quota {
        /// Its limits.
        limits: QuotaLimits,
        /// The tenant's use, this group's instances included.
        used: QuotaUse,
        /// What each new instance counts (the largest among the group's providers).
        each: QuotaSize,
    },
    /// The quota could not be read: nothing is created until it can.
    QuotaUnreadable,
    /// The providers' room, all of them together.
    Provider {
        /// Each provider's room, by priority.
        rooms: Vec<ProviderRoom>,
    },
}

/// One provider's room as the cut saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRoom {
    /// The provider.
    pub provider: String,
    /// Its room; `None`: unknown, unlimited.
    pub room: Option<Room>,
    /// One instance's size; `None`: unknown.
    pub size: Option<Size>,
    /// How many more instances fit (`u64::MAX`: no limit).
    pub fits: u64,
}

/// A scale-out cut short.
#[derive(Debug, Clone, PartialEq)]
pub struct Capped {
    /// What cut it.
    pub by: CapBy,
    /// The count the scale-out wanted.
    pub wanted: u32,
    /// The count it is cut to.
    pub allowed: u32,
    /// The first plan with this cut of this target: the worker writes an event.
    pub announce: bool,
}

impl Capped {
    /// The event a cut is announced with; `None`: it is not announced (an unreadable
    /// quota is a store error, shown in the worker's status).
    pub fn event_kind(&self) -> Option<EventKind> {
        match self.by {
            CapBy::Quota { .. } => Some(EventKind::QuotaCapped),
            CapBy::Provider { .. } => Some(EventKind::ProviderCapped),
            CapBy::QuotaUnreadable => None,
        }
    }

    /// The event's message: the limits, what is in use and what one instance needs.
    pub fn message(&self) -> String {
        let (wanted, allowed) = (self.wanted, self.allowed);
        match &self.by {
            CapBy::Quota { limits, used, each } => {
                let show =
                    |v: Option<u64>| v.map_or_else(|| "unknown".to_string(), |v| v.to_string());
                let mut message = format!(
                    "scale-out to {wanted} capped at {allowed} by the tenant's quota (instances {:?}, vcpus {:?}, memory_mb {:?}; in use: {} instances",
                    limits.max_instances, limits.max_vcpus, limits.max_memory_mb, used.instances,
                );
                // Sizes are only read under a vCPU or memory limit; without one they
                // are not part of the cut.
                if limits.sized() {
                    message.push_str(&format!(
                        ", {} vcpus, {} MiB; one instance needs {} vcpus, {} MiB",
                        show(used.size.vcpus),
                        show(used.size.memory_mb),
                        show(each.vcpus),
                        show(each.memory_mb)
                    ));
                }
                message.push(')');
                let unknown = (limits.max_vcpus.is_some()
                    && (used.size.vcpus.is_none() || each.vcpus.is_none()))
                    || (limits.max_memory_mb.is_some()
                        && (used.size.memory_mb.is_none() || each.memory_mb.is_none()));
                if unknown {
                    message.push_str(
                        "; an instance size cannot be read (see the server log) and the template gives none: no scale-out until it can",
                    );
                }
                message
            }
            CapBy::QuotaUnreadable => format!(
                "scale-out to {wanted} held at {allowed}: the tenant's quota cannot be read"
            ),
            CapBy::Provider { rooms } => {
                let show = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
                let said: Vec<(&str, String)> = rooms
                    .iter()
                    .filter_map(|r| {
                        let room = r.room?;
                        let mut left = format!(
                            "{} instances, {} vcpus, {} MiB",
                            show(room.instances.map(|n| n.to_string())),
                            show(room.vcpus.map(|v| format!("{v:.1}"))),
                            show(room.memory_mb.map(|m| m.to_string())),
                        );
                        // The size only matters when there is a vCPU or memory room to
                        // divide.
                        match r.size {
                            _ if room.vcpus.is_none() && room.memory_mb.is_none() => {}
                            Some(s) => left.push_str(&format!(
                                "; one instance needs {} vcpus, {} MiB",
                                s.vcpus, s.memory_mb
                            )),
                            None => left.push_str("; instance size unknown, only the count caps"),
                        }
                        Some((r.provider.as_str(), left))
                    })
                    .collect();
                let names: Vec<&str> = rooms.iter().map(|r| r.provider.as_str()).collect();
                let left = match said.as_slice() {
                    [(_, one)] => one.clone(),
                    many => many
                        .iter()
                        .map(|(name, left)| format!("{name}: {left}"))
                        .collect::<Vec<_>>()
                        .join(" | "),
                };
                format!(
                    "scale-out to {wanted} capped at {allowed}: provider {} has no room for more (left: {left})",
                    names.join(", "),
                )
            }
        }
    }
}

/// Why the scale-out stopped short of its (capped) target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The preferred provider with room failed recently, or every one with room failed
    /// [`YIELD_AFTER`] times in a row: the next create waits for its backoff.
    Backoff {
        /// The provider waited for: the first with room that backs off without
        /// yielding, else the yielding one whose backoff ends first.
        provider: String,
        /// When it ends.
        until: Timestamp,
        /// Its failed creates in a row.
        failures: u32,
    },
    /// No provider has room left.
    NoProvider,
}

/// What one pass of the reconciler does, in this order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Leftovers to delete at their provider (one `instance_terminated` event each).
    pub sweep: Vec<Leftover>,
    /// Instances their provider no longer runs: record as failed, clean up at the
    /// provider; they are replaced by [`Plan::create`].
    pub fail: Vec<InstanceRef>,
    /// Instances unhealthy for `replace_after`: retire (status reason `unhealthy`);
    /// replaced by [`Plan::create`].
    pub replace: Vec<Unhealthy>,
    /// Draining instances to take back (cancel their retirement), before any create.
    pub reuse: Vec<InstanceId>,
    /// Instances to create, in order.
    pub create: Vec<Create>,
    /// Surplus instances to retire, in order.
    pub retire: Vec<InstanceRef>,
    /// Surplus instances still being created: retired by a later pass once they are
    /// (nothing to do now).
    pub retire_once_created: Vec<InstanceId>,
    /// Draining or terminating instances whose retirement task is not running (the
    /// worker was reloaded): start it again.
    pub resume: Vec<InstanceRef>,
    /// The cuts of this scale-out: the quota's first, then the providers'.
    pub capped: Vec<Capped>,
    /// Why fewer than `target - have` creates are planned, if so.
    pub waiting: Option<Waiting>,
    /// The cuts announced, for the next plan's [`PlanInput::announced`].
    pub announced: Announced,
    /// The count wanted: the desired capacity, 0 when the group is being deleted.
    pub desired: u32,
    /// Instances that count toward capacity once failures, replacements and reuses are
    /// done, before creates and retirements. Below `desired`: a scale-out.
    pub have: u32,
    /// The count this pass works toward: the desired capacity (0 when deleting) cut by
    /// the quota and the providers' room.
    pub target: u32,
    /// Surplus instances a scale-in leaves because they are protected: the group stays
    /// this far above `target` until they are unprotected (or the desired capacity
    /// rises), and the worker says so rather than retry.
    pub kept_protected: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decides one pass of the reconciler (see the [module docs](self)).
pub fn plan(input: &PlanInput, now: Timestamp) -> Plan {
    let mut plan = Plan {
        announced: input.announced,
        ..Plan::default()
    };
    let provider = |name: &str| input.providers.iter().find(|p| p.name == name);

    // 1. What a provider still has of a failed create or of no record at all: creates
    // of this group store their intent first, so a tagged instance without a record is
    // an orphan.
    plan.sweep = input
        .observed
        .iter()
        .filter(|o| matches!(o.record, None | Some(InstanceStatus::Failed)))
        .filter(|o| provider(&o.provider).is_some())
        .map(|o| Leftover {
            id: o.id.clone(),
            provider: o.provider.clone(),
            native_id: o.native_id.clone(),
        })
        .collect();

    // 2. Dead: only by a list that answered and was taken after the instance started.
    let alive: HashSet<(&str, &InstanceId)> = input
        .observed
        .iter()
        .filter(|o| !o.exited)
        .map(|o| (o.provider.as_str(), &o.id))
        .collect();
    plan.fail = input
        .instances
        .iter()
        .filter(|i| matches!(i.status, InstanceStatus::Running | InstanceStatus::Paused))
        .filter(|i| {
            provider(&i.provider)
                .and_then(|p| p.listed_at)
                .is_some_and(|at| at >= i.started_at)
        })
        .filter(|i| !alive.contains(&(i.provider.as_str(), &i.id)))
        .map(|i| InstanceRef {
            id: i.id.clone(),
            provider: i.provider.clone(),
        })
        .collect();
    let failed: HashSet<&InstanceId> = plan.fail.iter().map(|f| &f.id).collect();

    // 3. Unhealthy for long enough.
    if let Some(after) = input.replace_after {
        plan.replace = input
            .instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running && !failed.contains(&i.id))
            .filter(|i| provider(&i.provider).is_some())
            .filter_map(|i| {
                let unhealthy_for = i.unhealthy_for.filter(|d| *d >= after)?;
                Some(Unhealthy {
                    id: i.id.clone(),
                    provider: i.provider.clone(),
                    unhealthy_for,
                })
            })
            .collect();
    }
    let replaced: HashSet<&InstanceId> = plan.replace.iter().map(|r| &r.id).collect();

    let counted: Vec<&InstanceInput> = input
        .instances
        .iter()
        .filter(|i| i.status.counts_toward_capacity())
        .filter(|i| !failed.contains(&i.id) && !replaced.contains(&i.id))
        .collect();
    let desired = if input.deleting { 0 } else { input.desired };
    let mut have = count(counted.len());
    let mut permanent = count(
        counted
            .iter()
            .filter(|i| i.lifecycle == Lifecycle::Permanent)
            .count(),
    );

    // 4. Scale-out: draining instances first, then creates within the caps.
    let mut reused: Vec<&InstanceInput> = Vec::new();
    if have < desired {
        for i in input.instances.iter().filter(|i| {
            i.status == InstanceStatus::Draining
                && i.retirement == Retirement::Cancellable
                && !i.replaced
        }) {
            if have >= desired {
                break;
            }
            have += 1;
            permanent += u32::from(i.lifecycle == Lifecycle::Permanent);
            reused.push(i);
        }
    }
    plan.reuse = reused.iter().map(|i| i.id.clone()).collect();

    let mut target = desired;
    if have < target {
        let group = counted.iter().chain(&reused).copied();
        target = cap_by_quota(input, &mut plan, group, have, target);
    }
    let mut rooms: Vec<u64> = Vec::new();
    if have < target {
        (target, rooms) = cap_by_providers(input, &mut plan, have, target);
    }
    for _ in have..target {
        match pick_provider(&input.providers, &rooms, now) {
            Ok(i) => {
                let lifecycle = if permanent < input.min {
                    permanent += 1;
                    Lifecycle::Permanent
                } else {
                    Lifecycle::ScaledUp
                };
                rooms[i] = rooms[i].saturating_sub(1);
                plan.create.push(Create {
                    provider: input.providers[i].name.clone(),
                    lifecycle,
                });
            }
            Err(why) => {
                plan.waiting = Some(why);
                break;
            }
        }
    }

    // 5. Scale-in. Only instances on a provider configured here can be retired;
    // protected ones only when the group is being deleted.
    if have > target {
        let surplus = (have - target) as usize;
        let order = scale_in_order(input, &counted);
        let (victims, kept): (Vec<&InstanceInput>, Vec<&InstanceInput>) = order
            .into_iter()
            .partition(|i| input.deleting || !i.protected);
        plan.kept_protected = count(surplus.saturating_sub(victims.len()).min(kept.len()));
        for i in victims.into_iter().take(surplus) {
            if i.status == InstanceStatus::Pending {
                plan.retire_once_created.push(i.id.clone());
            } else {
                plan.retire.push(InstanceRef {
                    id: i.id.clone(),
                    provider: i.provider.clone(),
                });
            }
        }
    }

    // 6. Retirements whose task is gone.
    plan.resume = input
        .instances
        .iter()
        .filter(|i| {
            matches!(
                i.status,
                InstanceStatus::Draining | InstanceStatus::Terminating
            ) && i.retirement == Retirement::None
                && provider(&i.provider).is_some()
        })
        .map(|i| InstanceRef {
            id: i.id.clone(),
            provider: i.provider.clone(),
        })
        .collect();

    plan.desired = desired;
    plan.have = have;
    plan.target = target;
    plan
}

/// The order in which a scale-in retires `instances` (the group's instances that count
/// toward capacity), first first; those on a provider not configured here are left out
/// (they cannot be retired from here). Protection is not looked at: the caller skips
/// protected instances.
///
/// The group's `termination_policy` rules decide first, each breaking the previous
/// one's ties; then the default order: the least-preferred provider's first, scaled-up
/// before permanent, newest first (which leaves no tie: the creation order is unique).
pub fn scale_in_order<'a>(
    input: &PlanInput,
    instances: &[&'a InstanceInput],
) -> Vec<&'a InstanceInput> {
    let priority = |name: &str| input.providers.iter().position(|p| p.name == name);
    // Per host: the group's instances on it and their summed CPU (`most_loaded_host`).
    let mut hosts: HashMap<&str, (usize, f64)> = HashMap::new();
    for i in instances {
        if let Some(host) = &i.host {
            let h = hosts.entry(host.as_str()).or_default();
            h.0 += 1;
            h.1 += i.cpu_percent.filter(|c| c.is_finite()).unwrap_or(0.0);
        }
    }
    let host_load = |i: &InstanceInput| i.host.as_deref().and_then(|h| hosts.get(h)).copied();
    let by_rule = |rule: TerminationRule, a: &InstanceInput, b: &InstanceInput| -> Ordering {
        match rule {
            TerminationRule::Newest => b.created_order.cmp(&a.created_order),
            TerminationRule::Oldest => a.created_order.cmp(&b.created_order),
            TerminationRule::LeastPreferredProvider => {
                priority(&b.provider).cmp(&priority(&a.provider))
            }
            // Known hosts first, the one with the most instances, then the most CPU.
            TerminationRule::MostLoadedHost => match (host_load(a), host_load(b)) {
                (Some((na, ca)), Some((nb, cb))) => nb.cmp(&na).then(cb.total_cmp(&ca)),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            },
        }
    };
    let mut order: Vec<&InstanceInput> = instances
        .iter()
        .copied()
        .filter(|i| priority(&i.provider).is_some())
        .collect();
    order.sort_by(|a, b| {
        input
            .termination_policy
            .iter()
            .fold(Ordering::Equal, |o, rule| {
                o.then_with(|| by_rule(*rule, a, b))
            })
            .then_with(|| by_rule(TerminationRule::LeastPreferredProvider, a, b))
            .then_with(|| {
                (a.lifecycle == Lifecycle::Permanent).cmp(&(b.lifecycle == Lifecycle::Permanent))
            })
            .then_with(|| by_rule(TerminationRule::Newest, a, b))
    });
    order
}

/// The largest count up to `target` the tenant's quota allows, given the tenant's other
/// groups' use and `group`, this group's instances after this pass's changes, each at
/// its provider's size; new instances count at the largest size among the group's
/// providers (the one a create goes to is decided later and can change from one create
/// to the next: counting the largest never lets a create exceed the quota).
fn cap_by_quota<'a>(
    input: &PlanInput,
    plan: &mut Plan,
    group: impl Iterator<Item = &'a InstanceInput>,
    have: u32,
    target: u32,
) -> u32 {
    let (limits, others) = match input.quota {
        TenantQuota::Limited { limits, others } if limits != QuotaLimits::default() => {
            (limits, others)
        }
        TenantQuota::Limited { .. } | TenantQuota::Unlimited => {
            plan.announced.quota = None;
            return target;
        }
        TenantQuota::Unreadable => {
            plan.capped.push(Capped {
                by: CapBy::QuotaUnreadable,
                wanted: target,
                allowed: have,
                announce: false,
            });
            return have;
        }
    };
    let sized = limits.sized();
    let mut used = others;
    let mut each = QuotaSize::ZERO;
    for i in group {
        used.instances += 1;
        if sized {
            let size = input
                .providers
                .iter()
                .find(|p| p.name == i.provider)
                .map_or(input.template_size, |p| p.quota_size);
            used.size = used.size.plus(size);
        }
    }
    if sized {
        for p in &input.providers {
            each = each.max(p.quota_size);
        }
    }
    let room = |limit: Option<u64>, used: Option<u64>, each: Option<u64>| -> u64 {
        match (limit, used, each) {
            (None, _, _) => u64::MAX,
            // An unknown size under a limit on it: no new instance until it is known,
            // rather than a create the quota may not allow.
            (Some(_), None, _) | (Some(_), _, None) => 0,
            (Some(l), Some(used), Some(each)) if each > 0 => l.saturating_sub(used) / each,
            // Instances that take none of it are not limited by it.
            (Some(_), Some(_), Some(_)) => u64::MAX,
        }
    };
    let extra = room(
        limits.max_instances.map(u64::from),
        Some(used.instances),
        Some(1),
    )
    .min(room(
        limits.max_vcpus.map(u64::from),
        used.size.vcpus,
        each.vcpus,
    ))
    .min(room(
        limits.max_memory_mb,
        used.size.memory_mb,
        each.memory_mb,
    ));
    let allowed = have
        .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX))
        .min(target);
    if allowed < target {
        plan.capped.push(Capped {
            by: CapBy::Quota { limits, used, each },
            wanted: target,
            allowed,
            announce: plan.announced.quota != Some(target),
        });
        plan.announced.quota = Some(target);
    } else {
        plan.announced.quota = None;
    }
    allowed
}

/// How many more instances one provider has room for: its room divided by one
/// instance's size (`u64::MAX` when nothing limits it).
fn fits(p: &ProviderInput) -> u64 {
    let Some(room) = p.room else {
        return u64::MAX;
    };
    let mut fits = u64::MAX;
    if let Some(n) = room.instances {
        fits = fits.min(u64::from(n));
    }
    if let (Some(v), Some(size)) = (room.vcpus, p.size)
        && size.vcpus > 0
    {
        fits = fits.min((v.max(0.0) / f64::from(size.vcpus)).floor() as u64);
    }
    if let (Some(m), Some(size)) = (room.memory_mb, p.size)
        && size.memory_mb > 0
    {
        fits = fits.min(m / size.memory_mb);
    }
    fits
}

/// The largest count up to `target` the providers' room allows together, and each
/// provider's room.
fn cap_by_providers(input: &PlanInput, plan: &mut Plan, have: u32, target: u32) -> (u32, Vec<u64>) {
    let rooms: Vec<u64> = input.providers.iter().map(fits).collect();
    let total = rooms.iter().fold(0u64, |a, r| a.saturating_add(*r));
    let allowed = have
        .saturating_add(u32::try_from(total).unwrap_or(u32::MAX))
        .min(target);
    if allowed < target {
        plan.capped.push(Capped {
            by: CapBy::Provider {
                rooms: input
                    .providers
                    .iter()
                    .zip(&rooms)
                    .map(|(p, fits)| ProviderRoom {
                        provider: p.name.clone(),
                        room: p.room,
                        size: p.size,
                        fits: *fits,
                    })
                    .collect(),
            },
            wanted: target,
            allowed,
            announce: plan.announced.provider != Some(target),
        });
        plan.announced.provider = Some(target);
    } else {
        plan.announced.provider = None;
    }
    (allowed, rooms)
}

/// The provider the next create goes to, by priority: one without room is skipped; one
/// that failed recently is waited for — unless it failed [`YIELD_AFTER`] creates in a
/// row, then it yields to the next until its backoff has passed (and is first again
/// after). `Err`: why the create waits.
fn pick_provider(
    providers: &[ProviderInput],
    rooms: &[u64],
    now: Timestamp,
) -> Result<usize, Waiting> {
    let mut yielded: Option<(&ProviderInput, CreateBackoff)> = None;
    for (i, p) in providers.iter().enumerate() {
        if rooms.get(i).is_none_or(|r| *r == 0) {
            continue;
        }
        match p.backoff {
            Some(b) if b.holds(now) && b.failures >= YIELD_AFTER => {
                if yielded.is_none_or(|(_, y)| b.until < y.until) {
                    yielded = Some((p, b));
                }
            }
            Some(b) if b.holds(now) => return Err(Waiting::backoff(p, b)),
            _ => return Ok(i),
        }
    }
    Err(yielded.map_or(Waiting::NoProvider, |(p, b)| Waiting::backoff(p, b)))
}

impl Waiting {
    fn backoff(p: &ProviderInput, b: CreateBackoff) -> Waiting {
        Waiting::Backoff {
            provider: p.name.clone(),
            until: b.until,
            failures: b.failures,
        }
    }
}

#[cfg(test)]
mod tests;
