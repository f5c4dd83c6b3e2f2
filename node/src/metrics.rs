//! Prometheus metrics of one member.
//!
//! Names follow etcd's (`etcd_server_has_leader` becomes `raftkv_server_has_leader`, and so on)
//! so that people who run etcd recognise them and can port dashboards and alerts by a prefix.
//! Each member owns its own registry rather than the process-global one, so several members
//! can run in one process (the dev cluster, tests) without colliding.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Registry, TextEncoder,
};

/// Every metric a member exports.
pub struct Metrics {
    registry: Registry,
    /// 1 while this member knows a leader.
    pub has_leader: IntGauge,
    /// 1 while this member is the leader.
    pub is_leader: IntGauge,
    /// Leader changes this member has seen since it started.
    pub leader_changes: IntCounter,
    /// Proposals this member saw committed.
    pub proposals_committed: IntCounter,
    /// Entries applied to the state machine.
    pub proposals_applied: IntCounter,
    /// Proposals made on this member that have not been applied yet.
    pub proposals_pending: IntGauge,
    /// Proposals that failed (no leader, leadership lost, dropped, timed out).
    pub proposals_failed: IntCounter,
    /// Proposals this member forwarded to the leader (inside Raft) instead of appending.
    pub proposals_forwarded: IntCounter,
    /// Latency of the fsync'd write of entries and hard state before messages are sent.
    pub wal_fsync_duration: Histogram,
    /// Latency of applying a batch of committed entries to the key-value store.
    pub backend_commit_duration: Histogram,
    /// Latency of making the key-value store durable (one fsync per batch of applies).
    pub backend_sync_duration: Histogram,
    /// Round trip of an append/heartbeat round to each peer, measured on the leader.
    pub peer_round_trip: HistogramVec,
    /// Size of the database file.
    pub db_total_size: IntGauge,
    /// Highest index applied to the state machine.
    pub applied_index: IntGauge,
    /// Highest index known committed.
    pub committed_index: IntGauge,
    /// Current Raft term.
    pub term: IntGauge,
    /// Raft messages handed to the peer transport.
    pub peer_messages_sent: IntCounter,
    /// Raft messages dropped because the peer was unknown, unreachable or too slow.
    pub peer_messages_dropped: IntCounter,
    /// Snapshots this member installed from a leader.
    pub snapshots_installed: IntCounter,
    /// Log compactions this member performed.
    pub log_compactions: IntCounter,
    /// Open watch streams.
    pub watch_streams: IntGauge,
    /// Watchers on this member.
    pub watchers: IntGauge,
    /// Watchers catching up from the history (behind, or their stream was full).
    pub slow_watchers: IntGauge,
    /// Events sent to watchers.
    pub watch_events: IntCounter,
    /// Leases granted, revoked (by a client or on expiry), renewed by keep-alives (on the
    /// leader), and found expired by this member as leader.
    pub leases_granted: IntCounter,
    pub leases_revoked: IntCounter,
    pub leases_renewed: IntCounter,
    pub leases_expired: IntCounter,
}

