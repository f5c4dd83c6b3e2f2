//! The gateway's side of the wire: JSON bodies in and out, and the gRPC request a call is
//! made of (with the headers grpc-gateway forwards as metadata). Shared by the unary routes
//! and the streams.

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Request, Status};

use super::error::GatewayError;

/// Decodes a request body (empty means the default request, as grpc-gateway reads it).
pub(super) fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| GatewayError::BadJson(e.to_string()))
}

/// A gRPC request carrying what grpc-gateway forwards from HTTP headers: `Authorization`, and
/// every `Grpc-Metadata-<key>` header as metadata `<key>` (clientv3's `hasleader`, say).
pub(super) fn grpc_request<T>(headers: &HeaderMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    for (name, value) in headers {
        let key = if name == header::AUTHORIZATION {
            Some("authorization")
        } else {
            name.as_str().strip_prefix("grpc-metadata-")
        };
        let (Some(key), Ok(value)) = (key, value.to_str()) else { continue };
        if let (Ok(key), Ok(value)) =
            (MetadataKey::from_bytes(key.as_bytes()), value.parse::<MetadataValue<_>>())
        {
            request.metadata_mut().insert(key, value);
        }
    }
    request
}

/// The JSON of a response message.
pub(super) fn json<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => GatewayError::Status(Status::internal(e.to_string())).into_response(),
    }
}

/// A body over the gateway's limit: what grpc-gateway relays from gRPC for a message over
/// the server's limit (RESOURCE_EXHAUSTED, HTTP 429), with the size the client declared.
pub(super) fn too_large(headers: &HeaderMap, limit: usize) -> GatewayError {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    GatewayError::Status(Status::resource_exhausted(format!(
        "grpc: received message larger than max ({declared} vs. {limit})"
    )))
}
