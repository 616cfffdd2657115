//! Reading group and tenant documents (YAML or JSON) with errors that give line and column.

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use std::path::Path;
use swell_core::GroupSpec;

/// A tenant document (`tenant.yaml`, after seed 2's `tenant.yml`): the groups one tenant
/// wants. `swell apply -f` creates the missing groups and updates the others.
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
    serde_saphyr::from_str::<T>(text).map_err(|e| anyhow!("{origin}: {e}"))
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
        assert!(err.contains("line 5") || err.contains("5:"), "{err}");
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
}
