//! Planning: how long until a regression is caught.

/// What to plan for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// Stable's error rate, a fraction (0.01).
    pub baseline_error_rate: f64,
    /// The canary's error rate to be detected (0.05).
    pub canary_error_rate: f64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Seconds until detection with the requested probability.
    pub seconds: Option<f64>,
}

/// Plans (to be written).
pub fn plan(_input: &PlanInput) -> Plan {
    Plan { seconds: None }
}
