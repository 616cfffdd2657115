use super::*;
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::from_secs(1_000);

fn provider(name: &str) -> ProviderInput {
    ProviderInput {
        name: name.into(),
        listed_at: Some(NOW),
        room: None,
        size: None,
        quota_size: QuotaSize::ZERO,
        backoff: None,
    }
}

/// Instance `i{order}` on `provider`, scaled up, with a running retirement task when
/// it is draining or terminating.
fn inst(order: u64, provider: &str, status: InstanceStatus) -> InstanceInput {
    let retiring = matches!(
        status,
        InstanceStatus::Draining | InstanceStatus::Terminating
    );
    InstanceInput {
        id: InstanceId(format!("i{order}")),
        provider: provider.into(),
        status,
        lifecycle: Lifecycle::ScaledUp,
        created_order: order,
        started_at: Timestamp::from_secs(900),
        protected: false,
        host: None,
        cpu_percent: None,
        unhealthy_for: None,
        retirement: if retiring {
            Retirement::Cancellable
        } else {
            Retirement::None
        },
        replaced: false,
    }
}

fn run(order: u64) -> InstanceInput {
    inst(order, "a", InstanceStatus::Running)
}

fn permanent(mut i: InstanceInput) -> InstanceInput {
    i.lifecycle = Lifecycle::Permanent;
    i
}

fn protected(mut i: InstanceInput) -> InstanceInput {
    i.protected = true;
    i
}

/// A group of `desired` (min 0) on providers `a`, `b`, … (by priority) whose instances
/// all run at their provider.
fn group(desired: u32, providers: &[&str], instances: Vec<InstanceInput>) -> PlanInput {
    let observed = instances
        .iter()
        .map(|i| ObservedInstance {
            id: i.id.clone(),
            provider: i.provider.clone(),
            native_id: format!("n-{}", i.id),
            exited: false,
            record: Some(i.status),
        })
        .collect();
    PlanInput {
        desired,
        deleting: false,
        min: 0,
        providers: providers.iter().map(|p| provider(p)).collect(),
        instances,
        observed,
        replace_after: None,
        quota: TenantQuota::Unlimited,
        template_size: QuotaSize::ZERO,
        announced: Announced::default(),
        termination_policy: Vec::new(),
    }
}

fn with(mut input: PlanInput, change: impl FnOnce(&mut PlanInput)) -> PlanInput {
    change(&mut input);
    input
}

fn backoff(failures: u32, until_s: i64) -> Option<CreateBackoff> {
    Some(CreateBackoff {
        failures,
        until: Timestamp::from_secs(until_s),
    })
}

fn quota(limits: QuotaLimits, instances: u64, vcpus: u64, memory_mb: u64) -> TenantQuota {
    TenantQuota::Limited {
        limits,
        others: QuotaUse {
            instances,
            size: QuotaSize {
                vcpus: Some(vcpus),
                memory_mb: Some(memory_mb),
            },
        },
    }
}

fn sized(vcpus: u64, memory_mb: u64) -> QuotaSize {
    QuotaSize {
        vcpus: Some(vcpus),
        memory_mb: Some(memory_mb),
    }
}

/// The plan in one line: `have→target`, then each non-empty field.
fn describe(plan: &Plan) -> String {
    let ids = |v: &mut dyn Iterator<Item = &InstanceId>| {
        v.map(|i| i.as_str()).collect::<Vec<_>>().join(" ")
    };
    let mut out = vec![format!("{}→{}", plan.have, plan.target)];
    let mut field = |name: &str, text: String| {
        if !text.is_empty() {
            out.push(format!("{name}[{text}]"));
        }
    };
    field("sweep", ids(&mut plan.sweep.iter().map(|l| &l.id)));
    field("fail", ids(&mut plan.fail.iter().map(|f| &f.id)));
    field("replace", ids(&mut plan.replace.iter().map(|r| &r.id)));
    field("reuse", ids(&mut plan.reuse.iter()));
    let creates = plan
        .create
        .iter()
        .map(|c| {
            let l = match c.lifecycle {
                Lifecycle::Permanent => "P",
                Lifecycle::ScaledUp => "S",
            };
            format!("{}/{l}", c.provider)
        })
        .collect::<Vec<_>>()
        .join(" ");
    field("create", creates);
    field("retire", ids(&mut plan.retire.iter().map(|r| &r.id)));
    field("later", ids(&mut plan.retire_once_created.iter()));
    field("resume", ids(&mut plan.resume.iter().map(|r| &r.id)));
    if plan.kept_protected > 0 {
        out.push(format!("kept {}", plan.kept_protected));
    }
    for c in &plan.capped {
        let by = match &c.by {
            CapBy::Quota { .. } => "quota",
            CapBy::QuotaUnreadable => "quota?",
            CapBy::Provider { .. } => "provider",
        };
        let new = if c.announce { "!" } else { "" };
        out.push(format!("{by} {}→{}{new}", c.wanted, c.allowed));
    }
    match &plan.waiting {
        Some(Waiting::Backoff {
            provider,
            until,
            failures,
        }) => out.push(format!(
            "wait {provider} until {} ({failures})",
            until.as_millis() / 1000
        )),
        Some(Waiting::NoProvider) => out.push("wait no provider".into()),
        None => {}
    }
    out.join(" ")
}

