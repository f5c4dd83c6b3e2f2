//! The PodDisruptionBudget that keeps quorum through voluntary disruptions (drains).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, owned_meta};
use crate::crd::KVCluster;

/// How many members may be disrupted at once without losing quorum.
///
/// `voters` is the size of the Raft group: the smaller of `spec.replicas` and the number of
/// voting members, never a count of pods (a pod that is briefly gone does not change the group).
/// Using `maxUnavailable` rather than `minAvailable` means the budget follows the StatefulSet's
/// size, so after a scale-down it never demands more pods than exist and never blocks a drain
/// forever. A single member has no quorum to protect; it gets a budget of one so that drains
/// proceed (the alternative, zero, would block every node drain indefinitely). A group of two
/// exists only for a moment during a scale between one and three members; it gets zero.
pub fn max_unavailable(voters: i32) -> i32 {
    if voters <= 1 { 1 } else { (voters - 1) / 2 }
}

/// The budget; `voters` as in [`max_unavailable`].
pub fn pod_disruption_budget(kvc: &KVCluster, voters: i32) -> PodDisruptionBudget {
    let names = names(kvc);
    PodDisruptionBudget {
        metadata: owned_meta(kvc, names.pdb()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable(voters))),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            }),
            // A pod that is not ready is not counted as protected: evicting it is always
            // allowed, so a crash-looping member never pins a node.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::example;

    #[test]
    fn budget_keeps_a_majority() {
        assert_eq!(max_unavailable(1), 1);
        assert_eq!(max_unavailable(2), 0);
        assert_eq!(max_unavailable(3), 1);
        assert_eq!(max_unavailable(4), 1);
        assert_eq!(max_unavailable(5), 2);
        assert_eq!(max_unavailable(7), 3);
        assert_eq!(max_unavailable(9), 4);
        for voters in 2..=9 {
            let quorum = voters / 2 + 1;
            assert!(voters - max_unavailable(voters) >= quorum, "voters={voters}");
        }
    }

    #[test]
    fn budget_uses_max_unavailable_and_always_allows_unhealthy_eviction() {
        let spec = pod_disruption_budget(&example(5), 5).spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(2)));
        assert_eq!(spec.min_available, None, "minAvailable would block drains after a scale-down");
        assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
    }
}
