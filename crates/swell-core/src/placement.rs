//! Where a new instance goes: a pure function over a snapshot of the hosts' loads.
//!
//! A *host* is one place a provider can run instances (a Docker engine, a hypervisor).
//! Its capacity is physical (vCPUs, MiB); what may be committed on it is that capacity
//! times the over-commit ratios (seed 3: 16:1 CPU, 1.5:1 RAM). A host's *load* is the
//! larger of its committed share and its measured CPU use, in percent:
//!
//! ```text
//! load = 100 × max(allocated vCPUs / (vCPUs × cpu ratio),
//!                  allocated MiB   / (MiB × memory ratio),
//!                  CPU cores in use / vCPUs)
//! ```
//!
//! so that an idle host full of reservations and a busy host with few of them both
//! count as loaded. [`choose_host`] places a new instance on the least-loaded host that
//! is up and has room, preferring hosts whose load is below
//! [`PlacementPrefs::prefer_below`] (seed 1: below the scale-in threshold) and never
//! using one above [`PlacementPrefs::never_above`] (the scale-out threshold), when set.
//! Which instance leaves first is the reconciler's choice, by provider rather than by
//! host ([`crate::plan`]).
//!
//! ```
//! use swell_core::placement::{choose_host, HostLoad, PlacementPrefs, Resources};
//!
//! let host = |vcpus, allocated| HostLoad {
//!     up: true,
//!     capacity: Resources { vcpus, memory_mb: 8192.0 },
//!     allocated: Resources { vcpus: allocated, memory_mb: 0.0 },
//!     cpu_used: 0.0,
//! };
//! // 2 of 32 committable vCPUs on the first host, 1 of 64 on the second.
//! let hosts = [host(2.0, 2.0), host(4.0, 1.0)];
//! let need = Resources { vcpus: 1.0, memory_mb: 256.0 };
//! assert_eq!(choose_host(&hosts, need, &PlacementPrefs::default()), Some(1));
//! ```

/// An amount of CPU and memory.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    /// vCPUs (cores).
    pub vcpus: f64,
    /// Memory, MiB.
    pub memory_mb: f64,
}

impl Resources {
    /// The sum of two amounts.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus + other.vcpus,
            memory_mb: self.memory_mb + other.memory_mb,
        }
    }
}

/// How much more than its physical capacity may be committed on a host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overcommit {
    /// vCPUs committable per physical vCPU (seed 3: 16).
    pub cpu: f64,
    /// MiB committable per physical MiB (seed 3: 1.5).
    pub memory: f64,
}

impl Default for Overcommit {
    fn default() -> Self {
        Overcommit {
            cpu: 16.0,
            memory: 1.5,
        }
    }
}

/// One host as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLoad {
    /// Whether the host answers; a host that is down is never chosen.
    pub up: bool,
    /// Physical capacity.
    pub capacity: Resources,
    /// What the instances on it reserve (their templates' vCPUs and memory).
    pub allocated: Resources,
    /// CPU cores in use, as measured (0 when unknown).
    pub cpu_used: f64,
}

impl HostLoad {
    /// Whether `need` fits on top of what is allocated, within the over-commit ratios.
    pub fn fits(&self, need: Resources, overcommit: Overcommit) -> bool {
        let after = self.allocated.plus(need);
        after.vcpus <= self.capacity.vcpus * overcommit.cpu + EPSILON
            && after.memory_mb <= self.capacity.memory_mb * overcommit.memory + EPSILON
    }

    /// The host's load in percent (see the [module docs](self)); a host without any
    /// capacity is fully loaded.
    pub fn load_percent(&self, overcommit: Overcommit) -> f64 {
        let share = |used: f64, total: f64| {
            if total > 0.0 {
                used / total
            } else if used > 0.0 {
                f64::INFINITY
            } else {
                1.0
            }
        };
        let load = share(self.allocated.vcpus, self.capacity.vcpus * overcommit.cpu)
            .max(share(
                self.allocated.memory_mb,
                self.capacity.memory_mb * overcommit.memory,
            ))
            .max(share(self.cpu_used, self.capacity.vcpus));
        if load.is_nan() { 100.0 } else { load * 100.0 }
    }

    /// The committed share alone, in percent: the tie-breaker between equally loaded
    /// hosts.
    fn allocated_percent(&self, overcommit: Overcommit) -> f64 {
        HostLoad {
            cpu_used: 0.0,
            ..*self
        }
        .load_percent(overcommit)
    }
}

/// Slack for float sums of whole vCPUs and MiB.
const EPSILON: f64 = 1e-9;