fn check(cases: Vec<(&str, PlanInput, &str)>) {
    for (name, input, expected) in cases {
        assert_eq!(describe(&plan(&input, NOW)), expected, "{name}");
    }
}

#[test]
fn scale_out_and_in() {
    use InstanceStatus::*;
    check(vec![
        (
            "at desired: nothing",
            group(2, &["a"], vec![run(1), run(2)]),
            "2→2",
        ),
        (
            "empty group",
            group(3, &["a"], vec![]),
            "0→3 create[a/S a/S a/S]",
        ),
        (
            "creates below min are permanent",
            with(group(3, &["a"], vec![permanent(run(1))]), |g| g.min = 2),
            "1→3 create[a/P a/S]",
        ),
        (
            "pending and paused count, draining does not",
            group(
                4,
                &["a"],
                vec![
                    inst(1, "a", Pending),
                    inst(2, "a", Paused),
                    with_retirement(inst(3, "a", Draining), Retirement::Committed),
                ],
            ),
            "2→4 create[a/S a/S]",
        ),
        (
            "scale-in: newest first",
            group(1, &["a"], vec![run(1), run(2), run(3)]),
            "3→1 retire[i3 i2]",
        ),
        (
            "scale-in: scaled-up before permanent, then newest first",
            group(
                2,
                &["a"],
                vec![permanent(run(1)), run(2), permanent(run(3)), run(4)],
            ),
            "4→2 retire[i4 i2]",
        ),
        (
            "scale-in: the least-preferred provider's first, even permanent ones",
            group(
                2,
                &["a", "b"],
                vec![run(1), permanent(inst(2, "b", Running)), run(3)],
            ),
            "3→2 retire[i2]",
        ),
        (
            "scale-in: protected never",
            group(1, &["a"], vec![run(1), run(2), protected(run(3))]),
            "3→1 retire[i2 i1]",
        ),
        (
            "scale-in: only protected left: nothing",
            group(0, &["a"], vec![protected(run(1)), protected(run(2))]),
            "2→0 kept 2",
        ),
        (
            "scale-in: an instance on a provider not configured here cannot be retired",
            group(1, &["a"], vec![run(1), inst(2, "gone", Running)]),
            "2→1 retire[i1]",
        ),
        (
            "deleting: everything goes, protected too (protection is against scale-in)",
            with(
                group(3, &["a"], vec![run(1), protected(run(2)), run(3)]),
                |g| g.deleting = true,
            ),
            "3→0 retire[i3 i2 i1]",
        ),
        (
            "desired below current while one is created: it is retired once created",
            group(2, &["a"], vec![run(1), run(2), inst(3, "a", Pending)]),
            "3→2 later[i3]",
        ),
        (
            "... and a running one goes now when more must go",
            group(1, &["a"], vec![run(1), run(2), inst(3, "a", Pending)]),
            "3→1 retire[i2] later[i3]",
        ),
    ]);
}

/// `i` on `host`, using `cpu` percent of a core.
fn on(host: &str, cpu: f64, mut i: InstanceInput) -> InstanceInput {
    i.host = Some(host.into());
    i.cpu_percent = Some(cpu);
    i
}

fn policy(input: PlanInput, rules: &[TerminationRule]) -> PlanInput {
    with(input, |g| g.termination_policy = rules.to_vec())
}

#[test]
fn termination_policy_orders_the_scale_in() {
    use InstanceStatus::*;
    use TerminationRule::*;
    let fallback = |desired| {
        group(
            desired,
            &["a", "b"],
            vec![
                permanent(run(1)),
                inst(2, "b", Running),
                run(3),
                inst(4, "b", Running),
                run(5),
            ],
        )
    };
    // Host h1 runs i1, i2, i3; h2 runs i4, i5 (busier per instance); i6 has no host.
    let spread = |desired| {
        group(
            desired,
            &["a"],
            vec![
                on("h1", 10.0, run(1)),
                on("h1", 10.0, run(2)),
                on("h1", 10.0, run(3)),
                on("h2", 50.0, run(4)),
                on("h2", 50.0, run(5)),
                run(6),
            ],
        )
    };
    check(vec![
        (
            "none: least-preferred provider, scaled-up before permanent, newest",
            fallback(2),
            "5→2 retire[i4 i2 i5]",
        ),
        (
            "oldest: by age alone, permanent or not, whatever the provider",
            policy(fallback(2), &[Oldest]),
            "5→2 retire[i1 i2 i3]",
        ),
        (
            "newest: by age alone",
            policy(fallback(3), &[Newest]),
            "5→3 retire[i5 i4]",
        ),
        (
            "least_preferred_provider then oldest",
            policy(fallback(2), &[LeastPreferredProvider, Oldest]),
            "5→2 retire[i2 i4 i1]",
        ),
        (
            "most_loaded_host: the host with the most instances first, then the default order",
            policy(spread(4), &[MostLoadedHost]),
            "6→4 retire[i3 i2]",
        ),
        (
            "most_loaded_host then oldest; instances of no known host last",
            policy(spread(1), &[MostLoadedHost, Oldest]),
            "6→1 retire[i1 i2 i3 i4 i5]",
        ),
        (
            "most_loaded_host: two of three on h1 and two on h2: h2 is busier",
            policy(
                group(
                    2,
                    &["a"],
                    vec![
                        on("h1", 10.0, run(1)),
                        on("h1", 10.0, run(2)),
                        on("h2", 50.0, run(4)),
                        on("h2", 50.0, run(5)),
                    ],
                ),
                &[MostLoadedHost],
            ),
            "4→2 retire[i5 i4]",
        ),
        (
            "a protected instance is skipped whatever the rules, and the rest goes on",
            policy(
                group(2, &["a"], vec![protected(run(1)), run(2), run(3), run(4)]),
                &[Oldest],
            ),
            "4→2 retire[i2 i3]",
        ),
        (
            "protection keeps the group above target: said, not retried blindly",
            policy(
                group(
                    1,
                    &["a"],
                    vec![protected(run(1)), protected(run(2)), run(3)],
                ),
                &[Oldest],
            ),
            "3→1 retire[i3] kept 1",
        ),
        (
            "a pending instance first in the order is retired once created",
            policy(
                group(2, &["a"], vec![run(1), run(2), inst(3, "a", Pending)]),
                &[Newest],
            ),
            "3→2 later[i3]",
        ),
    ]);
}

