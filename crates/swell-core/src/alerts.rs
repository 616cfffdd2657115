//! What an alert from Alertmanager does to a group (`alerts:` in the group document):
//! the inbound half of notifications (`POST /v1/groups/{name}/alerts`), seed 0's
//! alarm idea and Heat/Aodh's role. Pure: the server parses the payload and calls
//! [`AlertAction::desired_after`].

use crate::ValidationError;
use serde::{Deserialize, Serialize};

/// The group's answer to Alertmanager notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// What a notification with at least one firing alert does.
    pub firing: AlertAction,
    /// What a notification whose alerts are all resolved does; absent: nothing, so
    /// that an alert ending never undoes capacity a policy may still need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<AlertAction>,
}

/// One change of the desired capacity, written `{step: N}` or `{desired_capacity: N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AlertAction {
    /// Add this many instances (a scale-out by a step), up to `max`.
    Step(u32),
    /// Set the desired capacity to this count, held within `[min, max]`.
    DesiredCapacity(u32),
}

impl AlertAction {
    /// The desired capacity after the action, from `current`, within `[min, max]`.
    pub fn desired_after(self, current: u32, min: u32, max: u32) -> u32 {
        let wanted = match self {
            AlertAction::Step(n) => current.saturating_add(n),
            AlertAction::DesiredCapacity(n) => n,
        };
        wanted.clamp(min, max.max(min))
    }

    /// Checks the action against the group's bounds (`field` names it in errors).
    pub fn validate(self, field: &str, min: u32, max: u32) -> Result<(), ValidationError> {
        match self {
            AlertAction::Step(0) => Err(ValidationError::new(
                format!("{field}.step"),
                "must be at least 1",
            )),
            AlertAction::DesiredCapacity(n) if n < min || n > max => Err(ValidationError::new(
                format!("{field}.desired_capacity"),
                format!("desired_capacity ({n}) must be within [min, max] = [{min}, {max}]"),
            )),
            _ => Ok(()),
        }
    }
}

impl AlertsSpec {
    /// Checks both actions against the group's bounds.
    pub fn validate(&self, min: u32, max: u32) -> Result<(), ValidationError> {
        self.firing.validate("alerts.firing", min, max)?;
        if let Some(r) = self.resolved {
            r.validate("alerts.resolved", min, max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_stay_within_bounds() {
        let check = |action: AlertAction, current: u32, expected: u32| {
            assert_eq!(
                action.desired_after(current, 1, 5),
                expected,
                "{action:?} from {current}"
            );
        };
        check(AlertAction::Step(1), 2, 3);
        check(AlertAction::Step(2), 4, 5);
        check(AlertAction::Step(u32::MAX), 4, 5);
        check(AlertAction::DesiredCapacity(4), 1, 4);
        check(AlertAction::DesiredCapacity(0), 3, 1);
        check(AlertAction::DesiredCapacity(9), 3, 5);
    }

    #[test]
    fn validation_names_the_field() {
        let spec: AlertsSpec =
            serde_json::from_value(serde_json::json!({"firing": {"step": 0}})).unwrap();
        let e = spec.validate(1, 5).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule.as_str()),
            ("alerts.firing.step", "must be at least 1")
        );
        let spec: AlertsSpec = serde_json::from_value(
            serde_json::json!({"firing": {"step": 1}, "resolved": {"desired_capacity": 9}}),
        )
        .unwrap();
        let e = spec.validate(1, 5).unwrap_err();
        assert_eq!(e.field, "alerts.resolved.desired_capacity");
        assert!(
            serde_json::from_value::<AlertsSpec>(
                serde_json::json!({"firing": {"step": 1, "desired_capacity": 2}})
            )
            .is_err()
        );
    }
}
