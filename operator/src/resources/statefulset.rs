//! The members' StatefulSet and its pod template.
//!
//! The pod template is a pure function of the KVCluster's name, namespace and spec: no operator
//! version, build time or flag of the operator appears in it. Upgrading the operator therefore
//! never changes the template, never changes [`template_revision`], and never restarts a managed
//! cluster; only a change of the KVCluster's spec does (a test pins the revision of an example).
//!
//! Per-pod values come from the pod itself: `KVNODE_NAME` from `metadata.name` (downward API),
//! and URLs built as `$(KVNODE_NAME).NAME-peer.NS.svc` by Kubernetes' `$(VAR)` expansion in
//! arguments. The startup membership comes from the ConfigMap (see [`super::config_map`]).
//!
//! Updates use `OnDelete`: the StatefulSet controller never restarts a member by itself; the
//! operator deletes pods one at a time when the Raft group can afford it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_map::{KEY_INITIAL_CLUSTER, KEY_INITIAL_CLUSTER_STATE, KEY_INITIAL_CLUSTER_TOKEN};
use super::{fnv1a, names, owned_meta};
use crate::crd::KVCluster;
use crate::names::{
    CLIENT_PORT, DATA_VOLUME, METRICS_PORT, PEER_PORT, REVISION_ANNOTATION, VERSION_ANNOTATION,
};

