//! The metric history and export routes: a group's short metric history (what the
//! dashboard draws), one instance's, and the CSV form of a group's events. Each answers
//! JSON, or CSV with `?format=csv` (cells of the caller's text neutralised against
//! spreadsheet formulas, like the audit log's).

use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::http::{ApiQuery, query_time};
use crate::http_identity::csv_field;
use crate::metric_history::{GroupPoint, InstancePoint};
use crate::service::{Service, ServiceError};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use swell_api as api;
use swell_core::policy::PolicySpec;
use swell_core::{GroupSpec, Metric, ValidationError};
use swell_store::EventRecord;

type ApiResult<T> = Result<T, ServiceError>;

/// The `Content-Type` of every CSV answer.
pub const CSV: &str = "text/csv; charset=utf-8";

/// Whether `format` asks for CSV (`csv`) rather than JSON (none, or `json`); anything
/// else is an error naming `format`.
pub(crate) fn wants_csv(format: Option<&str>) -> Result<bool, ValidationError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(ValidationError::new(
            "format",
            format!("unknown format `{other}`: json or csv"),
        )),
    }
}

/// Query of the metric history routes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MetricsQuery {
    /// Only points at or after this RFC 3339 time (default: all that are kept).
    pub(crate) since: Option<String>,
    /// Only points before this RFC 3339 time.
    pub(crate) until: Option<String>,
    /// At most this many (the newest); default 10000, at most 100000.
    pub(crate) limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub(crate) format: Option<String>,
}

impl MetricsQuery {
    /// The store's filter; a time that is not RFC 3339, or a limit out of 1..=100000,
    /// is an error naming its parameter.
    pub(crate) fn filter(&self) -> Result<swell_store::PointFilter, ServiceError> {
        let max = swell_store::metric_points::MAX_METRIC_POINT_LIMIT;
        if let Some(n) = self.limit
            && !(1..=max).contains(&n)
        {
            return Err(ServiceError::Invalid(ValidationError::new(
                "limit",
                format!("must be from 1 to {max} (got {n}); narrow with since and until"),
            )));
        }
        Ok(swell_store::PointFilter {
            since: query_time("since", &self.since)?,
            until: query_time("until", &self.until)?,
            limit: self.limit,
        })
    }
}

/// The metric a group's policies scale on (the first policy naming one; `cpu` when
/// none does) and the levels its policies compare their metrics with.
pub fn policy_lines(spec: &GroupSpec) -> (Metric, Vec<api::MetricLine>) {
    let mut lines = Vec::new();
    let mut first = None;
    for policy in &spec.policies {
        let (kind, metric, levels): (&str, Metric, Vec<(&str, f64)>) = match policy {
            PolicySpec::Threshold(p) => {
                let mut levels = Vec::new();
                if let Some(v) = p.scale_out_above {
                    levels.push(("scale_out_above", v));
                }
                if let Some(v) = p.scale_in_below {
                    levels.push(("scale_in_below", v));
                }
                ("threshold", p.metric, levels)
            }
            PolicySpec::Target(p) => ("target", p.metric, vec![("target", p.target)]),
            PolicySpec::Proportional(p) => ("proportional", p.metric, vec![("target", p.target)]),
            PolicySpec::Predictive(p) => ("predictive", p.metric, vec![("target", p.target)]),
            PolicySpec::Swell(p) => ("swell", p.metric, vec![("target", p.target)]),
            PolicySpec::Schedule(_) => continue,
        };
        first.get_or_insert(metric);
        for (line, value) in levels {
            lines.push(api::MetricLine {
                policy: kind.into(),
                metric: metric.as_str().into(),
                kind: line.into(),
                value,
            });
        }
    }
    (first.unwrap_or(Metric::Cpu), lines)
}

