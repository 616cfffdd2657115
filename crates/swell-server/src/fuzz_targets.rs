//! Fuzzing bodies for the API's parsers of outside input that are not group documents
//! (those are `swell_core::fuzz_targets::group_spec_json`): the metric push body and
//! the query strings. Shared by the `fuzz/` targets (cargo-fuzz, nightly) and the stable
//! replay test `tests/fuzz_corpus.rs`. Not part of the API.

use crate::http::{
    EventQuery, InstanceQuery, LoadHistoryQuery, parse_body, parse_query, query_time,
};
use crate::http_identity::{AuditQuery, ForceQuery};
use crate::service::{
    MAX_PUSHED_SAMPLES, PUSHABLE_METRICS, PushSample, ServiceError, check_samples,
};
use axum::body::Bytes;
use swell_api as api;
use swell_core::fuzz_targets::path_resolves;
use swell_core::{Timestamp, ValidationError};

/// The live instances the fuzzed group has.
const LIVE: &[&str] = &["web-1", "web-2"];

/// `POST /v1/groups/{name}/metrics`: the body (`parse_body`), then the service's check
/// of every sample (`check_samples`). A body it accepts survives a JSON round trip
/// unchanged, and its readings are one per sample, of a pushable metric, finite and
/// `>= 0`, of a live instance when they name one. A body it rejects gets an error whose
/// field is `body` or a place in the body (`samples[3].value`), and a sample check that
/// fails names the first sample that breaks its rule.
pub fn push_metrics(data: &[u8]) {
    let req: api::PushMetrics = match parse_body(&Bytes::copy_from_slice(data)) {
        Ok(req) => req,
        Err(e) => {
            let e = invalid(e);
            if e.field != "body"
                && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data)
            {
                assert!(path_resolves(&doc, &e.field), "{e}: not in {doc}");
            }
            return;
        }
    };
    let json = serde_json::to_vec(&req).expect("a push body serializes");
    let back: api::PushMetrics = parse_body(&Bytes::from(json))
        .unwrap_or_else(|e| panic!("the serialized push body does not parse: {e}"));
    assert_eq!(back, req);

    let samples: Vec<PushSample> = req
        .samples
        .iter()
        .map(|x| PushSample {
            metric: x.metric.clone(),
            value: x.value,
            instance_id: x.instance_id.clone(),
        })
        .collect();
    let at = Timestamp::from_secs(1_796_198_400);
    match check_samples(&samples, "web", LIVE, at) {
        Ok(readings) => {
            assert!((1..=MAX_PUSHED_SAMPLES).contains(&readings.len()));
            assert_eq!(readings.len(), samples.len());
            for (r, s) in readings.iter().zip(&samples) {
                assert!(PUSHABLE_METRICS.contains(&s.metric.as_str()), "{s:?}");
                assert_eq!(
                    serde_json::to_value(r.metric).ok(),
                    Some(serde_json::Value::String(s.metric.clone()))
                );
                assert!(r.value.is_finite() && r.value >= 0.0 && r.value == s.value);
                assert_eq!(
                    r.instance.as_ref().map(|i| i.as_str()),
                    s.instance_id.as_deref()
                );
                assert!(
                    r.instance
                        .as_ref()
                        .is_none_or(|i| LIVE.contains(&i.as_str()))
                );
                assert_eq!(r.at, at);
            }
        }
        Err(e) => {
            let e = invalid(e);
            if e.field == "samples" {
                assert!(
                    samples.is_empty() || samples.len() > MAX_PUSHED_SAMPLES,
                    "{e}"
                );
                return;
            }
            // `samples[i].<field>`: sample i breaks that rule, and every earlier one is fine.
            let (i, field) = e
                .field
                .strip_prefix("samples[")
                .and_then(|r| r.split_once("]."))
                .and_then(|(i, f)| Some((i.parse::<usize>().ok()?, f)))
                .unwrap_or_else(|| panic!("{e} names no sample"));
            let s = samples
                .get(i)
                .unwrap_or_else(|| panic!("{e}: no such sample"));
            let broken = match field {
                "metric" => !PUSHABLE_METRICS.contains(&s.metric.as_str()),
                "value" => !(s.value.is_finite() && s.value >= 0.0),
                "instance_id" => s
                    .instance_id
                    .as_deref()
                    .is_some_and(|id| !LIVE.contains(&id)),
                _ => false,
            };
            assert!(broken, "{e}: {s:?}");
            assert!(i == 0 || check_samples(&samples[..i], "web", LIVE, at).is_ok());
        }
    }
}

