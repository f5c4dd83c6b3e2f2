//! The routes: one per client RPC, at etcd's paths.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Status};

use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseApi;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3lockpb::lock_server::Lock;

use super::codec::{decode, grpc_request, json, too_large};
use super::error::GatewayError;
use super::stream;

/// The service objects the gRPC server serves, shared with the gateway.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<KvService>,
    pub lease: Arc<LeaseApi>,
    pub cluster: Arc<ClusterService>,
    pub maintenance: Arc<MaintenanceService>,
    pub watch: Arc<WatchService>,
    pub lock: Arc<LockService>,
    pub election: Arc<ElectionService>,
}

/// One unary call: decode, call the service, encode.
async fn unary<Req, Resp, F, Fut>(
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    call: F,
) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let Ok(body) = body else { return too_large(&headers, limit).into_response() };
    let message = match decode::<Req>(&body) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    match call(grpc_request(&headers, message)).await {
        Ok(response) => json(response.get_ref()),
        Err(status) => GatewayError::Status(status).into_response(),
    }
}

/// Routes `POST $path` to `$trait::$method` of `$service`.
macro_rules! unary {
    ($router:expr, $limit:expr, $path:literal, $service:expr, $trait:ident :: $method:ident) => {{
        let service = $service.clone();
        let limit = $limit;
        $router.route(
            $path,
            post(move |headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
                let service = service.clone();
                async move {
                    unary(headers, body, limit, |req| async move { $trait::$method(&*service, req).await })
                        .await
                }
            }),
        )
    }};
}

/// The gateway's router; request bodies are limited to `body_limit` bytes.
pub fn router(s: Services, body_limit: usize) -> Router {
    let r = Router::new();
    let r = unary!(r, body_limit, "/v3/kv/range", s.kv, Kv::range);
    let r = unary!(r, body_limit, "/v3/kv/put", s.kv, Kv::put);
    let r = unary!(r, body_limit, "/v3/kv/deleterange", s.kv, Kv::delete_range);
    let r = unary!(r, body_limit, "/v3/kv/txn", s.kv, Kv::txn);
    let r = unary!(r, body_limit, "/v3/kv/compaction", s.kv, Kv::compact);
    let r = unary!(r, body_limit, "/v3/lease/grant", s.lease, Lease::lease_grant);
    let r = unary!(r, body_limit, "/v3/lease/revoke", s.lease, Lease::lease_revoke);
    let r = unary!(r, body_limit, "/v3/kv/lease/revoke", s.lease, Lease::lease_revoke);
    let r = unary!(r, body_limit, "/v3/lease/timetolive", s.lease, Lease::lease_time_to_live);
    let r = unary!(r, body_limit, "/v3/kv/lease/timetolive", s.lease, Lease::lease_time_to_live);
    let r = unary!(r, body_limit, "/v3/lease/leases", s.lease, Lease::lease_leases);
    let r = unary!(r, body_limit, "/v3/kv/lease/leases", s.lease, Lease::lease_leases);
    let r = unary!(r, body_limit, "/v3/cluster/member/add", s.cluster, Cluster::member_add);
    let r = unary!(r, body_limit, "/v3/cluster/member/remove", s.cluster, Cluster::member_remove);
    let r = unary!(r, body_limit, "/v3/cluster/member/update", s.cluster, Cluster::member_update);
    let r = unary!(r, body_limit, "/v3/cluster/member/list", s.cluster, Cluster::member_list);
    let r = unary!(r, body_limit, "/v3/cluster/member/promote", s.cluster, Cluster::member_promote);
    let r = unary!(r, body_limit, "/v3/maintenance/alarm", s.maintenance, Maintenance::alarm);
    let r = unary!(r, body_limit, "/v3/maintenance/status", s.maintenance, Maintenance::status);
    let r = unary!(r, body_limit, "/v3/maintenance/defragment", s.maintenance, Maintenance::defragment);
    let r = unary!(r, body_limit, "/v3/maintenance/hash", s.maintenance, Maintenance::hash);
    let r = unary!(r, body_limit, "/v3/maintenance/hashkv", s.maintenance, Maintenance::hash_kv);
    let r =
        unary!(r, body_limit, "/v3/maintenance/transfer-leadership", s.maintenance, Maintenance::move_leader);
    let r = unary!(r, body_limit, "/v3/maintenance/downgrade", s.maintenance, Maintenance::downgrade);
    let r = unary!(r, body_limit, "/v3/lock/lock", s.lock, Lock::lock);
    let r = unary!(r, body_limit, "/v3/lock/unlock", s.lock, Lock::unlock);
    let r = unary!(r, body_limit, "/v3/election/campaign", s.election, Election::campaign);
    let r = unary!(r, body_limit, "/v3/election/proclaim", s.election, Election::proclaim);
    let r = unary!(r, body_limit, "/v3/election/leader", s.election, Election::leader);
    let r = unary!(r, body_limit, "/v3/election/resign", s.election, Election::resign);
    let watch = s.watch.clone();
    let lease = s.lease.clone();
    let election = s.election.clone();
    let maintenance = s.maintenance.clone();
    r.route(
        "/v3/watch",
        post(move |headers: HeaderMap, body: Body| stream::watch(watch.clone(), headers, body)),
    )
    .route(
        "/v3/lease/keepalive",
        post(move |headers: HeaderMap, body: Body| stream::keep_alive(lease.clone(), headers, body)),
    )
    .route(
        "/v3/election/observe",
        post(move |headers: HeaderMap, body: Bytes| stream::observe(election.clone(), headers, body)),
    )
    .route(
        "/v3/maintenance/snapshot",
        post(move |headers: HeaderMap, body: Bytes| stream::snapshot(maintenance.clone(), headers, body)),
    )
    .route("/v3/{*rest}", axum::routing::any(not_found))
    .layer(DefaultBodyLimit::max(body_limit))
}

/// An unknown gateway path: grpc-gateway's 404 with gRPC code NOT_FOUND.
async fn not_found() -> Response {
    GatewayError::Status(Status::not_found("Not Found")).into_response()
}