fn with_retirement(mut i: InstanceInput, r: Retirement) -> InstanceInput {
    i.retirement = r;
    i
}

#[test]
fn scale_out_takes_back_draining_instances_first() {
    use InstanceStatus::*;
    let draining = |order| inst(order, "a", Draining);
    check(vec![
        (
            "reuse before create, oldest first",
            group(3, &["a"], vec![run(1), draining(2), draining(3)]),
            "3→3 reuse[i2 i3]",
        ),
        (
            "only as many as needed",
            group(2, &["a"], vec![run(1), draining(2), draining(3)]),
            "2→2 reuse[i2]",
        ),
        (
            "then creates",
            group(4, &["a"], vec![run(1), draining(2)]),
            "2→4 reuse[i2] create[a/S a/S]",
        ),
        (
            "a reused permanent one counts toward min",
            with(group(2, &["a"], vec![permanent(draining(1))]), |g| {
                g.min = 2
            }),
            "1→2 reuse[i1] create[a/P]",
        ),
        (
            "not one whose deletion began",
            group(
                2,
                &["a"],
                vec![run(1), with_retirement(draining(2), Retirement::Committed)],
            ),
            "1→2 create[a/S]",
        ),
        (
            "not one retired as unhealthy",
            group(
                2,
                &["a"],
                vec![
                    run(1),
                    InstanceInput {
                        replaced: true,
                        ..draining(2)
                    },
                ],
            ),
            "1→2 create[a/S]",
        ),
        (
            "not during a scale-in",
            group(1, &["a"], vec![run(1), run(2), draining(3)]),
            "2→1 retire[i2]",
        ),
        (
            "a retirement without its task (a reload) is resumed, not reused",
            group(
                2,
                &["a"],
                vec![
                    run(1),
                    with_retirement(draining(2), Retirement::None),
                    with_retirement(inst(3, "a", Terminating), Retirement::None),
                    inst(4, "a", Terminating),
                ],
            ),
            "1→2 create[a/S] resume[i2 i3]",
        ),
    ]);
}

#[test]
fn dead_and_unhealthy_instances_are_replaced() {
    use InstanceStatus::*;
    let lost = |mut g: PlanInput, id: &str| {
        g.observed.retain(|o| o.id.as_str() != id);
        g
    };
    let unhealthy = |mut i: InstanceInput, secs| {
        i.unhealthy_for = Some(Duration::from_secs(secs));
        i
    };
    let replacing = |g: PlanInput| with(g, |g| g.replace_after = Some(Duration::from_secs(30)));
    check(vec![
        (
            "a running instance its provider no longer runs",
            lost(group(2, &["a"], vec![run(1), run(2)]), "i1"),
            "1→2 fail[i1] create[a/S]",
        ),
        (
            "an exited one is dead too, and a paused one",
            with(group(2, &["a"], vec![run(1), inst(2, "a", Paused)]), |g| {
                g.observed.iter_mut().for_each(|o| o.exited = true)
            }),
            "0→2 fail[i1 i2] create[a/S a/S]",
        ),
        (
            "not when the provider's list did not answer",
            with(lost(group(2, &["a"], vec![run(1), run(2)]), "i1"), |g| {
                g.providers[0].listed_at = None
            }),
            "2→2",
        ),
        (
            "not by a list taken before it started",
            with(lost(group(2, &["a"], vec![run(1), run(2)]), "i1"), |g| {
                g.providers[0].listed_at = Some(Timestamp::from_secs(899))
            }),
            "2→2",
        ),
        (
            "a pending one is not looked for (its create is under way)",
            lost(group(1, &["a"], vec![inst(1, "a", Pending)]), "i1"),
            "1→1",
        ),
        (
            "reported by another provider only: dead",
            with(group(1, &["a", "b"], vec![run(1)]), |g| {
                g.observed[0].provider = "b".into()
            }),
            "0→1 fail[i1] create[a/S]",
        ),
        (
            "unhealthy for replace_after: replaced, protected or not",
            replacing(group(
                3,
                &["a"],
                vec![
                    unhealthy(run(1), 40),
                    protected(unhealthy(run(2), 30)),
                    unhealthy(run(3), 29),
                ],
            )),
            "1→3 replace[i1 i2] create[a/S a/S]",
        ),
        (
            "no health check: no replacement",
            group(1, &["a"], vec![unhealthy(run(1), 400)]),
            "1→1",
        ),
        (
            "an unhealthy replacement during a scale-in covers part of it",
            replacing(group(
                1,
                &["a"],
                vec![run(1), unhealthy(run(2), 40), run(3)],
            )),
            "2→1 replace[i2] retire[i3]",
        ),
    ]);
}

