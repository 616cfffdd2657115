//! Identifiers whose validity is checked once, when they are built.

use crate::error::ValidationError;
use std::fmt;

fn check_name(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok_len = !value.is_empty() && value.len() <= 63;
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = !value.starts_with('-') && !value.ends_with('-');
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "`{value}` must be 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'"
            ),
        ))
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                check_name($field, &value)?;
                Ok(Self(value))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A tenant's id (`default` until full tenancy lands); on every stored row.
    TenantId,
    "tenant"
);
name_type!(
    /// A scaling group's name, unique within its tenant.
    GroupName,
    "name"
);

name_type!(
    /// A provider definition's name (`process`, `docker-rack1`, `openstack-prod`), unique
    /// on the server: what a group's `provider` and a tenant's grants name.
    ProviderName,
    "name"
);

impl TenantId {
    /// The tenant every object belongs to before tenancy is configured.
    pub fn default_tenant() -> Self {
        TenantId("default".into())
    }
}

/// An instance's id. It is also the idempotency key of the intent that created it and is
/// stamped on the instance itself (environment, label, metadata), so that reconciliation
/// after a crash can match what a provider reports with what the store recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub String);

impl InstanceId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(GroupName::new("web-1").is_ok());
        for bad in ["", "Web", "-a", "a-", "a_b", &"x".repeat(64)] {
            let err = GroupName::new(bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad}");
        }
    }
}
