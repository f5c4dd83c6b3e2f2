//! The CRD: generated file in sync, schema shape, and the CEL rules evaluated as the apiserver
//! would (kube's client-side CEL evaluator).

mod fixtures;

use fixtures::example;
use kube::CustomResourceExt;
use kube::core::cel::Validator;
use kv_operator::crd::{KVCluster, crd_yaml};
use serde_json::{Value, json};

const CHECKED_IN: &str = include_str!("../../crds/kvcluster.yaml");

#[test]
fn checked_in_crd_matches_the_types() {
    let generated = crd_yaml().unwrap();
    assert!(
        generated == CHECKED_IN,
        "crds/kvcluster.yaml is stale: run `cargo run -p kv-operator -- crd > crds/kvcluster.yaml`"
    );
}

fn crd_json() -> Value {
    serde_json::to_value(KVCluster::crd()).unwrap()
}

fn schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn names_scope_and_subresources() {
    let crd = crd_json();
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "raftkv.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "KVCluster");
    assert_eq!(spec["names"]["plural"], "kvclusters");
    assert_eq!(spec["names"]["shortNames"], json!(["kvc"]));
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"
        })
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Replicas", "Ready", "Leader", "Version", "Age"]);
}

#[test]
fn replicas_range_and_storage_pattern_are_in_the_schema() {
    let spec = &schema()["properties"]["spec"];
    let replicas = &spec["properties"]["replicas"];
    assert_eq!(replicas["minimum"].as_f64(), Some(1.0));
    assert_eq!(replicas["maximum"].as_f64(), Some(9.0));
    let pattern = spec["properties"]["storage"]["properties"]["size"]["pattern"].as_str().unwrap();
    let required = spec["required"].as_array().unwrap();
    assert!(required.contains(&json!("replicas")) && required.contains(&json!("storage")));
    assert!(pattern.starts_with('^'), "{pattern}");
}

fn validate(obj: &KVCluster, old: Option<&KVCluster>) -> Result<(), String> {
    let object = serde_json::to_value(obj).unwrap();
    let old = old.map(|o| serde_json::to_value(o).unwrap());
    Validator::new().validate(&schema(), &object, old.as_ref()).map_err(|e| e.to_string())
}

#[test]
fn cel_accepts_the_example() {
    validate(&example(3), None).unwrap();
    validate(&example(5), Some(&example(3))).unwrap();
}

#[test]
fn cel_rejects_even_replicas() {
    let err = validate(&example(4), None).unwrap_err();
    assert!(err.contains("replicas must be odd"), "{err}");
}

#[test]
fn cel_requires_version_or_image() {
    let mut kvc = example(3);
    kvc.spec.version = None;
    let err = validate(&kvc, None).unwrap_err();
    assert!(err.contains("one of spec.version or spec.image"), "{err}");
    kvc.spec.image = Some("registry.local/kvnode:dev".into());
    validate(&kvc, None).unwrap();
}

#[test]
fn cel_storage_grows_but_never_shrinks_and_class_is_immutable() {
    let old = example(3);
    let mut bigger = old.clone();
    bigger.spec.storage.size = "2Gi".into();
    validate(&bigger, Some(&old)).unwrap();
    let mut smaller = old.clone();
    smaller.spec.storage.size = "512Mi".into();
    let err = validate(&smaller, Some(&old)).unwrap_err();
    assert!(err.contains("cannot shrink"), "{err}");
    let mut other_class = old.clone();
    other_class.spec.storage.storage_class_name = Some("slow".into());
    let err = validate(&other_class, Some(&old)).unwrap_err();
    assert!(err.contains("immutable"), "{err}");
}

#[test]
fn cel_rejects_a_size_that_is_not_a_positive_quantity() {
    let mut kvc = example(3);
    kvc.spec.storage.size = "lots".into();
    assert!(validate(&kvc, None).is_err());
    kvc.spec.storage.size = "0".into();
    assert!(validate(&kvc, None).is_err());
}