#[test]
fn leftovers_are_swept() {
    use InstanceStatus::*;
    let seen = |id: &str, record| ObservedInstance {
        id: InstanceId(id.into()),
        provider: "a".into(),
        native_id: format!("n-{id}"),
        exited: true,
        record,
    };
    let g = with(group(1, &["a"], vec![run(1)]), |g| {
        g.observed.extend([
            seen("orphan", None),
            seen("failed", Some(Failed)),
            seen("done", Some(Terminated)),
            ObservedInstance {
                provider: "elsewhere".into(),
                ..seen("unknown-provider", None)
            },
        ])
    });
    let p = plan(&g, NOW);
    assert_eq!(describe(&p), "1→1 sweep[orphan failed]");
    assert_eq!(p.sweep[0].native_id, "n-orphan");
}

#[test]
fn quota_caps_scale_out() {
    let instances = |n| QuotaLimits {
        max_instances: Some(n),
        ..QuotaLimits::default()
    };
    let vcpus = |n| QuotaLimits {
        max_vcpus: Some(n),
        ..QuotaLimits::default()
    };
    let memory = |n| QuotaLimits {
        max_memory_mb: Some(n),
        ..QuotaLimits::default()
    };
    let two = |g: PlanInput, a: QuotaSize, b: QuotaSize| {
        with(g, |g| {
            g.providers[0].quota_size = a;
            g.providers[1].quota_size = b;
        })
    };
    check(vec![
        (
            "instances: 2 others + 1 here of 4",
            with(group(5, &["a"], vec![run(1)]), |g| {
                g.quota = quota(instances(4), 2, 0, 0)
            }),
            "1→2 create[a/S] quota 5→2!",
        ),
        (
            "announced once per cut target",
            with(group(5, &["a"], vec![run(1)]), |g| {
                g.quota = quota(instances(4), 2, 0, 0);
                g.announced.quota = Some(5);
            }),
            "1→2 create[a/S] quota 5→2",
        ),
        (
            "quota already full: no create",
            with(group(5, &["a"], vec![run(1)]), |g| {
                g.quota = quota(instances(3), 5, 0, 0)
            }),
            "1→1 quota 5→1!",
        ),
        (
            "vcpus: others 4, here 1 × 2, 8 allowed: one more",
            with(group(5, &["a"], vec![run(1)]), |g| {
                g.quota = quota(vcpus(8), 1, 4, 0);
                g.providers[0].quota_size = sized(2, 512);
            }),
            "1→2 create[a/S] quota 5→2!",
        ),
        (
            "memory: each new one at the largest provider size",
            with(
                two(
                    group(5, &["a", "b"], vec![run(1)]),
                    sized(1, 512),
                    sized(1, 1024),
                ),
                |g| g.quota = quota(memory(4096), 0, 0, 0),
            ),
            "1→4 create[a/S a/S a/S] quota 5→4!",
        ),
        (
            "an instance on a provider not configured here counts at the template's size",
            with(
                group(
                    5,
                    &["a"],
                    vec![run(1), inst(2, "gone", InstanceStatus::Running)],
                ),
                |g| {
                    g.quota = quota(vcpus(10), 0, 0, 0);
                    g.providers[0].quota_size = sized(2, 0);
                    g.template_size = sized(4, 0);
                },
            ),
            "2→4 create[a/S a/S] quota 5→4!",
        ),
        (
            "a size that cannot be read holds a vcpu quota",
            with(group(5, &["a"], vec![run(1)]), |g| {
                g.quota = quota(vcpus(100), 0, 0, 0);
                g.providers[0].quota_size = QuotaSize {
                    vcpus: None,
                    memory_mb: Some(0),
                };
            }),
            "1→1 quota 5→1!",
        ),
        (
            "... but not an instance quota",
            with(group(3, &["a"], vec![run(1)]), |g| {
                g.quota = quota(instances(100), 0, 0, 0);
                g.providers[0].quota_size = QuotaSize {
                    vcpus: None,
                    memory_mb: None,
                };
            }),
            "1→3 create[a/S a/S]",
        ),
        (
            "a reused instance counts against the quota",
            with(
                group(
                    4,
                    &["a"],
                    vec![run(1), inst(2, "a", InstanceStatus::Draining)],
                ),
                |g| g.quota = quota(instances(3), 0, 0, 0),
            ),
            "2→3 reuse[i2] create[a/S] quota 4→3!",
        ),
        (
            "a dead instance does not",
            with(group(2, &["a"], vec![run(1), run(2)]), |g| {
                g.observed.retain(|o| o.id.as_str() != "i2");
                g.quota = quota(instances(2), 0, 0, 0);
            }),
            "1→2 fail[i2] create[a/S]",
        ),
        (
            "unreadable: held where it is, not announced",
            with(group(3, &["a"], vec![run(1)]), |g| {
                g.quota = TenantQuota::Unreadable;
                g.announced.quota = Some(3);
            }),
            "1→1 quota? 3→1",
        ),
        (
            "not cut: the announcement is forgotten",
            with(group(3, &["a"], vec![run(1)]), |g| {
                g.quota = quota(instances(10), 0, 0, 0);
                g.announced.quota = Some(3);
            }),
            "1→3 create[a/S a/S]",
        ),
        (
            "a scale-in is never capped",
            with(group(1, &["a"], vec![run(1), run(2)]), |g| {
                g.quota = quota(instances(0), 10, 0, 0)
            }),
            "2→1 retire[i2]",
        ),
    ]);
    // The announcement is remembered for the next plan.
    let g = with(group(3, &["a"], vec![run(1)]), |g| {
        g.quota = quota(instances(1), 0, 0, 0);
        g.announced.quota = Some(9);
    });
    assert_eq!(plan(&g, NOW).announced.quota, Some(3));
    let g = with(g, |g| g.quota = TenantQuota::Unlimited);
    assert_eq!(plan(&g, NOW).announced.quota, None);
}

