//! The error every check of user input returns: the field it names and the rule it broke.

/// A rejected input: which field, and which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ValidationError {
    /// The field's path, e.g. `policies[0].step`.
    pub field: String,
    /// The rule, phrased for a user, e.g. `max (2) must be >= min (3)`.
    pub rule: String,
}

impl ValidationError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The same error with its field nested under `prefix` (`policies[0]` + `step`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}
