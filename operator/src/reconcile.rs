//! The reconciler: observe, plan, apply, act, report.
//!
//! Each reconcile reads the cluster's objects and its member list, asks [`plan`] for one action,
//! server-side-applies the owned objects (the ConfigMap before the StatefulSet, so that a pod
//! added by a scale-up already finds itself in the membership), carries the action out, and
//! writes the status (including the operation record) and an Event. Everything that must
//! survive an operator restart is in the status; nothing is kept in memory between reconciles.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::crd::{KVCluster, PvcPolicy};
use crate::membership::{MembershipClient, MembershipError};
use crate::metrics::Metrics;
use crate::names::{ClusterNames, DATA_VOLUME, FIELD_MANAGER, FINALIZER, REVISION_ANNOTATION};
use crate::plan::{self, Action, Decision, PlanConfig};
use crate::resources::config_map::{MembershipConfig, config_map};
use crate::resources::names;
use crate::resources::pdb::pod_disruption_budget;
use crate::resources::services::{client_service, peer_service, service_account};
use crate::resources::statefulset::statefulset;
use crate::state::{
    Membership, ObservedClaim, ObservedMember, ObservedPod, ObservedState, ObservedStatefulSet,
};
use crate::status::{build_status, status_patch};
use crate::storage::{self, StorageReport};

/// A reconcile failure; the controller retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("membership: {0}")]
    Membership(#[from] MembershipError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("KVCluster has no namespace")]
    NoNamespace,
}

impl Error {
    /// Label for the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Membership(_) => "membership",
            Self::Finalizer(_) => "finalizer",
            Self::NoNamespace => "spec",
        }
    }
}

/// Source of the current time; tests move it forward to cross deadlines.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of the controller.
pub struct Context {
    pub client: kube::Client,
    pub membership: Arc<dyn MembershipClient>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub config: PlanConfig,
    pub clock: Clock,
    /// Requeue delay while something is in progress.
    pub busy_requeue: Duration,
    /// Requeue delay when idle (periodic health refresh).
    pub idle_requeue: Duration,
}

impl Context {
    pub fn new(
        client: kube::Client,
        membership: Arc<dyn MembershipClient>,
        recorder: Recorder,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            membership,
            recorder,
            metrics,
            config: PlanConfig::default(),
            clock: Arc::new(Timestamp::now),
            busy_requeue: Duration::from_secs(5),
            idle_requeue: Duration::from_secs(300),
        }
    }
}

