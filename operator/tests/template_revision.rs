//! Upgrading the operator must not restart managed clusters: the pod template is a pure
//! function of the KVCluster, and its revision for a fixed example is pinned here. If this test
//! fails, a change to the operator altered the pod template of *every existing cluster*, which
//! would roll all of them after an operator upgrade. If that is intended, update the golden file
//! (`KV_OPERATOR_BLESS=1 cargo test -p kv-operator --test template_revision`) and say so in the
//! release notes.

mod fixtures;

use fixtures::example;
use kv_operator::resources::statefulset::{pod_template, statefulset, template_revision};
use sha2::{Digest, Sha256};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/pod-template.sha256");

fn digest() -> String {
    let json = serde_json::to_vec(&pod_template(&example(3))).unwrap();
    let hash = Sha256::digest(&json);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}  revision={}\n", template_revision(&example(3)))
}

#[test]
fn pod_template_of_the_example_is_pinned() {
    let now = digest();
    if std::env::var_os("KV_OPERATOR_BLESS").is_some() {
        std::fs::write(GOLDEN, &now).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap_or_default();
    assert_eq!(now, golden, "the pod template changed: every managed cluster would restart (see file docs)");
}

#[test]
fn template_depends_on_the_spec_only() {
    // Same spec, different object state (status, replicas in the StatefulSet, resourceVersion,
    // labels added by users): same template.
    let a = example(3);
    let mut b = example(3);
    b.metadata.resource_version = Some("999".into());
    b.metadata.labels = Some([("team".to_string(), "x".to_string())].into());
    b.status = Some(Default::default());
    assert_eq!(pod_template(&a), pod_template(&b));
    assert_eq!(statefulset(&a, 3, None).spec.template, statefulset(&b, 7, None).spec.template);
}
