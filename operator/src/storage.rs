//! Volume expansion: growing the members' claims when `spec.storage.size` grows.
//!
//! A StatefulSet's `volumeClaimTemplates` are immutable, and re-creating the StatefulSet to change
//! them would restart every member at once. So the template keeps the size the cluster was
//! created with, and the operator patches each member's claim (`spec.resources.requests.storage`)
//! instead; the storage driver then grows the volume online. The CRD forbids shrinking, so a claim
//! is only ever grown. A claim added later by a scale-up starts at the template's size and is
//! grown by the next reconcile like the others.

use std::cmp::Ordering;

use serde_json::{Value, json};

use crate::crd::KVCluster;
use crate::quantity::compare;
use crate::state::{ObservedClaim, ObservedState};

/// One claim to grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimResize {
    pub ordinal: i32,
    /// Its current request, when it has one.
    pub from: Option<String>,
    pub to: String,
}

/// What the storage of a cluster needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoragePlan {
    /// Claims whose request is below `spec.storage.size`.
    pub resize: Vec<ClaimResize>,
    /// Ordinals whose volume is not yet as large as asked (requested or reported capacity below
    /// the spec), including those in `resize`.
    pub pending: Vec<i32>,
    /// The spec or a claim holds a size this operator cannot read; nothing is patched.
    pub invalid: Option<String>,
}

fn below(size: Option<&str>, want: &str) -> Result<bool, String> {
    match size {
        None => Ok(false),
        Some(size) => Ok(compare(size, want).map_err(|e| e.to_string())? == Ordering::Less),
    }
}

/// Which claims of the StatefulSet's members must grow to `spec.storage.size`.
///
/// Claims above the StatefulSet's replicas belong to removed members (kept by the `Retain`
/// policy) and are deleted before their ordinal is reused, so they are left alone. A claim with no
/// request yet (still being created) is left for a later reconcile.
pub fn plan(kvc: &KVCluster, obs: &ObservedState) -> StoragePlan {
    let want = kvc.spec.storage.size.as_str();
    let replicas = obs.statefulset.as_ref().map_or(0, |s| s.replicas);
    let mut plan = StoragePlan::default();
    for (ordinal, claim) in obs.pvcs.iter().filter(|(o, _)| **o < replicas) {
        let ObservedClaim { requested, capacity } = claim;
        let (grow, small) = match (below(requested.as_deref(), want), below(capacity.as_deref(), want)) {
            (Ok(grow), Ok(small)) => (grow, small),
            (Err(e), _) | (_, Err(e)) => {
                return StoragePlan { invalid: Some(e), ..StoragePlan::default() };
            }
        };
        if grow {
            plan.resize.push(ClaimResize {
                ordinal: *ordinal,
                from: requested.clone(),
                to: want.to_string(),
            });
        }
        if grow || small {
            plan.pending.push(*ordinal);
        }
    }
    plan
}

/// The merge patch that asks for `size` on a claim (only the request; the driver does the rest).
pub fn claim_patch(size: &str) -> Value {
    json!({ "spec": { "resources": { "requests": { "storage": size } } } })
}

/// The outcome of this reconcile's expansion, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageReport {
    /// Target size (`spec.storage.size`).
    pub size: String,
    /// Claims not yet at the target size.
    pub pending: Vec<String>,
    /// Claims whose expansion the API server refused, with its reason.
    pub refused: Vec<String>,
    /// Sizes this operator could not read.
    pub invalid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::example;
    use crate::state::ObservedStatefulSet;
    use jiff::Timestamp;
    use std::collections::BTreeMap;

    fn claim(requested: &str, capacity: Option<&str>) -> ObservedClaim {
        ObservedClaim { requested: Some(requested.to_string()), capacity: capacity.map(str::to_string) }
    }

    fn observed(replicas: i32, claims: &[(i32, ObservedClaim)]) -> ObservedState {
        ObservedState {
            now: Timestamp::UNIX_EPOCH,
            statefulset: Some(ObservedStatefulSet { replicas, up_to_date: true }),
            pods: BTreeMap::new(),
            pvcs: claims.iter().cloned().collect(),
            membership: None,
        }
    }

    #[test]
    fn nothing_to_do_when_claims_are_at_size_however_spelled() {
        let kvc = example(3);
        let obs = observed(
            3,
            &[
                (0, claim("1Gi", Some("1Gi"))),
                (1, claim("1024Mi", None)),
                (2, claim("1073741824", Some("2Gi"))),
            ],
        );
        assert_eq!(plan(&kvc, &obs), StoragePlan::default());
    }

    #[test]
    fn a_larger_spec_grows_every_member_claim_but_not_retained_ones() {
        let mut kvc = example(3);
        kvc.spec.storage.size = "2Gi".into();
        let obs = observed(
            3,
            &[
                (0, claim("1Gi", Some("1Gi"))),
                (1, claim("1Gi", Some("1Gi"))),
                (2, claim("1Gi", None)),
                (4, claim("1Gi", None)),
            ],
        );
        let p = plan(&kvc, &obs);
        let resized: Vec<i32> = p.resize.iter().map(|r| r.ordinal).collect();
        assert_eq!(resized, vec![0, 1, 2], "claim 4 belongs to a removed member");
        assert_eq!(p.resize[0], ClaimResize { ordinal: 0, from: Some("1Gi".into()), to: "2Gi".into() });
        assert_eq!(p.pending, vec![0, 1, 2]);
        assert_eq!(p.invalid, None);
    }

    #[test]
    fn a_patched_claim_is_pending_until_its_capacity_follows() {
        let mut kvc = example(3);
        kvc.spec.storage.size = "2Gi".into();
        let obs = observed(
            3,
            &[(0, claim("2Gi", Some("1Gi"))), (1, claim("2Gi", Some("2Gi"))), (2, claim("2Gi", None))],
        );
        let p = plan(&kvc, &obs);
        assert!(p.resize.is_empty(), "requests already match: never patched twice");
        assert_eq!(p.pending, vec![0]);
    }

    #[test]
    fn a_claim_larger_than_the_spec_is_never_shrunk() {
        let kvc = example(3);
        let obs = observed(3, &[(0, claim("5Gi", Some("5Gi")))]);
        assert_eq!(plan(&kvc, &obs), StoragePlan::default());
    }

    #[test]
    fn an_unreadable_size_patches_nothing() {
        let mut kvc = example(3);
        kvc.spec.storage.size = "2Gi".into();
        let obs = observed(3, &[(0, claim("1Gi", None)), (1, claim("lots", None))]);
        let p = plan(&kvc, &obs);
        assert!(p.resize.is_empty());
        assert!(p.invalid.as_deref().is_some_and(|e| e.contains("lots")), "{p:?}");
    }

    #[test]
    fn no_statefulset_no_expansion() {
        let mut kvc = example(3);
        kvc.spec.storage.size = "2Gi".into();
        let mut obs = observed(3, &[(0, claim("1Gi", None))]);
        obs.statefulset = None;
        assert_eq!(plan(&kvc, &obs), StoragePlan::default());
    }

    #[test]
    fn the_patch_sets_only_the_storage_request() {
        assert_eq!(claim_patch("3Gi"), json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}}));
    }
}