/// Entry point for the controller: handles the finalizer, then reconciles or cleans up.
pub async fn reconcile(kvc: Arc<KVCluster>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let ns = kvc.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<KVCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, kvc, |event| async {
        match event {
            Finalizer::Apply(kvc) => apply(&kvc, &ctx).await,
            Finalizer::Cleanup(kvc) => cleanup(&kvc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.duration.with_label_values::<&str>(&[]).observe(started.elapsed().as_secs_f64());
    ctx.metrics.reconciles.with_label_values(&[if result.is_ok() { "ok" } else { "error" }]).inc();
    result
}

/// Retry policy: back off harder on errors that are unlikely to clear quickly.
pub fn error_policy(kvc: Arc<KVCluster>, error: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(cluster = %plan::display_name(&kvc), %error, "reconcile failed");
    ctx.metrics.errors.with_label_values(&[error.kind()]).inc();
    match error {
        Error::Membership(_) => Requeue::requeue(Duration::from_secs(10)),
        _ => Requeue::requeue(Duration::from_secs(30)),
    }
}

fn ns_api<K>(ctx: &Context, names: &ClusterNames) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(ctx.client.clone(), &names.namespace)
}

async fn server_side_apply<K>(api: &Api<K>, name: &str, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await?;
    Ok(())
}

async fn apply(kvc: &KVCluster, ctx: &Context) -> Result<Requeue, Error> {
    let names = names(kvc);
    let sts_api: Api<StatefulSet> = ns_api(ctx, &names);
    let live_sts = sts_api.get_opt(&names.statefulset()).await?;
    let obs = observe(kvc, ctx, &names, live_sts.as_ref()).await?;
    let decision = plan::plan(kvc, &obs, &ctx.config);

    apply_objects(kvc, ctx, &names, &obs, &decision, live_sts).await?;
    let storage = expand_claims(kvc, ctx, &names, &obs).await?;
    execute(kvc, ctx, &names, &obs, &decision.action).await?;
    report(kvc, ctx, &names, &obs, &decision, &storage).await?;

    let busy = decision.operation.as_ref().is_some_and(|o| o.failed.is_none())
        || !matches!(decision.action, Action::Idle);
    Ok(Requeue::requeue(if busy { ctx.busy_requeue } else { ctx.idle_requeue }))
}

/// Reads the StatefulSet, pods, claims and the member list.
async fn observe(
    kvc: &KVCluster,
    ctx: &Context,
    names: &ClusterNames,
    sts: Option<&StatefulSet>,
) -> Result<ObservedState, Error> {
    let statefulset = sts.map(|s| ObservedStatefulSet {
        replicas: s.spec.replicas.unwrap_or(0),
        up_to_date: s.status.as_ref().and_then(|st| st.observed_generation) >= s.metadata.generation,
    });
    let selector = ListParams::default().labels(&names.selector_string());
    let pods: Api<Pod> = ns_api(ctx, names);
    let pods = pods
        .list(&selector)
        .await?
        .items
        .into_iter()
        .filter_map(|p| Some((names.ordinal_of(&p.name_any())?, observed_pod(&p))))
        .collect();
    let pvcs: Api<PersistentVolumeClaim> = ns_api(ctx, names);
    let prefix = format!("{DATA_VOLUME}-");
    let pvcs = pvcs
        .list(&selector)
        .await?
        .items
        .iter()
        .filter_map(|c| Some((names.ordinal_of(c.name_any().strip_prefix(&prefix)?)?, observed_claim(c))))
        .collect();
    let mut obs = ObservedState { now: (ctx.clock)(), statefulset, pods, pvcs, membership: None };
    if obs.statefulset.is_some() {
        obs.membership = observe_membership(kvc, ctx, names, &obs).await;
    }
    Ok(obs)
}

fn observed_pod(pod: &Pod) -> ObservedPod {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ObservedPod {
        ready,
        revision: pod.annotations().get(REVISION_ANNOTATION).cloned(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

fn observed_claim(claim: &PersistentVolumeClaim) -> ObservedClaim {
    let requested = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone());
    ObservedClaim { requested, capacity }
}

fn client_tls(kvc: &KVCluster) -> bool {
    kvc.spec.tls.as_ref().is_some_and(|t| t.client_secret_name.is_some())
}

/// Client URLs of every ordinal that may hold a member.
fn endpoints(kvc: &KVCluster, names: &ClusterNames, obs: &ObservedState) -> Vec<String> {
    let known =
        kvc.status.as_ref().map(|s| s.members.iter().filter_map(|m| names.ordinal_of(&m.name)).collect());
    let mut ordinals: BTreeSet<i32> = known.unwrap_or_default();
    ordinals.extend(obs.pods.keys());
    ordinals.extend(0..obs.statefulset.as_ref().map_or(0, |s| s.replicas));
    ordinals.iter().map(|o| names.client_url(*o, client_tls(kvc))).collect()
}

/// The member list and each member's status; `None` when no member answers.
async fn observe_membership(
    kvc: &KVCluster,
    ctx: &Context,
    names: &ClusterNames,
    obs: &ObservedState,
) -> Option<Membership> {
    let endpoints = endpoints(kvc, names, obs);
    let list = match ctx.membership.member_list(&endpoints).await {
        Ok(list) => list,
        Err(e) => {
            info!(cluster = %plan::display_name(kvc), error = %e, "member list unavailable");
            return None;
        }
    };
    let tls = client_tls(kvc);
    let statuses = join_all(list.iter().map(|m| {
        let ordinal = m.peer_urls.iter().find_map(|u| names.ordinal_of_peer_url(u));
        let endpoint = match (m.client_urls.first(), ordinal) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(o)) => Some(names.client_url(o, tls)),
            (None, None) => None,
        };
        async move {
            match endpoint {
                Some(e) => ctx.membership.status(&e).await.ok(),
                None => None,
            }
        }
    }))
    .await;
    let members: Vec<ObservedMember> = list
        .iter()
        .zip(statuses)
        .map(|(m, status)| ObservedMember {
            id: m.id,
            ordinal: m.peer_urls.iter().find_map(|u| names.ordinal_of_peer_url(u)),
            is_learner: m.is_learner,
            status,
        })
        .collect();
    // The leader most members agree on; its own status gives the log index to catch up to.
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for s in members.iter().filter_map(|m| m.status).filter(|s| s.leader != 0) {
        *votes.entry(s.leader).or_default() += 1;
    }
    let leader = votes.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))).map(|(id, _)| *id);
    let leader_index = leader
        .and_then(|l| members.iter().find(|m| m.id == l))
        .and_then(|m| m.status)
        .map_or(0, |s| s.raft_index);
    Some(Membership { members, leader, leader_index })
}

