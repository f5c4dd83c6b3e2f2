//! The KVCluster's status: members, leader, versions and the `Ready`, `Progressing` and
//! `Degraded` conditions, computed from what was observed and what the planner decided.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{KVCluster, KVClusterStatus, MemberRole, MemberSummary, OperationKind};
use crate::membership::format_id;
use crate::plan::{Action, Decision};
use crate::resources::names;
use crate::resources::statefulset::template_revision;
use crate::state::ObservedState;
use crate::storage::StorageReport;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// Whether every member's volume has the size `spec.storage.size` asks for.
pub const STORAGE_SYNCED: &str = "StorageSynced";

/// A condition whose `lastTransitionTime` only moves when its status flips.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// Reason of `Progressing` for an operation kind.
fn progressing_reason(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::ScaleUp => "ScalingUp",
        OperationKind::ScaleDown => "ScalingDown",
        OperationKind::Rollout => "RollingOut",
    }
}

/// `StorageSynced`: true once every member claim requests and holds `spec.storage.size`.
fn storage_condition(
    previous: &[Condition],
    storage: &StorageReport,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let (status, reason, message) = if let Some(invalid) = &storage.invalid {
        (false, "InvalidSize", invalid.clone())
    } else if !storage.refused.is_empty() {
        (false, "ExpansionRefused", storage.refused.join("; "))
    } else if !storage.pending.is_empty() {
        (false, "Expanding", format!("growing {} to {}", storage.pending.join(", "), storage.size))
    } else {
        (true, "AtRequestedSize", format!("every member claim has {}", storage.size))
    };
    condition(previous, STORAGE_SYNCED, status, reason, message, generation, now)
}

