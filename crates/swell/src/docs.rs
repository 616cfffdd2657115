//! Reading group and tenant documents and policy files (YAML or JSON) with errors that
//! give line and column.

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use std::path::Path;
use swell_core::{GroupSpec, PolicySpec};

/// A tenant document (`tenant.yaml`): the groups one tenant
/// wants. `swell apply -f` sends it to `POST /v1/apply`, which creates the missing groups
/// and updates the changed ones in one transaction.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDoc {
    /// The tenant (only `default` until tenancy lands).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The groups.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

/// Parses YAML or JSON text (JSON is YAML) into `T`; errors carry line and column.
pub fn parse<T: for<'de> Deserialize<'de>>(text: &str, origin: &str) -> Result<T> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let message = e.to_string();
        match unknown_field_position(text, &message) {
            Some((line, column, rule)) => anyhow!("{origin}: line {line} column {column}: {rule}"),
            None => anyhow!("{origin}: {message}"),
        }
    })
}

/// The YAML parser places an unknown field at the start of its enclosing mapping; find
/// the key itself, at or after that line, so the error points at what to fix.
fn unknown_field_position(text: &str, message: &str) -> Option<(usize, usize, String)> {
    let start = message.find("unknown field `")?;
    let rest = &message[start..];
    let name = rest["unknown field `".len()..].split('`').next()?;
    let rule = rest.split(" at line ").next()?.to_string();
    let from_line: usize = message
        .split("line ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    for (i, line) in text.lines().enumerate().skip(from_line.saturating_sub(1)) {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").unwrap_or(body).trim_start();
        let indent = line.len() - body.len();
        for quoted in [
            format!("{name}:"),
            format!("\"{name}\":"),
            format!("'{name}':"),
            format!("\"{name}\" :"),
        ] {
            if body.starts_with(&quoted) {
                return Some((i + 1, indent + 1, rule));
            }
        }
    }
    None
}

/// Reads a document from a file (`-` for standard input).
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    parse(&text, &path.display().to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    policies: Vec<PolicySpec>,
}

/// Parses a group's `policies:` section (or a bare list of policies) and validates it.
pub fn parse_policy_file(text: &str) -> anyhow::Result<Vec<PolicySpec>> {
    let bare = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && l != &"---")
        .is_some_and(|l| l.starts_with('-'));
    let specs = if bare {
        parse::<Vec<PolicySpec>>(text, "policy file")?
    } else {
        parse::<PolicySection>(text, "policy file")?.policies
    };
    if specs.is_empty() {
        anyhow::bail!("policies: the list is empty");
    }
    for (i, p) in specs.iter().enumerate() {
        p.validate()
            .map_err(|e| anyhow::anyhow!("{}", e.within(&format!("policies[{i}]"))))?;
    }
    Ok(specs)
}

/// The JSON form of a validated group, as the API takes it.
pub fn group_json(spec: &GroupSpec) -> Result<serde_json::Value> {
    spec.validate()
        .map_err(|e| anyhow!("group `{}`: {e}", spec.name))?;
    Ok(serde_json::to_value(spec)?)
}