/// The query strings of `GET /v1/groups/{name}/events` (then its filter),
/// `GET /v1/groups/{name}/instances`, `DELETE /v1/tenants/{tenant}` and `GET /v1/audit`
/// (then its format), as `parse_query` reads them. An accepted event filter's times are
/// the instants given (formatted back as the API shows times, they parse to the same
/// filter); a rejected query gets an error naming a parameter it has (or `query`).
pub fn api_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let names: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let names_a_parameter = |e: &ValidationError, allowed: &[&str]| {
        assert!(
            e.field == "query" || names.contains(&e.field) || allowed.contains(&e.field.as_str()),
            "{e}: not a parameter of {query:?}"
        );
        assert!(!e.rule.is_empty());
    };

    match parse_query::<EventQuery>(query) {
        Ok(q) => match q.filter() {
            Ok(filter) => {
                assert_eq!((filter.after_id, filter.limit), (q.after_id, q.limit));
                assert_eq!(filter.since.is_some(), q.since.is_some());
                assert_eq!(filter.until.is_some(), q.until.is_some());
                let mut again = String::new();
                for (name, t) in [("since", filter.since), ("until", filter.until)] {
                    if let Some(t) = t {
                        let text = crate::clock::rfc3339(t);
                        again.push_str(&format!("{name}={}&", enc(&text)));
                    }
                }
                let back = parse_query::<EventQuery>(&again)
                    .and_then(|q| q.filter())
                    .unwrap_or_else(|e| panic!("{again:?} does not parse: {e}"));
                assert_eq!(
                    (back.since, back.until),
                    (filter.since, filter.until),
                    "{again}"
                );
            }
            Err(e) => {
                let e = invalid(e);
                assert!(["since", "until"].contains(&e.field.as_str()), "{e}");
                names_a_parameter(&e, &[]);
            }
        },
        Err(e) => names_a_parameter(&invalid(e), &[]),
    }
    if let Err(e) = parse_query::<InstanceQuery>(query) {
        names_a_parameter(&invalid(e), &[]);
    }
    match parse_query::<LoadHistoryQuery>(query) {
        Ok(q) => {
            if let Err(e) = query_time("since", &q.since) {
                let e = invalid(e);
                assert_eq!(e.field, "since", "{e}");
                names_a_parameter(&e, &[]);
            }
        }
        Err(e) => names_a_parameter(&invalid(e), &[]),
    }
    if let Err(e) = parse_query::<ForceQuery>(query) {
        names_a_parameter(&invalid(e), &[]);
    }
    match parse_query::<AuditQuery>(query) {
        Ok(q) => match q.csv() {
            Ok(csv) => assert_eq!(csv, q.format.as_deref() == Some("csv")),
            Err(e) => names_a_parameter(&e, &[]),
        },
        Err(e) => names_a_parameter(&invalid(e), &[]),
    }
}

/// The validation error inside a `400`/`404` service error; anything else is a bug of
/// the parse (it touches no store).
fn invalid(e: ServiceError) -> ValidationError {
    match e {
        ServiceError::Invalid(e) | ServiceError::Unknown(e) => {
            assert!(!e.field.is_empty() && !e.rule.is_empty(), "{e}");
            e
        }
        other => panic!("not a validation error: {other}"),
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