/// Where the data volume is mounted; the data directory is a subdirectory so that a
/// filesystem's `lost+found` never sits in it.
pub const DATA_MOUNT: &str = "/var/lib/kvnode";
pub const DATA_DIR: &str = "/var/lib/kvnode/data";
pub const CLIENT_TLS_DIR: &str = "/etc/kvnode/tls/client";
pub const PEER_TLS_DIR: &str = "/etc/kvnode/tls/peer";
/// Unprivileged uid/gid of the kvnode process (and owner group of the volume).
pub const RUN_AS: i64 = 65532;
pub const CONTAINER: &str = "kvnode";

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env_config(name: &str, config_map: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: config_map.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("metrics".to_string()),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The kvnode command line: `command` then `args`. Values that differ per pod are
/// `$(KVNODE_NAME)` references that Kubernetes expands from the container's environment.
pub fn command_line(kvc: &KVCluster) -> (Vec<String>, Vec<String>) {
    let names = names(kvc);
    let tls = kvc.spec.tls.clone().unwrap_or_default();
    let client_scheme = if tls.client_secret_name.is_some() { "https" } else { "http" };
    let peer_scheme = if tls.peer_secret_name.is_some() { "https" } else { "http" };
    let host = format!("$(KVNODE_NAME).{}", names.peer_domain());
    let mut args = vec![
        format!("--data-dir={DATA_DIR}"),
        format!("--listen-client-urls={client_scheme}://0.0.0.0:{CLIENT_PORT}"),
        format!("--advertise-client-urls={client_scheme}://{host}:{CLIENT_PORT}"),
        format!("--listen-peer-urls={peer_scheme}://0.0.0.0:{PEER_PORT}"),
        format!("--initial-advertise-peer-urls={peer_scheme}://{host}:{PEER_PORT}"),
        format!("--listen-metrics-urls=http://0.0.0.0:{METRICS_PORT}"),
        "--log-format=json".to_string(),
    ];
    if tls.client_secret_name.is_some() {
        args.push(format!("--cert-file={CLIENT_TLS_DIR}/tls.crt"));
        args.push(format!("--key-file={CLIENT_TLS_DIR}/tls.key"));
        // As in etcd, kvnode requires client certificates as soon as a trusted CA is given, so
        // the CA is passed only when client certificate authentication is asked for.
        if tls.client_cert_auth {
            args.push(format!("--trusted-ca-file={CLIENT_TLS_DIR}/ca.crt"));
            args.push("--client-cert-auth".to_string());
        }
    }
    if tls.peer_secret_name.is_some() {
        args.push(format!("--peer-cert-file={PEER_TLS_DIR}/tls.crt"));
        args.push(format!("--peer-key-file={PEER_TLS_DIR}/tls.key"));
        args.push(format!("--peer-trusted-ca-file={PEER_TLS_DIR}/ca.crt"));
        args.push("--peer-client-cert-auth".to_string());
    }
    (vec!["kvnode".to_string()], args)
}

/// Environment of the kvnode container; `KVNODE_NAME` must come first so that later `$(...)`
/// references to it expand.
pub fn environment(kvc: &KVCluster) -> Vec<EnvVar> {
    let cm = names(kvc).config_map();
    vec![
        env_field("KVNODE_NAME", "metadata.name"),
        env_config("KVNODE_INITIAL_CLUSTER", &cm, KEY_INITIAL_CLUSTER),
        env_config("KVNODE_INITIAL_CLUSTER_STATE", &cm, KEY_INITIAL_CLUSTER_STATE),
        env_config("KVNODE_INITIAL_CLUSTER_TOKEN", &cm, KEY_INITIAL_CLUSTER_TOKEN),
    ]
}

/// Spread members over nodes when possible, without making pods unschedulable on small clusters.
fn default_affinity(labels: &BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".to_string(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(labels.clone()),
                        ..LabelSelector::default()
                    }),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn container(kvc: &KVCluster) -> Container {
    let tls = kvc.spec.tls.clone().unwrap_or_default();
    let (command, args) = command_line(kvc);
    let mut mounts = vec![mount(DATA_VOLUME, DATA_MOUNT, false), mount("tmp", "/tmp", false)];
    if tls.client_secret_name.is_some() {
        mounts.push(mount("client-tls", CLIENT_TLS_DIR, true));
    }
    if tls.peer_secret_name.is_some() {
        mounts.push(mount("peer-tls", PEER_TLS_DIR, true));
    }
    let mut startup = http_probe("/livez", 5, 60);
    startup.initial_delay_seconds = Some(1);
    Container {
        name: CONTAINER.to_string(),
        image: Some(kvc.spec.image()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(command),
        args: Some(args),
        env: Some(environment(kvc)),
        ports: Some(vec![
            port("client", CLIENT_PORT),
            port("peer", PEER_PORT),
            port("metrics", METRICS_PORT),
        ]),
        startup_probe: Some(startup),
        liveness_probe: Some(http_probe("/livez", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        resources: kvc.spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Container::default()
    }
}

/// The pod template without its revision annotation (the revision is a hash of this).
fn bare_template(kvc: &KVCluster) -> PodTemplateSpec {
    let names = names(kvc);
    let tls = kvc.spec.tls.clone().unwrap_or_default();
    let scheduling = kvc.spec.scheduling.clone().unwrap_or_default();
    let selector = names.selector_labels();
    let mut volumes = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if let Some(secret) = &tls.client_secret_name {
        volumes.push(secret_volume("client-tls", secret));
    }
    if let Some(secret) = &tls.peer_secret_name {
        volumes.push(secret_volume("peer-tls", secret));
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(names.labels()),
            annotations: Some(BTreeMap::from([(VERSION_ANNOTATION.to_string(), kvc.spec.version_label())])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names.service_account()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(30),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                fs_group_change_policy: Some("OnRootMismatch".to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            node_selector: scheduling.node_selector,
            tolerations: scheduling.tolerations,
            affinity: Some(scheduling.affinity.unwrap_or_else(|| default_affinity(&selector))),
            containers: vec![container(kvc)],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

/// Revision of the desired pod template: a stable hash of the template. A pod whose
/// `raftkv.dev/revision` annotation differs runs an outdated template.
pub fn template_revision(kvc: &KVCluster) -> String {
    // Serializing k8s-openapi types is infallible in practice (maps are BTreeMaps, no custom
    // serializers can fail); an error would only make every pod look outdated, never crash.
    let bytes = serde_json::to_vec(&bare_template(kvc)).unwrap_or_default();
    format!("{:016x}", fnv1a(&bytes))
}

/// The pod template, annotated with its revision.
pub fn pod_template(kvc: &KVCluster) -> PodTemplateSpec {
    let revision = template_revision(kvc);
    let mut template = bare_template(kvc);
    if let Some(meta) = template.metadata.as_mut() {
        meta.annotations.get_or_insert_with(BTreeMap::new).insert(REVISION_ANNOTATION.to_string(), revision);
    }
    template
}

/// The claim template for new members. StatefulSet claim templates are immutable once created,
/// so the reconciler passes the live ones back in (`existing`) rather than re-rendering them.
pub fn claim_templates(kvc: &KVCluster) -> Vec<PersistentVolumeClaim> {
    let names = names(kvc);
    vec![PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(names.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: kvc.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(kvc.spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }]
}

/// The StatefulSet with `replicas` pods (decided by the planner, which follows membership, not
/// `spec.replicas` directly). `existing_claims` are the live claim templates, if the set exists.
pub fn statefulset(
    kvc: &KVCluster,
    replicas: i32,
    existing_claims: Option<Vec<PersistentVolumeClaim>>,
) -> StatefulSet {
    let names = names(kvc);
    StatefulSet {
        metadata: owned_meta(kvc, names.statefulset()),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names.peer_service()),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                ..StatefulSetUpdateStrategy::default()
            }),
            // Claims are the operator's business (it must remove a member before its data can go).
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".to_string()),
                when_scaled: Some("Retain".to_string()),
            }),
            template: pod_template(kvc),
            volume_claim_templates: Some(existing_claims.unwrap_or_else(|| claim_templates(kvc))),
            revision_history_limit: Some(10),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SchedulingSpec, TlsSpec};
    use crate::fixtures::example;

    fn kvnode(sts: &StatefulSet) -> Container {
        sts.spec.template.spec.as_ref().unwrap().containers[0].clone()
    }

    #[test]
    fn statefulset_shape() {
        let sts = statefulset(&example(3), 3, None);
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("kv-peer"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.update_strategy.as_ref().unwrap().type_.as_deref(), Some("OnDelete"));
        let claims = spec.volume_claim_templates.as_ref().unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let requests =
            claims[0].spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["storage"], Quantity("1Gi".into()));
        assert_eq!(claims[0].spec.as_ref().unwrap().storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.template.metadata.as_ref().unwrap().labels, Some(names(&example(3)).labels()));
    }

    #[test]
    fn container_is_hardened_and_probed_on_the_http_port() {
        let c = kvnode(&statefulset(&example(3), 3, None));
        let sc = c.security_context.unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let path = |p: Option<Probe>| p.unwrap().http_get.unwrap().path.unwrap();
        assert_eq!(path(c.liveness_probe.clone()), "/livez");
        assert_eq!(path(c.readiness_probe.clone()), "/readyz");
        assert_eq!(path(c.startup_probe.clone()), "/livez");
        let port = c.liveness_probe.unwrap().http_get.unwrap().port;
        assert_eq!(port, IntOrString::String("metrics".into()));
        assert!(
            c.ports.unwrap().iter().any(|p| p.name.as_deref() == Some("metrics") && p.container_port == 2381)
        );
        assert_eq!(c.resources, example(3).spec.resources);
    }

    #[test]
    fn default_affinity_prefers_spreading_and_user_affinity_replaces_it() {
        let sts = statefulset(&example(3), 3, None);
        let pod = sts.spec.template.spec.unwrap();
        let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
        assert!(anti.required_during_scheduling_ignored_during_execution.is_none());
        assert_eq!(anti.preferred_during_scheduling_ignored_during_execution.unwrap()[0].weight, 100);

        let mut kvc = example(3);
        let custom = Affinity { pod_anti_affinity: Some(PodAntiAffinity::default()), ..Affinity::default() };
        kvc.spec.scheduling = Some(SchedulingSpec {
            node_selector: Some(BTreeMap::from([("disk".into(), "ssd".into())])),
            tolerations: None,
            affinity: Some(custom.clone()),
        });
        let pod = statefulset(&kvc, 3, None).spec.template.spec.unwrap();
        assert_eq!(pod.affinity, Some(custom));
        assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
    }

    #[test]
    fn replicas_and_claims_do_not_change_the_template_revision() {
        let kvc = example(3);
        let a = statefulset(&kvc, 3, None);
        let b = statefulset(&kvc, 5, Some(vec![]));
        assert_eq!(a.spec.template, b.spec.template);
    }

    #[test]
    fn revision_follows_the_spec() {
        let kvc = example(3);
        let mut upgraded = kvc.clone();
        upgraded.spec.version = Some("0.2.0".into());
        assert_ne!(template_revision(&kvc), template_revision(&upgraded));
        let mut scaled = kvc.clone();
        scaled.spec.replicas = 5;
        assert_eq!(template_revision(&kvc), template_revision(&scaled), "scaling restarts nobody");
        let annotations = pod_template(&kvc).metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[REVISION_ANNOTATION], template_revision(&kvc));
        assert_eq!(annotations[VERSION_ANNOTATION], "0.1.0");
    }

    #[test]
    fn tls_mounts_secrets_and_uses_https() {
        let mut kvc = example(3);
        kvc.spec.tls = Some(TlsSpec {
            client_secret_name: Some("client".into()),
            client_cert_auth: true,
            peer_secret_name: Some("peer".into()),
        });
        let sts = statefulset(&kvc, 3, None);
        let pod = sts.spec.template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.contains(&"--listen-client-urls=https://0.0.0.0:2379".to_string()));
        assert!(args.contains(&"--client-cert-auth".to_string()));
        assert!(args.iter().any(|a| a == "--peer-trusted-ca-file=/etc/kvnode/tls/peer/ca.crt"));
        let secrets: Vec<String> =
            pod.volumes.unwrap().iter().filter_map(|v| v.secret.as_ref()?.secret_name.clone()).collect();
        assert_eq!(secrets, vec!["client".to_string(), "peer".to_string()]);
    }
}
