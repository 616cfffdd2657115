//! Fuzzing bodies for the CLI's document parsers (`docs.rs`), shared by the `fuzz/`
//! targets and the stable replay test `tests/fuzz_corpus.rs`, which both include this
//! file and `docs.rs` by path (`swell` is a binary crate, without a library to link).
//! Not part of the binary.

use crate::docs::{TenantDoc, parse, parse_policy_file};
use swell_core::fuzz_targets::check_valid_group;
use swell_core::{GroupSpec, PolicySpec};

/// A group document as `swell group create -f` and `swell apply -f` read it (YAML, of
/// which JSON is a subset), then `GroupSpec::validate`: never panics, and a valid group
/// satisfies [`check_valid_group`] (the JSON round trip to the API, one decision).
pub fn group_spec_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = parse::<GroupSpec>(text, "fuzz")
        && spec.validate().is_ok()
    {
        check_valid_group(&spec);
    }
    if let Ok(doc) = parse::<TenantDoc>(text, "fuzz") {
        for spec in doc.groups.iter().filter(|g| g.validate().is_ok()) {
            check_valid_group(spec);
        }
    }
}

/// `swell sim --policy-file`: never panics, and the policies it accepts are valid and
/// survive a JSON round trip unchanged.
pub fn policy_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(specs) = parse_policy_file(text) else {
        return;
    };
    assert!(!specs.is_empty());
    for p in &specs {
        p.validate().expect("accepted policies are valid");
    }
    let json = serde_json::to_string(&specs).expect("policies serialize");
    let back: Vec<PolicySpec> = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the serialized policies do not parse: {e}: {json}"));
    assert_eq!(back, specs, "{json}");
}
