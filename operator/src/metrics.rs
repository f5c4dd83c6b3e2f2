//! Prometheus metrics of the operator, served on `/metrics`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Reconcile counters and per-cluster gauges. Registered in their own registry so tests can
/// create as many as they like.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Errors by kind.
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    /// Members in the Raft group, per cluster.
    pub members: IntGaugeVec,
    /// Healthy members, per cluster.
    pub ready_members: IntGaugeVec,
    /// 1 while a membership change or rollout is in progress.
    pub operation_in_progress: IntGaugeVec,
    /// Membership and rollout steps taken, per cluster and action.
    pub steps: IntCounterVec,
}

/// Metric construction failed (a programming error in names or labels).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let cluster = &["namespace", "name"];
        let m = Self {
            reconciles: IntCounterVec::new(
                Opts::new("kv_operator_reconciles_total", "Reconciles of KVClusters by result"),
                &["result"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("kv_operator_reconcile_errors_total", "Failed reconciles by error kind"),
                &["kind"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("kv_operator_reconcile_duration_seconds", "Time spent in one reconcile")
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &[],
            )?,
            members: IntGaugeVec::new(
                Opts::new("kv_operator_cluster_members", "Members per cluster"),
                cluster,
            )?,
            ready_members: IntGaugeVec::new(
                Opts::new("kv_operator_cluster_ready_members", "Healthy members per cluster"),
                cluster,
            )?,
            operation_in_progress: IntGaugeVec::new(
                Opts::new("kv_operator_cluster_operation_in_progress", "1 while a change is in progress"),
                cluster,
            )?,
            steps: IntCounterVec::new(
                Opts::new("kv_operator_steps_total", "Membership and rollout steps taken"),
                &["namespace", "name", "step"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.reconciles.clone()))?;
        m.registry.register(Box::new(m.errors.clone()))?;
        m.registry.register(Box::new(m.duration.clone()))?;
        m.registry.register(Box::new(m.members.clone()))?;
        m.registry.register(Box::new(m.ready_members.clone()))?;
        m.registry.register(Box::new(m.operation_in_progress.clone()))?;
        m.registry.register(Box::new(m.steps.clone()))?;
        Ok(m)
    }

    /// Drops a deleted cluster's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        let _ = self.members.remove_label_values(&[namespace, name]);
        let _ = self.ready_members.remove_label_values(&[namespace, name]);
        let _ = self.operation_in_progress.remove_label_values(&[namespace, name]);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}