#[test]
fn provider_room_caps_scale_out_and_fallbacks_take_the_rest() {
    let room = |instances: Option<u32>, vcpus: Option<f64>, memory_mb: Option<u64>| {
        Some(Room {
            instances,
            vcpus,
            memory_mb,
        })
    };
    let size = |vcpus, memory_mb| Some(Size { vcpus, memory_mb });
    check(vec![
        (
            "instances",
            with(group(5, &["a"], vec![run(1)]), |g| {
                g.providers[0].room = room(Some(2), None, None)
            }),
            "1→3 create[a/S a/S] provider 5→3!",
        ),
        (
            "vcpus divided by the provider's size (5 / 2)",
            with(group(5, &["a"], vec![]), |g| {
                g.providers[0].room = room(None, Some(5.0), None);
                g.providers[0].size = size(2, 512);
            }),
            "0→2 create[a/S a/S] provider 5→2!",
        ),
        (
            "memory",
            with(group(5, &["a"], vec![]), |g| {
                g.providers[0].room = room(Some(10), None, Some(1500));
                g.providers[0].size = size(2, 512);
            }),
            "0→2 create[a/S a/S] provider 5→2!",
        ),
        (
            "an unknown size: only the count caps",
            with(group(3, &["a"], vec![]), |g| {
                g.providers[0].room = room(Some(10), Some(0.0), Some(0));
            }),
            "0→3 create[a/S a/S a/S]",
        ),
        (
            "quota first, then the providers on what is left",
            with(group(6, &["a"], vec![]), |g| {
                g.quota = quota(
                    QuotaLimits {
                        max_instances: Some(4),
                        ..QuotaLimits::default()
                    },
                    0,
                    0,
                    0,
                );
                g.providers[0].room = room(Some(1), None, None);
                g.announced.provider = Some(4);
            }),
            "0→1 create[a/S] quota 6→4! provider 4→1",
        ),
        (
            "by priority while they have room",
            with(group(4, &["a", "b", "c"], vec![]), |g| {
                g.providers[0].room = room(Some(1), None, None);
                g.providers[1].room = room(Some(2), None, None);
            }),
            "0→4 create[a/S b/S b/S c/S]",
        ),
        (
            "no room anywhere",
            with(group(2, &["a", "b"], vec![run(1)]), |g| {
                g.providers[0].room = room(Some(0), None, None);
                g.providers[1].room = room(Some(0), None, None);
            }),
            "1→1 provider 2→1!",
        ),
        (
            "a provider backing off is waited for",
            with(group(3, &["a", "b"], vec![run(1)]), |g| {
                g.providers[0].backoff = backoff(2, 1_010)
            }),
            "1→3 wait a until 1010 (2)",
        ),
        (
            "after three failures in a row it yields to the next",
            with(group(3, &["a", "b"], vec![run(1)]), |g| {
                g.providers[0].backoff = backoff(3, 1_010)
            }),
            "1→3 create[b/S b/S]",
        ),
        (
            "... and is first again once its backoff has passed",
            with(group(3, &["a", "b"], vec![run(1)]), |g| {
                g.providers[0].backoff = backoff(5, 1_000)
            }),
            "1→3 create[a/S a/S]",
        ),
        (
            "a yielding provider's room does not go to the next one's",
            with(group(4, &["a", "b"], vec![]), |g| {
                g.providers[0].backoff = backoff(3, 1_010);
                g.providers[1].room = room(Some(1), None, None);
            }),
            "0→4 create[b/S] wait a until 1010 (3)",
        ),
        (
            "every provider yields: the earliest backoff is shown",
            with(group(2, &["a", "b"], vec![]), |g| {
                g.providers[0].backoff = backoff(4, 1_060);
                g.providers[1].backoff = backoff(3, 1_020);
            }),
            "0→2 wait b until 1020 (3)",
        ),
        (
            "the preferred one is waited for even when a yielding one is back sooner",
            with(group(2, &["a", "b"], vec![]), |g| {
                g.providers[0].backoff = backoff(1, 1_005);
                g.providers[1].backoff = backoff(4, 1_002);
            }),
            "0→2 wait a until 1005 (1)",
        ),
        (
            "a provider without room is not waited for",
            with(group(2, &["a", "b"], vec![]), |g| {
                g.providers[0].room = room(Some(0), None, None);
                g.providers[0].backoff = backoff(1, 1_005);
            }),
            "0→2 create[b/S b/S]",
        ),
    ]);
}

