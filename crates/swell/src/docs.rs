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

#[cfg(test)]
mod tests {
    use super::*;

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