/// The status after `decision` was carried out (and the claims' expansion, `storage`).
pub fn build_status(
    kvc: &KVCluster,
    obs: &ObservedState,
    decision: &Decision,
    storage: &StorageReport,
) -> KVClusterStatus {
    let names = names(kvc);
    let previous = kvc.status.clone().unwrap_or_default();
    let generation = kvc.metadata.generation;
    let now = obs.now;

    let (members, leader) = match &obs.membership {
        Some(m) => {
            let members: Vec<MemberSummary> = m
                .members
                .iter()
                .map(|x| MemberSummary {
                    name: x.ordinal.map_or_else(|| format_id(x.id), |o| names.member(o)),
                    id: format_id(x.id),
                    role: if x.is_learner {
                        MemberRole::Learner
                    } else if m.leader == Some(x.id) {
                        MemberRole::Leader
                    } else {
                        MemberRole::Follower
                    },
                    healthy: x.healthy(),
                })
                .collect();
            let leader = m.leader_ordinal().map(|o| names.member(o));
            (members, leader)
        }
        // Unreachable: keep the last known list, but nobody is known healthy or leading.
        None => {
            (previous.members.iter().cloned().map(|m| MemberSummary { healthy: false, ..m }).collect(), None)
        }
    };
    let healthy = i32::try_from(members.iter().filter(|m| m.healthy).count()).unwrap_or(i32::MAX);
    let count = i32::try_from(members.len()).unwrap_or(i32::MAX);

    // A rollout completes only towards the desired revision (the planner drops stale ones).
    let (mut current_version, mut current_revision) = (previous.current_version, previous.current_revision);
    if matches!(decision.action, Action::Complete(OperationKind::Rollout)) {
        current_version = Some(kvc.spec.version_label());
        current_revision = Some(template_revision(kvc));
    }

    let failed = decision.operation.as_ref().and_then(|o| o.failed.clone());
    let in_progress = decision.operation.as_ref().filter(|o| o.failed.is_none());
    let all_healthy = count > 0 && healthy == count && members.iter().all(|m| m.role != MemberRole::Learner);
    let ready = all_healthy && count == kvc.spec.replicas && in_progress.is_none() && failed.is_none();

    let unreachable = obs.membership.is_none() && obs.statefulset.is_some();
    let ready_cond = if ready {
        condition(
            &previous.conditions,
            READY,
            true,
            "AllMembersHealthy",
            format!("{count} of {count} members healthy"),
            generation,
            now,
        )
    } else {
        let reason = if unreachable {
            "Unreachable"
        } else if in_progress.is_some() {
            "OperationInProgress"
        } else {
            "MembersUnhealthy"
        };
        condition(
            &previous.conditions,
            READY,
            false,
            reason,
            format!("{healthy} of {} members healthy", kvc.spec.replicas),
            generation,
            now,
        )
    };
    let progressing_cond = match (in_progress, &decision.action) {
        (Some(op), _) => condition(
            &previous.conditions,
            PROGRESSING,
            true,
            progressing_reason(op.kind),
            op.step.clone(),
            generation,
            now,
        ),
        (None, Action::Create) => condition(
            &previous.conditions,
            PROGRESSING,
            true,
            "Creating",
            "creating members".into(),
            generation,
            now,
        ),
        (None, Action::Wait(why)) if previous.members.is_empty() => {
            condition(&previous.conditions, PROGRESSING, true, "Bootstrapping", why.clone(), generation, now)
        }
        (None, Action::Complete(kind)) => condition(
            &previous.conditions,
            PROGRESSING,
            false,
            "Complete",
            format!("{} complete", progressing_reason(*kind)),
            generation,
            now,
        ),
        _ => condition(
            &previous.conditions,
            PROGRESSING,
            false,
            "Idle",
            "nothing to do".into(),
            generation,
            now,
        ),
    };
    let degraded_cond = if let Some(reason) = failed {
        let why = match decision.operation.as_ref().map(|o| o.kind) {
            Some(OperationKind::Rollout) => "RolloutFailed",
            Some(OperationKind::ScaleUp) => "ScaleUpFailed",
            _ => "ScaleDownFailed",
        };
        condition(&previous.conditions, DEGRADED, true, why, reason, generation, now)
    } else if unreachable && !previous.members.is_empty() {
        condition(
            &previous.conditions,
            DEGRADED,
            true,
            "Unreachable",
            "no member answers".into(),
            generation,
            now,
        )
    } else if count > 0 && healthy < count {
        let sick: Vec<&str> = members.iter().filter(|m| !m.healthy).map(|m| m.name.as_str()).collect();
        condition(
            &previous.conditions,
            DEGRADED,
            true,
            "MemberUnhealthy",
            format!("unhealthy: {}", sick.join(", ")),
            generation,
            now,
        )
    } else {
        condition(&previous.conditions, DEGRADED, false, "AsExpected", String::new(), generation, now)
    };

    KVClusterStatus {
        observed_generation: generation,
        replicas: count,
        ready_replicas: healthy,
        selector: names.selector_string(),
        members,
        leader,
        current_version,
        current_revision,
        conditions: vec![
            ready_cond,
            progressing_cond,
            degraded_cond,
            storage_condition(&previous.conditions, storage, generation, now),
        ],
        operation: decision.operation.clone(),
    }
}

/// A JSON merge patch (RFC 7386) turning `old` into `new`: keys that disappeared, at any
/// depth, are sent as `null`, because a merge patch keeps whatever it does not mention (an
/// omitted `operation.failed` would otherwise survive the end of the operation).
pub fn merge_diff(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                let pv = match o.get(k) {
                    Some(ov) if ov == nv => continue,
                    Some(ov) => merge_diff(ov, nv),
                    None => nv.clone(),
                };
                patch.insert(k.clone(), pv);
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// The merge patch of the status subresource from `old` to `new`.
pub fn status_patch(old: Option<&KVClusterStatus>, new: &KVClusterStatus) -> serde_json::Value {
    let old = old.map_or(serde_json::Value::Null, |s| serde_json::to_value(s).unwrap_or_default());
    let new = serde_json::to_value(new).unwrap_or_default();
    serde_json::json!({ "status": merge_diff(&old, &new) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_diff_nulls_vanished_keys_at_any_depth() {
        let old = json!({"a": 1, "op": {"kind": "Rollout", "failed": "x"}, "gone": true, "same": [1]});
        let new = json!({"a": 2, "op": {"kind": "Rollout"}, "same": [1]});
        assert_eq!(merge_diff(&old, &new), json!({"a": 2, "op": {"failed": null}, "gone": null}));
        assert_eq!(merge_diff(&json!(null), &json!({"a": 1})), json!({"a": 1}));
    }
}
