//! Turning one reading of the engine's stats endpoint into [`InstanceMetrics`].

use crate::InstanceMetrics;
use bollard::models::{ContainerCpuStats, ContainerStatsResponse};

/// What one stats reading says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    /// CPU in percent of the container's limit (100 = the whole limit busy).
    pub(crate) metrics: InstanceMetrics,
    /// CPU cores in use (for the host's load).
    pub(crate) cores: f64,
}

/// Reads CPU and memory from a non-streamed stats response, whose `precpu_stats` is the
/// engine's previous sample: CPU as cores in use between the two samples
/// (`Δcontainer / Δsystem × online CPUs`, as `docker stats` computes it), in percent of
/// `limit_vcpus` (the container's `NanoCpus`; the online CPUs when it has no limit), and
/// memory as usage less the inactive page cache, in MiB.
pub(crate) fn reading(stats: &ContainerStatsResponse, limit_vcpus: f64) -> Reading {
    let cores = cpu_cores(stats.cpu_stats.as_ref(), stats.precpu_stats.as_ref());
    let online = stats
        .cpu_stats
        .as_ref()
        .and_then(online_cpus)
        .unwrap_or(1.0);
    let limit = if limit_vcpus > 0.0 {
        limit_vcpus
    } else {
        online
    };
    let cpu_percent = cores / limit * 100.0;
    Reading {
        metrics: InstanceMetrics {
            cpu_percent: if cpu_percent.is_finite() {
                cpu_percent.max(0.0)
            } else {
                0.0
            },
            memory_mb: memory_bytes(stats) as f64 / (1024.0 * 1024.0),
            steal_percent: None,
        },
        cores: if cores.is_finite() { cores } else { 0.0 },
    }
}

fn online_cpus(cpu: &ContainerCpuStats) -> Option<f64> {
    match cpu.online_cpus {
        Some(n) if n > 0 => Some(n as f64),
        _ => cpu
            .cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .map(|per| per.len() as f64)
            .filter(|n| *n > 0.0),
    }
}

/// Cores in use between the previous and the current sample; 0 without a previous one.
fn cpu_cores(now: Option<&ContainerCpuStats>, before: Option<&ContainerCpuStats>) -> f64 {
    let (Some(now), Some(before)) = (now, before) else {
        return 0.0;
    };
    let total = |c: &ContainerCpuStats| c.cpu_usage.as_ref().and_then(|u| u.total_usage);
    let (Some(used_now), Some(used_before)) = (total(now), total(before)) else {
        return 0.0;
    };
    let (Some(system_now), Some(system_before)) = (now.system_cpu_usage, before.system_cpu_usage)
    else {
        return 0.0;
    };
    if used_now < used_before || system_now <= system_before || system_before == 0 {
        return 0.0;
    }
    let online = online_cpus(now).unwrap_or(1.0);
    (used_now - used_before) as f64 / (system_now - system_before) as f64 * online
}

/// Memory in use, less the page cache the kernel can drop (cgroup v1
/// `total_inactive_file`, v2 `inactive_file`), as `docker stats` shows it.
fn memory_bytes(stats: &ContainerStatsResponse) -> u64 {
    let Some(memory) = stats.memory_stats.as_ref() else {
        return 0;
    };
    let usage = memory.usage.unwrap_or(0);
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    usage.saturating_sub(cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuUsage, ContainerMemoryStats};
    use std::collections::HashMap;

    fn cpu(total: u64, system: u64, online: u32) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                ..ContainerCpuUsage::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(online),
            throttling_data: None,
        }
    }

    fn stats(now: ContainerCpuStats, before: ContainerCpuStats) -> ContainerStatsResponse {
        ContainerStatsResponse {
            cpu_stats: Some(now),
            precpu_stats: Some(before),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(48 * 1024 * 1024),
                stats: Some(HashMap::from([(
                    "total_inactive_file".to_string(),
                    16 * 1024 * 1024,
                )])),
                ..ContainerMemoryStats::default()
            }),
            ..ContainerStatsResponse::default()
        }
    }

    #[test]
    fn cpu_is_a_share_of_the_limit() {
        // 2 online CPUs; the system clock advanced 2 s over both CPUs (1 s each), the
        // container used 0.5 s: half a core.
        let s = stats(
            cpu(1_500_000_000, 12_000_000_000, 2),
            cpu(1_000_000_000, 10_000_000_000, 2),
        );
        let one = reading(&s, 1.0);
        assert!((one.cores - 0.5).abs() < 1e-9, "{one:?}");
        assert!((one.metrics.cpu_percent - 50.0).abs() < 1e-9, "{one:?}");
        // The same use with a limit of half a core is the whole limit.
        assert!((reading(&s, 0.5).metrics.cpu_percent - 100.0).abs() < 1e-9);
        // Without a limit: in percent of every online CPU.
        assert!((reading(&s, 0.0).metrics.cpu_percent - 25.0).abs() < 1e-9);
        // Memory: 48 MiB used, 16 MiB of it inactive cache.
        assert!((one.metrics.memory_mb - 32.0).abs() < 1e-9);
    }

    #[test]
    fn no_previous_sample_or_odd_counters_read_zero() {
        let mut s = stats(cpu(10, 10, 2), ContainerCpuStats::default());
        assert_eq!(reading(&s, 1.0).metrics.cpu_percent, 0.0);
        // Counters going backwards (a restarted container): 0, not negative.
        s.precpu_stats = Some(cpu(20, 5, 2));
        assert_eq!(reading(&s, 1.0).metrics.cpu_percent, 0.0);
        // No memory section at all.
        let bare = ContainerStatsResponse::default();
        let r = reading(&bare, 1.0);
        assert_eq!(
            (r.metrics.cpu_percent, r.metrics.memory_mb, r.cores),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn cgroup_v2_cache_is_subtracted_too() {
        let mut s = stats(cpu(0, 1, 1), cpu(0, 0, 1));
        if let Some(m) = s.memory_stats.as_mut() {
            m.stats = Some(HashMap::from([(
                "inactive_file".to_string(),
                8 * 1024 * 1024,
            )]));
        }
        assert!((reading(&s, 1.0).metrics.memory_mb - 40.0).abs() < 1e-9);
    }
}
