//! Statuses that tonic answers on its own, before any service runs, rewritten into what etcd
//! (grpc-go) answers, because etcd clients branch on the code:
//!
//! - a request larger than the gRPC limit (`--max-request-bytes` plus 512 KiB, as etcd sets it)
//!   is `RESOURCE_EXHAUSTED grpc: received message larger than max (N vs. M)`, where tonic says
//!   `OUT_OF_RANGE`;
//! - a method of an etcd service raftkv does not serve yet is `UNIMPLEMENTED etcdserver: not
//!   capable`, and one of any other service `UNIMPLEMENTED unknown service S`, where tonic says
//!   nothing at all.
//!
//! Both are trailers-only responses, so the status is in the response headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::{Code, Status};
use tower::{Layer, Service};

/// gRPC packages of etcd's client port, as they appear in request paths.
const ETCD_PACKAGES: &[&str] = &["etcdserverpb.", "v3lockpb.", "v3electionpb."];

/// Wraps the client port's routes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdStatusLayer;

impl<S> Layer<S> for EtcdStatusLayer {
    type Service = EtcdStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EtcdStatus { inner }
    }
}

/// The routes, with tonic's own statuses rewritten.
#[derive(Debug, Clone)]
pub struct EtcdStatus<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for EtcdStatus<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_string();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(status) = Status::from_header_map(response.headers())
                && let Some(etcd) = etcd_status(&path, &status)
            {
                // A status built from parts of another always renders as headers.
                let _ = etcd.add_header(response.headers_mut());
            }
            Ok(response)
        })
    }
}

/// etcd's status for one tonic produced on its own, if it differs.
fn etcd_status(path: &str, status: &Status) -> Option<Status> {
    match status.code() {
        Code::OutOfRange => too_large(status.message()),
        Code::Unimplemented if status.message().is_empty() => {
            let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
            if ETCD_PACKAGES.iter().any(|p| service.starts_with(p)) {
                Some(Status::unimplemented("etcdserver: not capable"))
            } else {
                Some(Status::unimplemented(format!("unknown service {service}")))
            }
        }
        _ => None,
    }
}

/// grpc-go's status for a message over the limit, from tonic's
/// "Error, decoded message length too large: found N bytes, the limit is: M bytes".
fn too_large(message: &str) -> Option<Status> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    let (found, limit): (u64, u64) = (found.parse().ok()?, limit.parse().ok()?);
    Some(Status::resource_exhausted(format!("grpc: received message larger than max ({found} vs. {limit})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_messages_get_grpc_go_s_status() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 2097167 bytes, the limit is: 2097152 bytes",
        );
        let etcd = etcd_status("/etcdserverpb.KV/Put", &tonic).expect("rewritten");
        assert_eq!(etcd.code(), Code::ResourceExhausted);
        assert_eq!(etcd.message(), "grpc: received message larger than max (2097167 vs. 2097152)");
        // Other out-of-range statuses (etcd's own "compacted") stay as they are.
        let compacted = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert!(etcd_status("/etcdserverpb.KV/Range", &compacted).is_none());
    }

    #[test]
    fn missing_services_answer_as_etcd_and_grpc_go_do() {
        let nothing = Status::unimplemented("");
        let auth = etcd_status("/etcdserverpb.Auth/AuthStatus", &nothing).expect("rewritten");
        assert_eq!((auth.code(), auth.message()), (Code::Unimplemented, "etcdserver: not capable"));
        let lock = etcd_status("/v3lockpb.Lock/Lock", &nothing).expect("rewritten");
        assert_eq!(lock.message(), "etcdserver: not capable");
        let other = etcd_status("/foo.Bar/Baz", &nothing).expect("rewritten");
        assert_eq!(other.message(), "unknown service foo.Bar");
        // A service's own Unimplemented with a message is left alone.
        assert!(etcd_status("/etcdserverpb.Maintenance/Hash", &Status::unimplemented("x")).is_none());
    }
}