/// Registering a metric failed: only possible through a programming error (duplicate name).
#[derive(Debug, thiserror::Error)]
#[error("metrics registration failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Buckets from 1 ms doubling to about 8 s, like etcd's disk histograms.
fn disk_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 14).unwrap_or_default()
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Result<Histogram, MetricsError> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(disk_buckets()))?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Creates the metrics of member `member_id` in a registry of their own.
    pub fn new(member_id: u64) -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(
            None,
            Some([("member_id".to_string(), format!("{member_id:x}"))].into_iter().collect()),
        )?;
        let r = &registry;
        let peer_round_trip = HistogramVec::new(
            HistogramOpts::new(
                "raftkv_network_peer_round_trip_time_seconds",
                "Round trip of append/heartbeat rounds to each peer.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()),
            &["to"],
        )?;
        registry.register(Box::new(peer_round_trip.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            has_leader: gauge(r, "raftkv_server_has_leader", "1 if a leader exists, 0 otherwise.")?,
            is_leader: gauge(r, "raftkv_server_is_leader", "1 if this member is the leader.")?,
            leader_changes: counter(r, "raftkv_server_leader_changes_seen_total", "Leader changes seen.")?,
            proposals_committed: counter(
                r,
                "raftkv_server_proposals_committed_total",
                "Consensus proposals committed.",
            )?,
            proposals_applied: counter(r, "raftkv_server_proposals_applied_total", "Entries applied.")?,
            proposals_pending: gauge(r, "raftkv_server_proposals_pending", "Proposals waiting to apply.")?,
            proposals_failed: counter(r, "raftkv_server_proposals_failed_total", "Failed proposals.")?,
            proposals_forwarded: counter(
                r,
                "raftkv_server_proposals_forwarded_total",
                "Proposals forwarded to the leader inside Raft.",
            )?,
            wal_fsync_duration: histogram(
                r,
                "raftkv_disk_wal_fsync_duration_seconds",
                "Latency of durable log writes (entries and hard state).",
            )?,
            backend_commit_duration: histogram(
                r,
                "raftkv_disk_backend_commit_duration_seconds",
                "Latency of applying committed entries to the key-value store.",
            )?,
            backend_sync_duration: histogram(
                r,
                "raftkv_disk_backend_sync_duration_seconds",
                "Latency of making the key-value store durable (one fsync per batch of applies).",
            )?,
            peer_round_trip,
            db_total_size: gauge(r, "raftkv_mvcc_db_total_size_in_bytes", "Size of the database file.")?,
            applied_index: gauge(r, "raftkv_server_applied_index", "Highest applied index.")?,
            committed_index: gauge(r, "raftkv_server_committed_index", "Highest committed index.")?,
            term: gauge(r, "raftkv_server_term", "Current Raft term.")?,
            peer_messages_sent: counter(r, "raftkv_network_peer_sent_messages_total", "Raft messages sent.")?,
            peer_messages_dropped: counter(
                r,
                "raftkv_network_peer_dropped_messages_total",
                "Raft messages dropped (peer unknown, unreachable or too slow).",
            )?,
            snapshots_installed: counter(
                r,
                "raftkv_server_snapshots_installed_total",
                "Snapshots installed.",
            )?,
            log_compactions: counter(r, "raftkv_server_log_compactions_total", "Log compactions done.")?,
            // etcd names these three gauges with a `_total` suffix, which Prometheus reserves for
            // counters (promtool refuses it): the suffix is dropped here.
            watch_streams: gauge(r, "raftkv_debugging_mvcc_watch_streams", "Open watch streams.")?,
            watchers: gauge(r, "raftkv_debugging_mvcc_watchers", "Watchers.")?,
            slow_watchers: gauge(
                r,
                "raftkv_debugging_mvcc_slow_watchers",
                "Watchers catching up from the history (unsynced).",
            )?,
            watch_events: counter(r, "raftkv_debugging_mvcc_events_total", "Events sent to watchers.")?,
            leases_granted: counter(r, "raftkv_debugging_lease_granted_total", "Leases granted.")?,
            leases_revoked: counter(r, "raftkv_debugging_lease_revoked_total", "Leases revoked.")?,
            leases_renewed: counter(
                r,
                "raftkv_debugging_lease_renewed_total",
                "Leases renewed by keep-alives.",
            )?,
            leases_expired: counter(
                r,
                "raftkv_debugging_server_lease_expired_total",
                "Leases this member, as leader, found expired.",
            )?,
            registry,
        })
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_etcd_like_names_with_member_label() {
        let m = Metrics::new(0xabc).expect("metrics");
        m.has_leader.set(1);
        m.proposals_committed.inc_by(3);
        let text = m.render();
        assert!(text.contains("raftkv_server_has_leader{member_id=\"abc\"} 1"), "{text}");
        assert!(text.contains("raftkv_server_proposals_committed_total{member_id=\"abc\"} 3"), "{text}");
    }

    #[test]
    fn two_members_in_one_process_do_not_collide() {
        let a = Metrics::new(1).expect("a");
        let b = Metrics::new(2).expect("b");
        a.is_leader.set(1);
        assert!(b.render().contains("raftkv_server_is_leader{member_id=\"2\"} 0"));
    }
}