/// How placement chooses among hosts that have room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacementPrefs {
    /// Over-commit ratios.
    pub overcommit: Overcommit,
    /// Hosts whose load (percent) is below this are preferred over all others (seed 1:
    /// the scale-in threshold).
    pub prefer_below: f64,
    /// Hosts whose load (percent) is above this are never chosen (seed 1: the
    /// scale-out threshold); `None` lets every host with room be chosen.
    pub never_above: Option<f64>,
}

impl Default for PlacementPrefs {
    fn default() -> Self {
        PlacementPrefs {
            overcommit: Overcommit::default(),
            prefer_below: 70.0,
            never_above: None,
        }
    }
}

/// The index of the host a new instance needing `need` goes to, or `None` when no host
/// that is up has room (or all that have are above `never_above`).
///
/// Among the candidates, the *cool* ones (load below `prefer_below`) come first, the
/// least committed of them (then the least loaded) winning, so that reservations spread
/// evenly over quiet hosts whatever their measurement noise; when no host is cool, the
/// least loaded (then least committed) wins. Ties go to the lowest index, so the result
/// is stable.
pub fn choose_host(hosts: &[HostLoad], need: Resources, prefs: &PlacementPrefs) -> Option<usize> {
    let oc = prefs.overcommit;
    hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.up && h.fits(need, oc))
        .filter(|(_, h)| {
            prefs
                .never_above
                .is_none_or(|max| h.load_percent(oc) <= max)
        })
        .min_by(|(i, a), (j, b)| {
            // Cool hosts (below `prefer_below`) first, ordered by what is committed on
            // them, so that measurement noise on idle hosts does not decide; then the
            // others by load.
            let key = |h: &HostLoad| {
                let load = h.load_percent(oc);
                let committed = h.allocated_percent(oc);
                if load < prefs.prefer_below {
                    (false, committed, load)
                } else {
                    (true, load, committed)
                }
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0)
                .then(ka.1.total_cmp(&kb.1))
                .then(ka.2.total_cmp(&kb.2))
                .then(i.cmp(j))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(up: bool, cap: (f64, f64), alloc: (f64, f64), used: f64) -> HostLoad {
        HostLoad {
            up,
            capacity: Resources {
                vcpus: cap.0,
                memory_mb: cap.1,
            },
            allocated: Resources {
                vcpus: alloc.0,
                memory_mb: alloc.1,
            },
            cpu_used: used,
        }
    }

    const ONE: Resources = Resources {
        vcpus: 1.0,
        memory_mb: 256.0,
    };

    fn check(hosts: &[HostLoad], need: Resources, prefs: PlacementPrefs, expect: Option<usize>) {
        assert_eq!(choose_host(hosts, need, &prefs), expect, "{hosts:?}");
    }

    #[test]
    fn load_is_the_larger_of_committed_and_measured() {
        let oc = Overcommit::default();
        // 8 of 32 committable vCPUs: 25 %.
        assert_eq!(
            host(true, (2.0, 1000.0), (8.0, 0.0), 0.0).load_percent(oc),
            25.0
        );
        // 750 of 1500 committable MiB: 50 %.
        assert_eq!(
            host(true, (2.0, 1000.0), (1.0, 750.0), 0.0).load_percent(oc),
            50.0
        );
        // 1.8 of 2 cores busy: 90 %.
        assert!((host(true, (2.0, 1000.0), (1.0, 0.0), 1.8).load_percent(oc) - 90.0).abs() < 1e-9);
        // No capacity at all: full.
        assert_eq!(
            host(true, (0.0, 0.0), (0.0, 0.0), 0.0).load_percent(oc),
            100.0
        );
    }

    #[test]
    fn capacity_honours_the_overcommit_ratios() {
        let oc = Overcommit::default();
        // 2 vCPUs × 16 = 32: the 32nd fits, the 33rd does not.
        assert!(host(true, (2.0, 1e6), (31.0, 0.0), 0.0).fits(ONE, oc));
        assert!(!host(true, (2.0, 1e6), (32.0, 0.0), 0.0).fits(ONE, oc));
        // 1024 MiB × 1.5 = 1536: six 256 MiB instances, not seven.
        assert!(host(true, (2.0, 1024.0), (5.0, 1280.0), 0.0).fits(ONE, oc));
        assert!(!host(true, (2.0, 1024.0), (6.0, 1536.0), 0.0).fits(ONE, oc));
        // Without over-commit.
        let exact = Overcommit {
            cpu: 1.0,
            memory: 1.0,
        };
        assert!(!host(true, (2.0, 1e6), (2.0, 0.0), 0.0).fits(ONE, exact));
    }

    #[test]
    fn the_least_loaded_host_with_room_wins() {
        let prefs = PlacementPrefs::default();
        // Equal hosts: the first.
        let idle = host(true, (2.0, 4096.0), (0.0, 0.0), 0.0);
        check(&[idle, idle], ONE, prefs, Some(0));
        // Equal measured load, fewer reservations: the second.
        let one = host(true, (2.0, 4096.0), (1.0, 256.0), 0.0);
        check(&[one, idle], ONE, prefs, Some(1));
        // A busy host loses to a quiet one with more reservations.
        let busy = host(true, (2.0, 4096.0), (1.0, 256.0), 1.5);
        let reserved = host(true, (2.0, 4096.0), (4.0, 1024.0), 0.1);
        check(&[busy, reserved], ONE, prefs, Some(1));
        // A host that is down or full is skipped.
        let down = host(false, (2.0, 4096.0), (0.0, 0.0), 0.0);
        let full = host(true, (2.0, 4096.0), (32.0, 0.0), 0.0);
        check(&[down, full, busy], ONE, prefs, Some(2));
        check(&[down, full], ONE, prefs, None);
        check(&[], ONE, prefs, None);
    }

    #[test]
    fn hosts_below_the_preference_come_first_and_the_ceiling_is_kept() {
        // Load 80 % and 90 %: neither is below 70, so the lower wins.
        let a = host(true, (2.0, 4096.0), (0.0, 0.0), 1.8);
        let b = host(true, (2.0, 4096.0), (0.0, 0.0), 1.6);
        let prefs = PlacementPrefs::default();
        check(&[a, b], ONE, prefs, Some(1));
        // With a ceiling of 85 %, only b qualifies; with 75 %, none.
        let ceiling = |max| PlacementPrefs {
            never_above: Some(max),
            ..prefs
        };
        check(&[a, b], ONE, ceiling(85.0), Some(1));
        check(&[a, b], ONE, ceiling(75.0), None);
        // Cool hosts are compared by what is committed on them: c (60 % busy, 8 vCPUs
        // committed) loses to d (65 % busy, nothing committed) while both are below
        // 70 %; with prefer_below at 62 only c is cool, and it wins.
        let c = host(true, (2.0, 4096.0), (8.0, 0.0), 1.2);
        let d = host(true, (2.0, 4096.0), (0.0, 0.0), 1.3);
        check(&[d, c], ONE, prefs, Some(0));
        let low = PlacementPrefs {
            prefer_below: 62.0,
            ..prefs
        };
        check(&[d, c], ONE, low, Some(1));
        // Measurement noise on idle hosts does not decide; reservations do.
        let noisy = host(true, (2.0, 4096.0), (0.0, 0.0), 0.05);
        let quiet_but_reserved = host(true, (2.0, 4096.0), (1.0, 256.0), 0.0);
        check(&[quiet_but_reserved, noisy], ONE, prefs, Some(1));
    }

    fn arb_host() -> impl Strategy<Value = HostLoad> {
        (
            any::<bool>(),
            0.0..16.0f64,
            0.0..65536.0f64,
            0.0..300.0f64,
            0.0..100000.0f64,
            0.0..16.0f64,
        )
            .prop_map(|(up, cv, cm, av, am, used)| host(up, (cv, cm), (av, am), used))
    }

    proptest! {
        #[test]
        fn a_chosen_host_is_up_has_room_and_is_least_loaded_of_its_class(
            hosts in prop::collection::vec(arb_host(), 0..8),
            vcpus in 0.0..8.0f64,
            memory_mb in 0.0..4096.0f64,
            prefer_below in 0.0..120.0f64,
        ) {
            let need = Resources { vcpus, memory_mb };
            let prefs = PlacementPrefs { prefer_below, ..PlacementPrefs::default() };
            let oc = prefs.overcommit;
            let eligible: Vec<usize> = (0..hosts.len())
                .filter(|&i| hosts[i].up && hosts[i].fits(need, oc))
                .collect();
            match choose_host(&hosts, need, &prefs) {
                None => prop_assert!(eligible.is_empty()),
                Some(i) => {
                    prop_assert!(eligible.contains(&i));
                    let load = hosts[i].load_percent(oc);
                    let committed = hosts[i].allocated_percent(oc);
                    for &j in &eligible {
                        let other = hosts[j].load_percent(oc);
                        if load < prefer_below {
                            // A cool host: no other cool host is less committed.
                            prop_assert!(other >= prefer_below || hosts[j].allocated_percent(oc) >= committed);
                        } else {
                            // No cool host at all, and none less loaded.
                            prop_assert!(other >= prefer_below && other >= load);
                        }
                    }
                }
            }
        }
    }
}
