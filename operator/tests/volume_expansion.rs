//! Growing `spec.storage.size`: the operator patches each member's claim, leaves the
//! StatefulSet (whose claim template is immutable) and the pods alone, and reports progress in
//! the `StorageSynced` condition and in Events.

mod fixtures;
mod support;

use fixtures::example;
use http::Method;
use serde_json::Value;
use support::{PODS, PVCS, STS, World};

async fn created(replicas: i32) -> World {
    let mut world = World::new(&example(replicas));
    world.converge(30).await;
    world
}

fn requested(claim: &Value) -> &str {
    claim["spec"]["resources"]["requests"]["storage"].as_str().unwrap_or_default()
}

fn claim_patches(world: &World) -> Vec<(String, Value)> {
    world
        .api
        .log()
        .into_iter()
        .filter(|l| l.method == Method::PATCH && l.path.starts_with(PVCS))
        .map(|l| (l.path.split('?').next().unwrap().rsplit('/').next().unwrap().to_string(), l.body))
        .collect()
}

fn count(reasons: &[String], reason: &str) -> usize {
    reasons.iter().filter(|r| *r == reason).count()
}

#[tokio::test]
async fn a_larger_size_grows_every_member_claim_in_place() {
    let mut world = created(3).await;
    assert_eq!(world.condition("StorageSynced"), ("True".into(), "AtRequestedSize".into()));
    assert!(claim_patches(&world).is_empty(), "nothing to grow at creation");
    let sts_before = world.api.get(STS).unwrap();
    let revisions = world.pod_revisions();

    world.frozen_volumes = true;
    world.edit(|k| k.spec.storage.size = "2Gi".into());
    world.reconcile().await;

    let patches = claim_patches(&world);
    let claims: Vec<&str> = patches.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(claims, ["data-kv-0", "data-kv-1", "data-kv-2"]);
    for (_, body) in &patches {
        assert_eq!(body, &serde_json::json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}));
    }
    for o in 0..3 {
        assert_eq!(requested(&world.pvc(o).unwrap()), "2Gi");
    }
    // The volumes have not grown yet: reported as in progress, with the claims named.
    let (status, reason) = world.condition("StorageSynced");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Expanding"));
    let message =
        world.status().conditions.iter().find(|c| c.type_ == "StorageSynced").unwrap().message.clone();
    assert!(message.contains("data-kv-0") && message.contains("2Gi"), "{message}");
    assert_eq!(count(&world.event_reasons(), "StorageExpanded"), 3);

    // Requests already match: later reconciles never patch again while the driver works.
    world.reconcile().await;
    assert_eq!(claim_patches(&world).len(), 3);
    assert_eq!(world.condition("StorageSynced").1, "Expanding");
    world.frozen_volumes = false;
    world.reconcile().await;
    world.reconcile().await;
    assert_eq!(world.condition("StorageSynced"), ("True".into(), "AtRequestedSize".into()));
    assert_eq!(claim_patches(&world).len(), 3);

    // The StatefulSet was neither deleted nor given a new claim template; no pod restarted.
    let sts_after = world.api.get(STS).unwrap();
    assert_eq!(sts_after["metadata"]["uid"], sts_before["metadata"]["uid"]);
    assert_eq!(sts_after["spec"]["volumeClaimTemplates"], sts_before["spec"]["volumeClaimTemplates"]);
    assert_eq!(requested(&sts_after["spec"]["volumeClaimTemplates"][0]), "1Gi");
    let deletes = world.api.log().into_iter().filter(|l| l.method == Method::DELETE).count();
    assert_eq!(deletes, 0, "nothing deleted");
    assert_eq!(world.pod_revisions(), revisions);
    assert!(world.settled());
    assert!(!world.api.log().iter().any(|l| l.path.starts_with(PODS) && l.method == Method::DELETE));
}

#[tokio::test]
async fn claims_of_members_added_later_are_grown_too() {
    let mut world = created(3).await;
    world.edit(|k| k.spec.storage.size = "2Gi".into());
    world.reconcile().await;
    world.edit(|k| k.spec.replicas = 5);
    world.converge(60).await;
    world.reconcile().await;
    // The new members' claims came from the template (1Gi) and were then grown.
    for o in 0..5 {
        assert_eq!(requested(&world.pvc(o).unwrap()), "2Gi", "claim {o}");
    }
    assert_eq!(count(&world.event_reasons(), "StorageExpanded"), 5);
    assert_eq!(world.condition("StorageSynced").0, "True");
}

#[tokio::test]
async fn a_refused_expansion_is_reported_and_does_not_stop_reconciling() {
    let mut world = created(3).await;
    let message = "persistentvolumeclaims \"data-kv-0\" is forbidden: only dynamically provisioned pvc can be \
                   resized and the storageclass that provisions the pvc must support resize";
    world.api.refuse(Method::PATCH, PVCS, 403, message);
    world.edit(|k| k.spec.storage.size = "2Gi".into());
    world.reconcile().await;

    assert_eq!(world.condition("StorageSynced"), ("False".into(), "ExpansionRefused".into()));
    let status = world.status();
    let cond = status.conditions.iter().find(|c| c.type_ == "StorageSynced").unwrap();
    assert!(cond.message.contains("must support resize"), "{}", cond.message);
    assert_eq!(count(&world.event_reasons(), "StorageExpansionRefused"), 3);
    assert!(world.api.log().iter().any(|l| l.path.contains("/events") && l.body["type"] == "Warning"));
    // Membership work is unaffected: the cluster stays Ready and a scale-up still proceeds.
    assert_eq!(world.condition("Ready").0, "True");
    world.edit(|k| k.spec.replicas = 5);
    world.converge(60).await;
    assert_eq!(world.status().members.len(), 5);
    assert_eq!(requested(&world.pvc(0).unwrap()), "1Gi");
}
