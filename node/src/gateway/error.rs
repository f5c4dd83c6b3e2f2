//! Failures as etcd's gateway (grpc-gateway v1) writes them: a JSON body with `error`, `code`
//! and `message`, under the HTTP status of the gRPC code.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::{Code, Status};

/// A request the gateway refuses before any service sees it, or a service's failure.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The body is not the JSON of the request message.
    #[error("{0}")]
    BadJson(String),
    /// The service answered with a gRPC status.
    #[error("{}", .0.message())]
    Status(Status),
}

impl From<Status> for GatewayError {
    fn from(s: Status) -> Self {
        GatewayError::Status(s)
    }
}

impl GatewayError {
    pub fn code(&self) -> Code {
        match self {
            GatewayError::BadJson(_) => Code::InvalidArgument,
            GatewayError::Status(s) => s.code(),
        }
    }

    fn message(&self) -> String {
        self.to_string()
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: i32,
    message: &'a str,
}

/// The body of a failed stream's last line (grpc-gateway's stream error).
#[derive(Serialize)]
struct StreamErrorBody<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

impl GatewayError {
    /// `{"error":{...}}` for the end of a stream.
    pub fn stream_line(&self) -> String {
        let status = http_status(self.code());
        let message = self.message();
        let body = StreamErrorBody {
            grpc_code: self.code() as i32,
            http_code: status.as_u16(),
            message: &message,
            http_status: status.canonical_reason().unwrap_or_default(),
        };
        format!("{{\"error\":{}}}\n", serde_json::to_string(&body).unwrap_or_default())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let message = self.message();
        let body = ErrorBody { error: &message, code: self.code() as i32, message: &message };
        let json = serde_json::to_string(&body).unwrap_or_default();
        (http_status(self.code()), [(header::CONTENT_TYPE, "application/json")], json).into_response()
    }
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_grpc_gateway() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::ResourceExhausted), StatusCode::TOO_MANY_REQUESTS);
        let line =
            GatewayError::Status(Status::not_found("etcdserver: requested lease not found")).stream_line();
        assert_eq!(
            line,
            "{\"error\":{\"grpc_code\":5,\"http_code\":404,\"message\":\"etcdserver: requested lease not found\",\"http_status\":\"Not Found\"}}\n"
        );
    }
}
