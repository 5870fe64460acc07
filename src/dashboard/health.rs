//! The status of a five-minute bucket, under documented thresholds.

use serde::{Deserialize, Serialize};

/// When a bucket is `degraded` or `failing`. A bucket with no requests is `idle`; one that
/// crosses no threshold is `ok`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthThresholds {
    /// Failed requests / requests at or above which a bucket is `failing`.
    pub failing_failure_rate: f64,
    /// Failed requests / requests at or above which a bucket is `degraded`.
    pub degraded_failure_rate: f64,
    /// Conflicts / mutations at or above which a bucket is `degraded`.
    pub degraded_conflict_rate: f64,
    /// Request p95 latency in milliseconds above which a bucket is `degraded`.
    pub degraded_p95_ms: f64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds { failing_failure_rate: 0.05, degraded_failure_rate: 0.01, degraded_conflict_rate: 0.10, degraded_p95_ms: 1000.0 }
    }
}

/// A five-minute bucket's status under [`HealthThresholds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No threshold crossed.
    Ok,
    /// Not failing, but the failure rate is at or above `degraded_failure_rate`, the conflict
    /// rate at or above `degraded_conflict_rate`, or p95 above `degraded_p95_ms`.
    Degraded,
    /// Failure rate at or above `failing_failure_rate`.
    Failing,
    /// No requests.
    Idle,
}

/// `num / den`, 0 when there is nothing to divide.
pub fn rate(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

impl HealthThresholds {
    /// The status of a bucket from its counts and its p95 latency in milliseconds.
    pub fn status(&self, requests: u64, failed: u64, mutations: u64, conflicts: u64, p95_ms: f64) -> Status {
        if requests == 0 {
            return Status::Idle;
        }
        let failure_rate = rate(failed, requests);
        if failure_rate >= self.failing_failure_rate {
            Status::Failing
        } else if failure_rate >= self.degraded_failure_rate
            || rate(conflicts, mutations) >= self.degraded_conflict_rate
            || p95_ms > self.degraded_p95_ms
        {
            Status::Degraded
        } else {
            Status::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_thresholds_at_their_boundaries() {
        let t = HealthThresholds::default();
        assert_eq!(t.status(0, 0, 0, 0, 0.0), Status::Idle);
        assert_eq!(t.status(100, 0, 100, 0, 10.0), Status::Ok);
        assert_eq!(t.status(100, 1, 100, 0, 10.0), Status::Degraded, "1% failures");
        assert_eq!(t.status(100, 5, 100, 0, 10.0), Status::Failing, "5% failures");
        assert_eq!(t.status(100, 0, 100, 10, 10.0), Status::Degraded, "10% conflicts");
        assert_eq!(t.status(100, 0, 100, 9, 10.0), Status::Ok);
        assert_eq!(t.status(100, 0, 100, 0, 1000.0), Status::Ok, "p95 at the threshold is ok");
        assert_eq!(t.status(100, 0, 100, 0, 1000.1), Status::Degraded);
    }
}