/// Applies `swell group update NAME --set FIELD=VALUE` changes to a group document, in
/// order. FIELD is a dotted path (`max`, `policies.0.target`, `load_balancer.listen`):
/// a number indexes a list (an existing item), any other name a mapping's key (a
/// missing key is added, a missing mapping on the way created); VALUE is YAML
/// (`60`, `true`, `5m`, `[oldest, newest]`). Whether the result is a valid group
/// document is the server's to say, as for `-f`: it names the field and the rule.
pub fn set_fields(doc: &mut serde_json::Value, sets: &[String]) -> Result<()> {
    use serde_json::Value;
    for set in sets {
        let (path, raw) = set
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {set}: expected FIELD=VALUE"))?;
        let value: Value = if raw.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(raw)
                .map_err(|e| anyhow!("--set {path}: the value `{raw}` is not YAML: {e}"))?
        };
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(anyhow!(
                "--set {set}: the field `{path}` has an empty part (use a.b.0.c)"
            ));
        }
        let mut here = &mut *doc;
        for (depth, key) in keys.iter().enumerate() {
            let at = keys[..=depth].join(".");
            let last = depth + 1 == keys.len();
            here = match here {
                Value::Array(items) => {
                    let len = items.len();
                    let i: usize = key.parse().map_err(|_| {
                        anyhow!("--set {path}: `{at}`: a list is indexed by number (0 to {len})")
                    })?;
                    items.get_mut(i).ok_or_else(|| {
                        anyhow!(
                            "--set {path}: `{at}`: the list has {len} items (index 0 to {})",
                            len.saturating_sub(1)
                        )
                    })?
                }
                Value::Object(map) => {
                    let next = if last {
                        Value::Null
                    } else {
                        Value::Object(Default::default())
                    };
                    map.entry(key.to_string()).or_insert(next)
                }
                Value::Null => {
                    *here = Value::Object(Default::default());
                    match here {
                        Value::Object(map) => map.entry(key.to_string()).or_insert(Value::Null),
                        _ => unreachable!("just set to a mapping"),
                    }
                }
                _ => {
                    let parent = keys[..depth].join(".");
                    return Err(anyhow!(
                        "--set {path}: `{parent}` is a single value, it has no field `{key}`"
                    ));
                }
            };
        }
        *here = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_fields_changes_one_field_at_a_path() {
        use serde_json::json;
        let doc = json!({
            "name": "web", "max": 4,
            "policies": [{"type": "target", "metric": "cpu", "target": 50.0}],
        });
        let check = |sets: &[&str], expected: Result<serde_json::Value, &str>| {
            let mut d = doc.clone();
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            match (set_fields(&mut d, &sets), expected) {
                (Ok(()), Ok(want)) => assert_eq!(d, want, "{sets:?}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{sets:?}: {e}"),
                (got, want) => panic!("{sets:?}: got {got:?} / {d}, expected {want:?}"),
            }
        };
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut d = doc.clone();
            change(&mut d);
            Ok(d)
        };
        check(&["max=10"], with(&|d| d["max"] = json!(10)));
        check(
            &["policies.0.target=60"],
            with(&|d| d["policies"][0]["target"] = json!(60)),
        );
        check(
            &["max=10", "min=2"],
            with(&|d| {
                d["max"] = json!(10);
                d["min"] = json!(2);
            }),
        );
        check(
            &["termination_policy=[oldest, most_loaded_host]"],
            with(&|d| d["termination_policy"] = json!(["oldest", "most_loaded_host"])),
        );
        check(&["cooldown=5m"], with(&|d| d["cooldown"] = json!("5m")));
        check(
            &["load_balancer.listen=127.0.0.1:0"],
            with(&|d| d["load_balancer"] = json!({"listen": "127.0.0.1:0"})),
        );
        // An unknown field is added here and refused by the server, which names it.
        check(&["maxx=3"], with(&|d| d["maxx"] = json!(3)));
        check(&["max"], Err("expected FIELD=VALUE"));
        check(&["policies.1.target=60"], Err("the list has 1 items"));
        check(&["policies.first.target=60"], Err("indexed by number"));
        check(&["max.value=3"], Err("`max` is a single value"));
        check(&["policies..target=1"], Err("empty part"));
    }

    #[test]
    fn unknown_fields_give_line_and_column() {
        let text =
            "groups:\n  - name: web\n    max: 3\n    template: {command: [a]}\n    maxx: 4\n";
        let err = parse::<TenantDoc>(text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("maxx"), "{err}");
        assert!(err.contains("line 5 column 5"), "{err}");
        let err = parse::<GroupSpec>(
            "name: bad\nmax: 3\ntemplate:\n  command: [app]\nmaxx: 4\n",
            "g.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("g.yaml: line 5 column 1: unknown field `maxx`"),
            "{err}"
        );
    }

    #[test]
    fn tenant_doc_parses() {
        let doc: TenantDoc = parse(
            "groups:\n  - name: web\n    max: 3\n    template: {command: [a, '{port}']}\n",
            "t",
        )
        .unwrap();
        assert_eq!(doc.groups[0].max, 3);
    }

    /// docs/metrics.md's examples are real group documents.
    #[test]
    fn metric_source_examples_parse_and_validate() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
        let text = std::fs::read_to_string(path).expect("docs/metrics.md");
        let groups: Vec<&str> = text
            .split("```yaml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.starts_with("name:"))
            .collect();
        assert_eq!(groups.len(), 3, "the lab, steal-time and customer examples");
        for block in groups {
            let g: GroupSpec = parse(block, "docs/metrics.md").unwrap_or_else(|e| panic!("{e:#}"));
            g.validate()
                .unwrap_or_else(|e| panic!("group {}: {e}", g.name));
            assert_eq!(g.metric_sources.len(), 1, "{}", g.name);
        }
    }

    /// The examples double as documentation: each must parse and pass every rule.
    #[test]
    fn examples_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        for name in ["tenant.yaml", "openstack-lab.yaml"] {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).expect("the example");
            let doc: TenantDoc = parse(&text, name).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!doc.groups.is_empty(), "{name} has no group");
            for g in &doc.groups {
                g.validate()
                    .unwrap_or_else(|e| panic!("{name}: group {}: {e}", g.name));
            }
        }
    }

    /// `swell apply -f examples/tenant.yaml` works unchanged on the bootstrap `default`
    /// tenant (issue 15): its groups name only what the bootstrap grants cover, and tick
    /// no faster than the server's default floor.
    #[test]
    fn the_tenant_example_fits_the_bootstrap_grants() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tenant.yaml");
        let text = std::fs::read_to_string(&path).expect("the example");
        let doc: TenantDoc = parse(&text, "tenant.yaml").unwrap_or_else(|e| panic!("{e:#}"));
        let grants = swell_core::Grants::bootstrap();
        let floor = swell_server::service::DEFAULT_MIN_INTERVAL;
        for g in &doc.groups {
            for p in g.providers() {
                assert!(grants.allows_provider(p), "{}: provider {p}", g.name);
            }
            if let Some(lb) = &g.load_balancer {
                let addr = lb.listen.parse().expect("an address");
                assert!(grants.allows_listen(&addr), "{}: {}", g.name, lb.listen);
            }
            assert!(g.evaluation_interval >= floor && g.metrics_interval >= floor);
        }
    }
}