/// What the membership ConfigMap should say now (`None`: leave it as it is).
fn membership_config(kvc: &KVCluster, names: &ClusterNames, obs: &ObservedState) -> Option<MembershipConfig> {
    if let Some(m) = &obs.membership {
        return Some(MembershipConfig::existing(m.members.iter().filter_map(|x| x.ordinal).collect()));
    }
    let known: Vec<i32> = kvc
        .status
        .as_ref()
        .map(|s| s.members.iter().filter_map(|m| names.ordinal_of(&m.name)).collect())
        .unwrap_or_default();
    if !known.is_empty() {
        // Unreachable now but formed before: never fall back to a bootstrap ("new") config.
        return Some(MembershipConfig::existing(known));
    }
    if obs.statefulset.is_none() {
        return Some(MembershipConfig::bootstrap(kvc.spec.replicas));
    }
    None
}

async fn apply_objects(
    kvc: &KVCluster,
    ctx: &Context,
    names: &ClusterNames,
    obs: &ObservedState,
    decision: &Decision,
    live_sts: Option<StatefulSet>,
) -> Result<(), Error> {
    server_side_apply(&ns_api::<ServiceAccount>(ctx, names), &names.service_account(), &service_account(kvc))
        .await?;
    server_side_apply(&ns_api::<Service>(ctx, names), &names.peer_service(), &peer_service(kvc)).await?;
    server_side_apply(&ns_api::<Service>(ctx, names), &names.client_service(), &client_service(kvc)).await?;
    if let Some(config) = membership_config(kvc, names, obs) {
        server_side_apply(&ns_api::<ConfigMap>(ctx, names), &names.config_map(), &config_map(kvc, &config))
            .await?;
    }
    let replicas = plan::statefulset_replicas(kvc, obs, &decision.action);
    let claims = live_sts.and_then(|s| s.spec.volume_claim_templates);
    let sts = statefulset(kvc, replicas, claims);
    server_side_apply(&ns_api::<StatefulSet>(ctx, names), &names.statefulset(), &sts).await?;
    let pdb = pod_disruption_budget(kvc, plan::pdb_voters(kvc, obs));
    server_side_apply(&ns_api::<PodDisruptionBudget>(ctx, names), &names.pdb(), &pdb).await?;
    Ok(())
}

