//! The gateway's streams: requests read as a sequence of JSON objects from the body, responses
//! written as `{"result": <message>}` lines, a failure as a last `{"error": {...}}` line.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::api::election::ElectionService;
use crate::api::lease::{LeaseApi, keep_alive_stream};
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{LeaseKeepAliveRequest, SnapshotRequest, WatchRequest};
use crate::proto::v3electionpb::LeaderRequest;
use crate::proto::v3electionpb::election_server::Election;

use super::codec::{decode, grpc_request};
use super::error::GatewayError;

/// The JSON requests in a body, one after another, as they arrive (a body that is still being
/// sent keeps the stream open).
fn json_requests<T>(body: Body) -> impl Stream<Item = Result<T, Status>> + Unpin + Send + 'static
where
    T: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = data.next().await {
            let Ok(chunk) = chunk else { return };
            buf.extend_from_slice(&chunk);
            loop {
                let mut objects = serde_json::Deserializer::from_slice(&buf).into_iter::<T>();
                match objects.next() {
                    Some(Ok(request)) => {
                        let used = objects.byte_offset();
                        buf.drain(..used);
                        if tx.send(Ok(request)).await.is_err() {
                            return;
                        }
                    }
                    // An object cut off by the end of this chunk: wait for more.
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        return;
                    }
                    None => {
                        buf.clear();
                        break;
                    }
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The response lines of a stream of messages.
fn lines<T, S>(messages: S) -> Response
where
    T: Serialize,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let mut failed = false;
    let body = messages.map_while(move |item| {
        if failed {
            return None;
        }
        let line = match item {
            Ok(message) => match serde_json::to_string(&message) {
                Ok(json) => format!("{{\"result\":{json}}}\n"),
                Err(e) => {
                    failed = true;
                    GatewayError::Status(Status::internal(e.to_string())).stream_line()
                }
            },
            Err(status) => {
                failed = true;
                GatewayError::Status(status).stream_line()
            }
        };
        Some(Ok::<Bytes, std::convert::Infallible>(Bytes::from(line)))
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response()
}

pub(super) async fn watch(service: Arc<WatchService>, headers: HeaderMap, body: Body) -> Response {
    let require_leader = grpc_request(&headers, ()).metadata().get("hasleader").is_some_and(|v| v == "true");
    match service.serve(require_leader, json_requests::<WatchRequest>(body)).await {
        Ok(responses) => lines(responses),
        Err(status) => GatewayError::Status(status).into_response(),
    }
}

pub(super) async fn keep_alive(service: Arc<LeaseApi>, _headers: HeaderMap, body: Body) -> Response {
    lines(keep_alive_stream(service.0.clone(), json_requests::<LeaseKeepAliveRequest>(body)))
}

pub(super) async fn observe(service: Arc<ElectionService>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match decode::<LeaderRequest>(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match Election::observe(&*service, grpc_request(&headers, request)).await {
        Ok(responses) => lines(responses.into_inner()),
        Err(status) => GatewayError::Status(status).into_response(),
    }
}

pub(super) async fn snapshot(service: Arc<MaintenanceService>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match decode::<SnapshotRequest>(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match Maintenance::snapshot(&*service, grpc_request(&headers, request)).await {
        Ok(responses) => lines(responses.into_inner()),
        Err(status) => GatewayError::Status(status).into_response(),
    }
}
