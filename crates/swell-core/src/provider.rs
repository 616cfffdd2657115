//! The kinds of provider a definition can be (`process`, `docker`, `openstack`): what a
//! group's template must hold for each, whatever the definition is named.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What kind of provider a definition is; a group's template is checked by kind, not
/// by the definition's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Local processes on the server's host.
    Process,
    /// Containers on Docker engines.
    Docker,
    /// Servers in an OpenStack project.
    Openstack,
}

impl ProviderKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Process,
        ProviderKind::Docker,
        ProviderKind::Openstack,
    ];

    /// The kind's name (`process`, `docker`, `openstack`); also the name of the
    /// built-in definition of that kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Process => "process",
            ProviderKind::Docker => "docker",
            ProviderKind::Openstack => "openstack",
        }
    }

    /// The kind of a built-in definition, which is named after its kind.
    pub fn builtin(name: &str) -> Option<ProviderKind> {
        name.parse().ok()
    }

    /// Whether its template names an image a tenant must be granted.
    pub fn uses_images(self) -> bool {
        matches!(self, ProviderKind::Docker | ProviderKind::Openstack)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown provider kind `{s}` (one of process, docker, openstack)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_unknown_is_named() {
        for k in ProviderKind::ALL {
            assert_eq!(k.as_str().parse::<ProviderKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(ProviderKind::builtin("docker-rack1"), None);
        assert!("qemu".parse::<ProviderKind>().unwrap_err().contains("qemu"));
        assert!(ProviderKind::Docker.uses_images() && !ProviderKind::Process.uses_images());
    }
}