/// Grows the members' claims to `spec.storage.size` (see [`storage`]), one merge patch of the
/// request per claim; the StatefulSet's immutable claim template is left as it is. A refusal by
/// the API server (a StorageClass without `allowVolumeExpansion`, a claim gone) is recorded in
/// the status and an Event rather than failing the reconcile: membership work goes on, and the
/// expansion is retried on every reconcile until the user fixes the cause.
async fn expand_claims(
    kvc: &KVCluster,
    ctx: &Context,
    names: &ClusterNames,
    obs: &ObservedState,
) -> Result<StorageReport, Error> {
    let wanted = storage::plan(kvc, obs);
    let mut report = StorageReport {
        size: kvc.spec.storage.size.clone(),
        pending: wanted.pending.iter().map(|o| names.pvc(*o)).collect(),
        refused: Vec::new(),
        invalid: wanted.invalid.clone(),
    };
    if let Some(invalid) = &wanted.invalid {
        warn!(cluster = %plan::display_name(kvc), %invalid, "cannot compare claim sizes; not expanding");
        return Ok(report);
    }
    let api: Api<PersistentVolumeClaim> = ns_api(ctx, names);
    for resize in &wanted.resize {
        let claim = names.pvc(resize.ordinal);
        let from = resize.from.as_deref().unwrap_or("unset");
        let patch = storage::claim_patch(&resize.to);
        let (reason, type_, note) = match api
            .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                info!(cluster = %plan::display_name(kvc), %claim, from, to = %resize.to, "expanding claim");
                (
                    "StorageExpanded",
                    EventType::Normal,
                    format!("requested {} for claim {claim} (was {from})", resize.to),
                )
            }
            Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                warn!(cluster = %plan::display_name(kvc), %claim, error = %e.message, "claim expansion refused");
                report.refused.push(format!("{claim}: {}", e.message));
                (
                    "StorageExpansionRefused",
                    EventType::Warning,
                    format!("claim {claim} cannot grow to {}: {}", resize.to, e.message),
                )
            }
            Err(e) => return Err(e.into()),
        };
        ctx.metrics.steps.with_label_values(&[names.namespace.as_str(), names.name.as_str(), reason]).inc();
        let subject = ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("PersistentVolumeClaim".to_string()),
            name: Some(claim.clone()),
            namespace: Some(names.namespace.clone()),
            ..ObjectReference::default()
        };
        publish(ctx, kvc, reason, type_, note, Some(subject)).await;
    }
    Ok(report)
}

/// Publishes an Event on the KVCluster; a failure to publish is logged, never fatal.
async fn publish(
    ctx: &Context,
    kvc: &KVCluster,
    reason: &str,
    type_: EventType,
    note: String,
    secondary: Option<ObjectReference>,
) {
    let event =
        Event { type_, reason: reason.to_string(), note: Some(note), action: reason.to_string(), secondary };
    if let Err(e) = ctx.recorder.publish(&event, &kvc.object_ref(&())).await {
        warn!(cluster = %plan::display_name(kvc), error = %e, "could not publish event");
    }
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Carries out the planner's action (the StatefulSet's replicas were already applied).
async fn execute(
    kvc: &KVCluster,
    ctx: &Context,
    names: &ClusterNames,
    obs: &ObservedState,
    action: &Action,
) -> Result<(), Error> {
    let tls = client_tls(kvc);
    let membership = ctx.membership.as_ref();
    match action {
        Action::DeletePvc { ordinal } => {
            delete_ignoring_absent(&ns_api::<PersistentVolumeClaim>(ctx, names), &names.pvc(*ordinal))
                .await?;
        }
        Action::AddLearner { ordinal } => {
            membership
                .add_learner(&endpoints(kvc, names, obs), &names.peer_url(*ordinal, tls_peer(kvc)))
                .await?;
        }
        Action::Promote { id, .. } => membership.promote(&endpoints(kvc, names, obs), *id).await?,
        Action::RemoveMember { id, .. } => membership.remove(&endpoints(kvc, names, obs), *id).await?,
        Action::MoveLeader { from, to, .. } => {
            let leader_ordinal = obs
                .membership
                .as_ref()
                .and_then(|m| m.members.iter().find(|x| x.id == *from))
                .and_then(|m| m.ordinal);
            let Some(leader_ordinal) = leader_ordinal else {
                return Err(MembershipError::Refused {
                    call: "MoveLeader",
                    message: "leader not found".into(),
                }
                .into());
            };
            membership.move_leader(&names.client_url(leader_ordinal, tls), *to).await?;
        }
        Action::RestartPod { ordinal } => {
            delete_ignoring_absent(&ns_api::<Pod>(ctx, names), &names.member(*ordinal)).await?;
        }
        Action::Create
        | Action::Idle
        | Action::Wait(_)
        | Action::SetReplicas { .. }
        | Action::Complete(_)
        | Action::Halt(_) => {}
    }
    Ok(())
}

fn tls_peer(kvc: &KVCluster) -> bool {
    kvc.spec.tls.as_ref().is_some_and(|t| t.peer_secret_name.is_some())
}

