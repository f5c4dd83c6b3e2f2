//! The `KVCluster` custom resource (`raftkv.dev/v1alpha1`).
//!
//! The Rust types are the single source of truth: `crds/kvcluster.yaml` is generated from them by
//! `kv-operator crd`, and a test fails when the checked-in file drifts. Validation that the
//! apiserver can do is expressed in the schema (ranges, patterns) or as CEL rules
//! (`x-kubernetes-validations`) when a rule spans several fields or compares old and new values,
//! so a bad spec is refused at `kubectl apply` time rather than discovered by the reconciler.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Image repository used when `spec.image` is empty: `<repo>:<spec.version>`.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/raftkv/kvnode";

/// Desired state of a raftkv cluster.
// Several `printcolumn(...)` share `type_` values, which clippy mistakes for repeated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "raftkv.dev",
    version = "v1alpha1",
    kind = "KVCluster",
    plural = "kvclusters",
    namespaced,
    shortname = "kvc",
    category = "raftkv",
    doc = "A Raft-replicated key-value cluster (raftkv) managed by kv-operator.",
    status = "KVClusterStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("(has(self.version) && self.version != '') || (has(self.image) && self.image != '')").message("one of spec.version or spec.image must be set"))]
#[serde(rename_all = "camelCase")]
pub struct KVClusterSpec {
    /// Number of voting members. Odd, so that a majority survives `(replicas-1)/2` failures.
    #[schemars(range(min = 1, max = 9))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("replicas must be odd"))]
    pub replicas: i32,

    /// kvnode version to run; the image is `ghcr.io/raftkv/kvnode:<version>` unless `image` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Full image reference; overrides the image derived from `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// The persistent volume of each member.
    pub storage: StorageSpec,

    /// CPU and memory requests and limits of the kvnode container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where members may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,

    /// TLS for client and peer traffic, from Secrets in the cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// What happens to a member's PersistentVolumeClaim when the member is removed.
    #[serde(default)]
    pub pvc_retention_policy: PvcRetentionPolicy,
}

/// The persistent volume claimed by every member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0").message("storage.size cannot shrink"))]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storage.storageClassName is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, a Kubernetes quantity such as `1Gi`.
    #[schemars(regex(
        pattern = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
    ))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("storage.size must be a positive quantity"))]
    pub size: String,

    /// StorageClass of the claims; the cluster default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Scheduling knobs copied into the pod template.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a member's node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints members tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Replaces the default (preferred anti-affinity: one member per node when possible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// Secrets holding `tls.crt`, `tls.key` and `ca.crt` (the `kubernetes.io/tls` layout plus CA).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret for the client port (2379); clients then connect with `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_name: Option<String>,
    /// Require client certificates signed by the client secret's `ca.crt`.
    #[serde(default)]
    pub client_cert_auth: bool,
    /// Secret for the peer port (2380); members then talk `https://` to each other and require
    /// certificates signed by its `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret_name: Option<String>,
}

/// What to do with a claim whose member is gone.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PvcPolicy {
    /// Keep the claim (and its data) until the ordinal is reused; a reused ordinal never sees
    /// that data: the operator deletes the stale claim before the member is added again.
    #[default]
    Retain,
    /// Delete the claim once the member has left the cluster.
    Delete,
}

/// Claim policies for scale-down and for deletion of the whole KVCluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// Applied to the claim of a member removed by a scale-down.
    #[serde(default)]
    pub when_scaled: PvcPolicy,
    /// Applied to every claim of the cluster when the KVCluster is deleted.
    #[serde(default)]
    pub when_deleted: PvcPolicy,
}

/// Role of a member in the Raft group.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
}

/// One member as seen through the cluster's own member list.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberSummary {
    /// Pod (and member) name, `NAME-<ordinal>`.
    pub name: String,
    /// Raft member id in hexadecimal, as `etcdctl member list` prints it.
    pub id: String,
    pub role: MemberRole,
    /// Answered a status request with a known leader and no errors.
    pub healthy: bool,
}

/// Kind of the one membership or rollout operation a cluster may have in progress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// Add member `ordinal` as a learner, start its pod, promote it when caught up.
    ScaleUp,
    /// Move leadership off member `ordinal`, remove it, stop its pod, apply the claim policy.
    ScaleDown,
    /// Restart outdated pods one at a time onto `targetRevision`.
    Rollout,
}

/// The in-progress operation, kept in status so that a restarted operator resumes it instead of
/// starting another one (one change at a time per cluster).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    /// Member ordinal being added or removed (scale operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<i32>,
    /// Pod template revision being rolled out (rollouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// Version being rolled out (rollouts), reported as currentVersion once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// Pod restarted by the last rollout step, whose recovery is awaited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Human-readable last step taken.
    pub step: String,
    /// When the operation started.
    pub started_at: Time,
    /// When the last step was taken; deadlines count from here.
    pub step_started_at: Time,
    /// Set when the operation gave up (for example a new version that never becomes healthy):
    /// nothing more is attempted until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// `metadata.generation` when the operation started; a failed operation is dropped once the
    /// spec changes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Observed state of a raftkv cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KVClusterStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of members in the Raft group (learners included).
    #[serde(default)]
    pub replicas: i32,
    /// Members that are healthy.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the member pods (for the scale subresource).
    #[serde(default)]
    pub selector: String,
    /// The member list.
    #[serde(default)]
    pub members: Vec<MemberSummary>,
    /// Name of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Version every member runs, once a rollout has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Pod template revision every member runs, once a rollout has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// `Ready`, `Progressing`, `Degraded` and `StorageSynced` (claims at `spec.storage.size`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The membership change or rollout in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

impl KVClusterSpec {
    /// The container image members run.
    pub fn image(&self) -> String {
        match (&self.image, &self.version) {
            (Some(image), _) if !image.is_empty() => image.clone(),
            (_, Some(version)) => format!("{DEFAULT_IMAGE_REPOSITORY}:{version}"),
            _ => format!("{DEFAULT_IMAGE_REPOSITORY}:latest"),
        }
    }

    /// The version reported in status: `spec.version`, or the image reference when only
    /// an image is given.
    pub fn version_label(&self) -> String {
        match &self.version {
            Some(v) if !v.is_empty() => v.clone(),
            _ => self.image(),
        }
    }
}

/// The CustomResourceDefinition as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(&KVCluster::crd())?;
    Ok(format!("# Generated by `kv-operator crd` from operator/src/crd.rs. Do not edit.\n---\n{body}"))
}