/// The API view of a group's points.
pub fn group_metrics_view(spec: &GroupSpec, points: &[GroupPoint]) -> api::GroupMetrics {
    let (metric, lines) = policy_lines(spec);
    api::GroupMetrics {
        group: spec.name.clone(),
        metric: metric.as_str().into(),
        interval_seconds: spec.metrics_interval.as_secs_f64(),
        lines,
        points: points
            .iter()
            .map(|p| api::GroupMetricPoint {
                at: rfc3339(p.at),
                running: p.running,
                desired_capacity: p.desired_capacity,
                value: p.values.iter().find(|(m, _)| *m == metric).map(|(_, v)| *v),
                metrics: p
                    .values
                    .iter()
                    .map(|(m, v)| (m.as_str().to_string(), *v))
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect(),
    }
}

/// A group's points as CSV: `at,running,desired_capacity`, then one column per metric
/// sampled in any of them (in [`Metric`]'s order; empty where not sampled).
pub fn group_metrics_csv(view: &api::GroupMetrics) -> String {
    let mut metrics: Vec<&str> = Vec::new();
    for p in &view.points {
        for m in p.metrics.keys() {
            if !metrics.contains(&m.as_str()) {
                metrics.push(m);
            }
        }
    }
    let order = |name: &str| {
        ALL_METRICS
            .iter()
            .position(|m| m.as_str() == name)
            .unwrap_or(usize::MAX)
    };
    metrics.sort_by_key(|m| order(m));
    let mut out = String::from("at,running,desired_capacity");
    for m in &metrics {
        out.push(',');
        out.push_str(&csv_field(m));
    }
    out.push('\n');
    for p in &view.points {
        out.push_str(&format!(
            "{},{},{}",
            csv_field(&p.at),
            p.running,
            p.desired_capacity
        ));
        for m in &metrics {
            out.push(',');
            if let Some(v) = p.metrics.get(*m) {
                out.push_str(&v.to_string());
            }
        }
        out.push('\n');
    }
    out
}

const ALL_METRICS: [Metric; 8] = [
    Metric::Cpu,
    Metric::Memory,
    Metric::RequestRate,
    Metric::RequestRatePerInstance,
    Metric::InFlight,
    Metric::LatencyP99,
    Metric::ErrorRate,
    Metric::Steal,
];

/// One instance's points as CSV: `at,cpu_percent,memory_mb`.
pub fn instance_metrics_csv(view: &api::InstanceMetricHistory) -> String {
    let mut out = String::from("at,cpu_percent,memory_mb\n");
    for p in &view.points {
        out.push_str(&format!(
            "{},{},{}\n",
            csv_field(&p.at),
            p.cpu_percent,
            p.memory_mb
        ));
    }
    out
}

/// A group's events as CSV, one row per event with its cause spread over columns.
pub fn events_csv(events: &[EventRecord]) -> String {
    let mut out = String::from(
        "id,at,group,kind,instance_id,policy,metric,value,threshold,before,after,reason,message\n",
    );
    let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for e in events {
        let v = crate::http::event_view(e);
        let c = v.cause.as_ref();
        let text = [
            v.at.clone(),
            v.group.clone(),
            v.kind.clone(),
            v.instance_id.clone().unwrap_or_default(),
            c.map(|c| c.policy.clone()).unwrap_or_default(),
            c.and_then(|c| c.metric.clone()).unwrap_or_default(),
        ];
        let mut row: Vec<String> = vec![v.id.to_string()];
        row.extend(text.iter().map(|f| csv_field(f)));
        row.push(num(c.and_then(|c| c.value)));
        row.push(num(c.and_then(|c| c.threshold)));
        row.push(c.map(|c| c.before.to_string()).unwrap_or_default());
        row.push(c.map(|c| c.after.to_string()).unwrap_or_default());
        row.push(csv_field(c.map(|c| c.reason.as_str()).unwrap_or_default()));
        row.push(csv_field(&v.message));
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// A CSV answer.
pub(crate) fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, CSV)], body).into_response()
}