/// Event reason for an action (CamelCase, as Kubernetes reasons are).
fn event_reason(action: &Action) -> Option<(&'static str, EventType)> {
    Some(match action {
        Action::Create => ("Creating", EventType::Normal),
        Action::DeletePvc { .. } => ("ClaimDeleted", EventType::Normal),
        Action::AddLearner { .. } => ("MemberAdded", EventType::Normal),
        Action::SetReplicas { .. } => ("Scaled", EventType::Normal),
        Action::Promote { .. } => ("MemberPromoted", EventType::Normal),
        Action::MoveLeader { .. } => ("LeaderMoved", EventType::Normal),
        Action::RemoveMember { .. } => ("MemberRemoved", EventType::Normal),
        Action::RestartPod { .. } => ("PodRestarted", EventType::Normal),
        Action::Complete(_) => ("OperationComplete", EventType::Normal),
        Action::Halt(_) => ("OperationHalted", EventType::Warning),
        Action::Idle | Action::Wait(_) => return None,
    })
}

/// The member pod a step concerns, as the Event's related object. Besides pointing people at
/// the pod, it keeps the recorder from folding steps on different members into one Event series.
fn event_subject(names: &ClusterNames, obs: &ObservedState, action: &Action) -> Option<ObjectReference> {
    let ordinal = match action {
        Action::DeletePvc { ordinal }
        | Action::AddLearner { ordinal }
        | Action::Promote { ordinal, .. }
        | Action::RemoveMember { ordinal, .. }
        | Action::RestartPod { ordinal }
        | Action::MoveLeader { to_ordinal: ordinal, .. } => *ordinal,
        Action::SetReplicas { replicas } => {
            let current = obs.statefulset.as_ref().map_or(0, |s| s.replicas);
            if *replicas > current { replicas - 1 } else { *replicas }
        }
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        name: Some(names.member(ordinal)),
        namespace: Some(names.namespace.clone()),
        ..ObjectReference::default()
    })
}

/// Writes status, metrics and an Event for the step taken.
async fn report(
    kvc: &KVCluster,
    ctx: &Context,
    names: &ClusterNames,
    obs: &ObservedState,
    decision: &Decision,
    storage: &StorageReport,
) -> Result<(), Error> {
    let status = build_status(kvc, obs, decision, storage);
    let labels = [names.namespace.as_str(), names.name.as_str()];
    ctx.metrics.members.with_label_values(&labels).set(i64::from(status.replicas));
    ctx.metrics.ready_members.with_label_values(&labels).set(i64::from(status.ready_replicas));
    let in_progress = decision.operation.as_ref().is_some_and(|o| o.failed.is_none());
    ctx.metrics.operation_in_progress.with_label_values(&labels).set(i64::from(in_progress));

    let api: Api<KVCluster> = ns_api(ctx, names);
    api.patch_status(
        &names.name,
        &PatchParams::default(),
        &Patch::Merge(status_patch(kvc.status.as_ref(), &status)),
    )
    .await?;

    if let Some((reason, type_)) = event_reason(&decision.action) {
        let note = plan::describe(&decision.action, names);
        info!(cluster = %plan::display_name(kvc), step = %note, "step");
        ctx.metrics.steps.with_label_values(&[labels[0], labels[1], reason]).inc();
        publish(ctx, kvc, reason, type_, note, event_subject(names, obs, &decision.action)).await;
    }
    Ok(())
}

/// Deletion: owner references collect every owned object; claims are not owned (the
/// StatefulSet creates them), so the `whenDeleted: Delete` policy is carried out here.
async fn cleanup(kvc: &KVCluster, ctx: &Context) -> Result<Requeue, Error> {
    let names = names(kvc);
    if kvc.spec.pvc_retention_policy.when_deleted == PvcPolicy::Delete {
        let api: Api<PersistentVolumeClaim> = ns_api(ctx, &names);
        let selector = ListParams::default().labels(&names.selector_string());
        for claim in api.list(&selector).await?.items {
            delete_ignoring_absent(&api, &claim.name_any()).await?;
        }
        info!(cluster = %plan::display_name(kvc), "deleted claims on cluster deletion");
    }
    ctx.metrics.forget(&names.namespace, &names.name);
    Ok(Requeue::await_change())
}