#[test]
fn backoff_doubles_up_to_a_minute() {
    let delays: Vec<u64> = (1..=6).map(|f| CreateBackoff::delay(f).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
    assert_eq!(CreateBackoff::delay(u32::MAX).as_secs(), 60);
    let first = CreateBackoff::after_failure(None, NOW);
    assert_eq!(
        (first.failures, first.until),
        (1, NOW.add(Duration::from_secs(5)))
    );
    let second = CreateBackoff::after_failure(Some(first), NOW);
    assert_eq!(second.failures, 2);
    assert!(second.holds(NOW) && !second.holds(NOW.add(Duration::from_secs(10))));
}

#[test]
fn cut_messages_say_what_is_left() {
    let g = with(group(5, &["a"], vec![run(1)]), |g| {
        g.quota = quota(
            QuotaLimits {
                max_instances: Some(10),
                max_vcpus: Some(8),
                max_memory_mb: None,
            },
            2,
            4,
            1024,
        );
        g.providers[0].quota_size = sized(2, 512);
    });
    let p = plan(&g, NOW);
    assert_eq!(p.capped[0].event_kind(), Some(EventKind::QuotaCapped));
    assert_eq!(
        p.capped[0].message(),
        "scale-out to 5 capped at 2 by the tenant's quota (instances Some(10), vcpus Some(8), memory_mb None; in use: 3 instances, 6 vcpus, 1536 MiB; one instance needs 2 vcpus, 512 MiB)"
    );
    let g = with(g, |g| g.providers[0].quota_size.vcpus = None);
    assert!(
        plan(&g, NOW).capped[0]
            .message()
            .ends_with("unknown vcpus, 1536 MiB; one instance needs unknown vcpus, 512 MiB); an instance size cannot be read (see the server log) and the template gives none: no scale-out until it can"),
        "{}",
        plan(&g, NOW).capped[0].message()
    );

    let g = with(group(5, &["a", "b"], vec![]), |g| {
        g.providers[0].room = Some(Room {
            instances: Some(1),
            vcpus: Some(3.0),
            memory_mb: None,
        });
        g.providers[0].size = Some(Size {
            vcpus: 2,
            memory_mb: 512,
        });
        g.providers[1].room = Some(Room {
            instances: Some(1),
            vcpus: None,
            memory_mb: Some(100),
        });
    });
    let p = plan(&g, NOW);
    assert_eq!(p.capped[0].event_kind(), Some(EventKind::ProviderCapped));
    assert_eq!(
        p.capped[0].message(),
        "scale-out to 5 capped at 2: provider a, b has no room for more (left: a: 1 instances, 3.0 vcpus, unlimited MiB; one instance needs 2 vcpus, 512 MiB | b: 1 instances, unlimited vcpus, 100 MiB; instance size unknown, only the count caps)"
    );
    // A size the room does not need is not shown.
    let counted_only = with(g.clone(), |g| {
        g.providers.truncate(1);
        g.providers[0].room = Some(Room {
            instances: Some(0),
            ..Room::default()
        });
    });
    assert_eq!(
        plan(&counted_only, NOW).capped[0].message(),
        "scale-out to 5 capped at 0: provider a has no room for more (left: 0 instances, unlimited vcpus, unlimited MiB)"
    );
    let one = with(g, |g| {
        g.providers.truncate(1);
    });
    assert_eq!(
        plan(&one, NOW).capped[0].message(),
        "scale-out to 5 capped at 1: provider a has no room for more (left: 1 instances, 3.0 vcpus, unlimited MiB; one instance needs 2 vcpus, 512 MiB)"
    );
}

fn arb_status() -> impl Strategy<Value = InstanceStatus> {
    prop::sample::select(vec![
        InstanceStatus::Pending,
        InstanceStatus::Running,
        InstanceStatus::Running,
        InstanceStatus::Paused,
        InstanceStatus::Draining,
        InstanceStatus::Terminating,
    ])
}

fn arb_instance() -> impl Strategy<Value = InstanceInput> {
    (
        0usize..3,
        arb_status(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0u64..60),
        0usize..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(p, status, perm, protected, unhealthy, retirement, replaced, alive)| {
                let mut i = inst(0, ["a", "b", "gone"][p], status);
                i.lifecycle = if perm {
                    Lifecycle::Permanent
                } else {
                    Lifecycle::ScaledUp
                };
                i.protected = protected;
                i.unhealthy_for = unhealthy.map(Duration::from_secs);
                i.retirement = [
                    Retirement::None,
                    Retirement::Cancellable,
                    Retirement::Committed,
                ][retirement];
                i.replaced = replaced;
                // Whether its provider reports it: a trailing `!` on the provider until
                // `arb_input` builds the observed list.
                i.provider = format!("{}{}", i.provider, if alive { "" } else { "!" });
                i
            },
        )
}

fn arb_provider(name: &'static str) -> impl Strategy<Value = ProviderInput> {
    (
        prop::option::of((
            prop::option::of(0u32..5),
            prop::option::of(0.0f64..10.0),
            prop::option::of(0u64..4096),
        )),
        prop::option::of((0u32..4, 0u64..2048)),
        (0u64..4, 0u64..2048, any::<bool>()),
        prop::option::of((0u32..6, 990i64..1010)),
        any::<bool>(),
    )
        .prop_map(
            move |(room, size, (qv, qm, known), backoff, listed)| ProviderInput {
                name: name.into(),
                listed_at: listed.then_some(NOW),
                room: room.map(|(instances, vcpus, memory_mb)| Room {
                    instances,
                    vcpus,
                    memory_mb,
                }),
                size: size.map(|(vcpus, memory_mb)| Size { vcpus, memory_mb }),
                quota_size: QuotaSize {
                    vcpus: known.then_some(qv),
                    memory_mb: Some(qm),
                },
                backoff: backoff.map(|(failures, until)| CreateBackoff {
                    failures,
                    until: Timestamp::from_secs(until),
                }),
            },
        )
}

fn arb_input() -> impl Strategy<Value = PlanInput> {
    (
        0u32..10,
        0u32..4,
        any::<bool>(),
        prop::collection::vec(arb_instance(), 0..10),
        arb_provider("a"),
        arb_provider("b"),
        prop::option::of((
            prop::option::of(0u32..12),
            prop::option::of(0u32..20),
            prop::option::of(0u64..8192),
            0u64..5,
            0u64..8,
        )),
    )
        .prop_flat_map(|parts| {
            (
                Just(parts),
                prop::sample::subsequence(
                    vec![
                        TerminationRule::MostLoadedHost,
                        TerminationRule::Oldest,
                        TerminationRule::LeastPreferredProvider,
                        TerminationRule::Newest,
                    ],
                    0..=3,
                ),
            )
        })
        .prop_map(
            |((desired, min, deleting, raw, a, b, q), termination_policy)| {
                let mut instances = Vec::new();
                let mut observed = Vec::new();
                for (n, mut i) in raw.into_iter().enumerate() {
                    let alive = !i.provider.ends_with('!');
                    i.provider = i.provider.trim_end_matches('!').to_string();
                    i.id = InstanceId(format!("i{n}"));
                    i.created_order = n as u64;
                    // Some on one of three hosts, for `most_loaded_host`.
                    if n % 4 != 3 {
                        i.host = Some(format!("h{}", n % 3));
                        i.cpu_percent = Some((n * 17 % 100) as f64);
                    }
                    if alive {
                        observed.push(ObservedInstance {
                            id: i.id.clone(),
                            provider: i.provider.clone(),
                            native_id: String::new(),
                            exited: false,
                            record: Some(i.status),
                        });
                    }
                    instances.push(i);
                }
                let quota = q.map_or(
                    TenantQuota::Unlimited,
                    |(max_instances, max_vcpus, max_memory_mb, others, vcpus)| {
                        quota(
                            QuotaLimits {
                                max_instances,
                                max_vcpus,
                                max_memory_mb,
                            },
                            others,
                            vcpus,
                            others * 256,
                        )
                    },
                );
                PlanInput {
                    desired,
                    deleting,
                    min,
                    providers: vec![a, b],
                    instances,
                    observed,
                    replace_after: Some(Duration::from_secs(30)),
                    quota,
                    template_size: sized(1, 256),
                    announced: Announced::default(),
                    termination_policy,
                }
            },
        )
}

proptest! {
    #[test]
    fn no_protected_instance_is_retired_by_a_scale_in(input in arb_input()) {
        // A deletion retires them all.
        let input = with(input, |g| g.deleting = false);
        let p = plan(&input, NOW);
        let is_protected = |id: &InstanceId| {
            input.instances.iter().any(|i| &i.id == id && i.protected)
        };
        prop_assert!(!p.retire.iter().any(|r| is_protected(&r.id)));
        prop_assert!(!p.retire_once_created.iter().any(is_protected));
    }

    #[test]
    fn creates_stay_within_the_quota_and_each_providers_room(input in arb_input()) {
        let p = plan(&input, NOW);
        for provider in &input.providers {
            let n = p.create.iter().filter(|c| c.provider == provider.name).count() as u64;
            prop_assert!(n <= fits(provider), "{n} creates on {}", provider.name);
            if provider.backoff.is_some_and(|b| b.holds(NOW)) {
                prop_assert_eq!(n, 0, "created on {} while it backs off", &provider.name);
            }
        }
        if let TenantQuota::Limited { limits, others } = input.quota
            && !p.create.is_empty()
        {
            let after = others.instances + u64::from(p.have) + p.create.len() as u64;
            if let Some(max) = limits.max_instances {
                prop_assert!(after <= u64::from(max), "{after} instances over {max}");
            }
            // The group's instances after the plan, each at its real size.
            let size_of = |provider: &str| {
                input
                    .providers
                    .iter()
                    .find(|p| p.name == provider)
                    .map_or(input.template_size, |p| p.quota_size)
            };
            let gone: Vec<&InstanceId> =
                p.fail.iter().map(|f| &f.id).chain(p.replace.iter().map(|r| &r.id)).collect();
            let kept = input
                .instances
                .iter()
                .filter(|i| i.status.counts_toward_capacity() && !gone.contains(&&i.id))
                .chain(input.instances.iter().filter(|i| p.reuse.contains(&i.id)))
                .map(|i| size_of(&i.provider));
            let added = p
                .create
                .iter()
                .map(|c| size_of(&c.provider))
                .fold(QuotaSize::ZERO, QuotaSize::plus);
            let used = kept.fold(others.size, QuotaSize::plus).plus(added);
            // Creates that take none of a resource are not limited by it.
            if let Some(max) = limits.max_vcpus
                && added.vcpus != Some(0)
            {
                let used = used.vcpus;
                prop_assert!(used.is_some_and(|u| u <= u64::from(max)), "{used:?} vcpus over {max}");
            }
            if let Some(max) = limits.max_memory_mb
                && added.memory_mb != Some(0)
            {
                let used = used.memory_mb;
                prop_assert!(used.is_some_and(|u| u <= max), "{used:?} MiB over {max}");
            }
        }
    }

    #[test]
    fn a_plan_moves_toward_desired_without_overshooting(input in arb_input()) {
        let p = plan(&input, NOW);
        let desired = if input.deleting { 0 } else { input.desired };
        let base = i64::from(p.have) - p.reuse.len() as i64;
        let after = i64::from(p.have) + p.create.len() as i64
            - p.retire.len() as i64 - p.retire_once_created.len() as i64;
        let desired = i64::from(desired);
        if base <= desired {
            prop_assert!(base <= after && after <= desired, "{base} → {after}, desired {desired}");
            prop_assert!(p.retire.is_empty() && p.retire_once_created.is_empty());
        } else {
            prop_assert!(desired <= after && after <= base, "{base} → {after}, desired {desired}");
            prop_assert!(p.create.is_empty() && p.reuse.is_empty());
        }
        // What falls short of the desired count is explained.
        if after < desired && p.retire.is_empty() {
            prop_assert!(!p.capped.is_empty() || p.waiting.is_some(), "{p:?}");
        }
        // Nothing is acted on twice.
        let mut touched: Vec<&InstanceId> = p.fail.iter().map(|f| &f.id)
            .chain(p.replace.iter().map(|r| &r.id))
            .chain(p.reuse.iter())
            .chain(p.retire.iter().map(|r| &r.id))
            .chain(p.retire_once_created.iter())
            .chain(p.resume.iter().map(|r| &r.id))
            .collect();
        let n = touched.len();
        touched.sort();
        touched.dedup();
        prop_assert_eq!(touched.len(), n);
    }
}

proptest! {
    /// The two-phase use documented on [`PlanInput`]: without a scale-out, the caps
    /// change nothing, so a worker need not read them.
    #[test]
    fn caps_only_matter_to_a_scale_out(input in arb_input()) {
        let uncapped = with(input.clone(), |g| {
            g.quota = TenantQuota::Unlimited;
            for p in &mut g.providers {
                (p.room, p.size, p.quota_size) = (None, None, QuotaSize { vcpus: None, memory_mb: None });
            }
        });
        let first = plan(&uncapped, NOW);
        let full = plan(&input, NOW);
        prop_assert_eq!(first.have < first.desired, full.have < full.desired);
        if first.have >= first.desired {
            prop_assert_eq!(first, full);
        }
    }
}

#[test]
fn quota_sizes_multiply_and_unknown_stays_unknown() {
    let check = |size: QuotaSize, n: u64, expected: QuotaSize| assert_eq!(size.times(n), expected);
    let known = QuotaSize {
        vcpus: Some(2),
        memory_mb: Some(512),
    };
    check(
        known,
        3,
        QuotaSize {
            vcpus: Some(6),
            memory_mb: Some(1536),
        },
    );
    check(known, 0, QuotaSize::ZERO);
    let half = QuotaSize {
        vcpus: None,
        memory_mb: Some(64),
    };
    check(
        half,
        2,
        QuotaSize {
            vcpus: None,
            memory_mb: Some(128),
        },
    );
}