/// The group's metric history, kept in the store whatever its policy: one point
/// per metrics interval (the mean of each metric sampled, the running instances, the
/// desired capacity), with the thresholds or targets of its policies; oldest first.
/// JSON, or CSV with `format=csv`.
#[utoipa::path(get, path = "/v1/groups/{name}/metrics", params(("name" = String, Path), MetricsQuery),
    responses((status = 200, description = "JSON; with format=csv, CSV: `at,running,desired_capacity` and one column per metric",
        content((api::GroupMetrics = "application/json"), (String = "text/csv"))),
        (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
pub(crate) async fn group_metrics(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Response> {
    let csv = wants_csv(q.format.as_deref())?;
    let filter = q.filter()?;
    let (group, points) = s.group_metrics(&p.tenant, &name, &filter).await?;
    let view = group_metrics_view(&group.spec, &points);
    if csv {
        return Ok(csv_response(group_metrics_csv(&view)));
    }
    Ok(axum::Json(view).into_response())
}

/// One instance's metric history: one point per metrics interval, its CPU and
/// memory reading, oldest first. JSON, or CSV with `format=csv`.
#[utoipa::path(get, path = "/v1/groups/{name}/instances/{id}/metrics",
    params(("name" = String, Path), ("id" = String, Path), MetricsQuery),
    responses((status = 200, description = "JSON; with format=csv, CSV: `at,cpu_percent,memory_mb`",
        content((api::InstanceMetricHistory = "application/json"), (String = "text/csv"))),
        (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
pub(crate) async fn instance_metrics(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path((name, id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Response> {
    let csv = wants_csv(q.format.as_deref())?;
    let filter = q.filter()?;
    let points = s.instance_metrics(&p, &name, &id, &filter).await?;
    let view = api::InstanceMetricHistory {
        group: name,
        instance_id: id,
        points: points.iter().map(instance_point_view).collect(),
    };
    if csv {
        return Ok(csv_response(instance_metrics_csv(&view)));
    }
    Ok(axum::Json(view).into_response())
}

fn instance_point_view(p: &InstancePoint) -> api::InstanceMetricPoint {
    api::InstanceMetricPoint {
        at: rfc3339(p.at),
        cpu_percent: p.cpu_percent,
        memory_mb: p.memory_mb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_json_or_csv() {
        assert_eq!(wants_csv(None), Ok(false));
        assert_eq!(wants_csv(Some("json")), Ok(false));
        assert_eq!(wants_csv(Some("csv")), Ok(true));
        let e = wants_csv(Some("xml")).unwrap_err();
        assert_eq!(e.field, "format");
        assert!(e.rule.contains("json or csv"), "{e}");
    }

    fn spec(policies: serde_json::Value) -> GroupSpec {
        serde_json::from_value(serde_json::json!({
            "name": "web", "min": 1, "max": 3,
            "template": {"command": ["sleep", "600"]},
            "policies": policies,
        }))
        .unwrap()
    }

    #[test]
    fn lines_come_from_every_policy_naming_a_metric() {
        let s = spec(serde_json::json!([
            {"type": "schedule", "cron": "0 8 * * *", "timezone": "UTC", "duration": "1h", "min": 2},
            {"type": "threshold", "metric": "request_rate", "scale_out_above": 80.0, "scale_in_below": 20.0},
            {"type": "target", "metric": "cpu", "target": 50.0},
        ]));
        let (metric, lines) = policy_lines(&s);
        assert_eq!(metric, Metric::RequestRate);
        let got: Vec<(&str, &str, &str, f64)> = lines
            .iter()
            .map(|l| {
                (
                    l.policy.as_str(),
                    l.metric.as_str(),
                    l.kind.as_str(),
                    l.value,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("threshold", "request_rate", "scale_out_above", 80.0),
                ("threshold", "request_rate", "scale_in_below", 20.0),
                ("target", "cpu", "target", 50.0),
            ]
        );
        assert_eq!(policy_lines(&spec(serde_json::json!([]))).0, Metric::Cpu);
    }

    #[test]
    fn group_csv_has_a_column_per_metric_seen() {
        let s = spec(serde_json::json!([
            {"type": "threshold", "metric": "cpu", "scale_out_above": 80.0},
        ]));
        let at = |ms| swell_core::Timestamp::from_millis(ms);
        let points = vec![
            GroupPoint {
                at: at(1_000),
                running: 1,
                desired_capacity: 1,
                values: vec![(Metric::Cpu, 12.5)],
            },
            GroupPoint {
                at: at(2_000),
                running: 2,
                desired_capacity: 2,
                values: vec![(Metric::Memory, 30.0), (Metric::RequestRate, 4.0)],
            },
        ];
        let view = group_metrics_view(&s, &points);
        assert_eq!(view.points[0].value, Some(12.5));
        assert_eq!(view.points[1].value, None);
        assert_eq!(
            group_metrics_csv(&view),
            "at,running,desired_capacity,cpu,memory,request_rate\n\
             1970-01-01T00:00:01Z,1,1,12.5,,\n\
             1970-01-01T00:00:02Z,2,2,,30,4\n"
        );
    }
}
