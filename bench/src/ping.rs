//! `kvbench ping`: the round trip of a unary gRPC call over loopback.
//!
//! A tiny tonic echo service runs on its own thread and runtime (as a server in another
//! process would) and one client calls it sequentially. Every etcd v3 request pays at least
//! this, so it is the floor for single-client read latency on this machine.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::error::BenchError;
use crate::proto::ping::ping_client::PingClient;
use crate::proto::ping::ping_server::{Ping, PingServer};
use crate::proto::ping::{EchoReply, EchoRequest};
use crate::stats::Latencies;

/// Echoes the payload back.
#[derive(Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl Ping for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply { payload: request.into_inner().payload }))
    }
}

/// A running echo server; stops when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Starts the server on a free loopback port, on a thread of its own.
    pub fn start() -> Result<Self, BenchError> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    tracing::error!("cannot adopt the ping listener");
                    return;
                };
                let serve = tonic::transport::Server::builder()
                    .add_service(PingServer::new(Echo))
                    .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)));
                // Not a graceful shutdown: leaving `block_on` drops the runtime, which ends the
                // open connections too, so stopping never waits on a client.
                tokio::select! {
                    served = serve => {
                        if let Err(e) = served {
                            tracing::error!(error = %e, "ping server failed");
                        }
                    }
                    _ = stop_rx => {}
                }
            });
        });
        Ok(Self { addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl EchoServer {
    /// Stops the server and waits until its thread (and so its listener) is gone. The wait runs
    /// on tokio's blocking pool, so the calling runtime keeps serving its own tasks meanwhile.
    pub async fn stop(mut self) -> Result<(), BenchError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| BenchError::Unexpected(format!("joining the ping server: {e}")))?
                .map_err(|_| BenchError::Unexpected("the ping server thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for EchoServer {
    /// Signals the server to stop without waiting for its thread: a `Drop` cannot await, and
    /// blocking here could stall the runtime it runs on.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Calls the echo server at `addr` `warmup + count` times in sequence with a `payload`-byte
/// payload and returns the latencies of the last `count` calls.
pub async fn measure(
    addr: SocketAddr,
    count: u64,
    warmup: u64,
    payload: usize,
) -> Result<Latencies, BenchError> {
    let mut client = PingClient::connect(format!("http://{addr}")).await?;
    let payload = vec![0x5Au8; payload];
    let mut latencies = Latencies::new()?;
    for i in 0..warmup + count {
        let started = Instant::now();
        let reply = client.echo(EchoRequest { payload: payload.clone() }).await?;
        let took = started.elapsed();
        if reply.get_ref().payload.len() != payload.len() {
            return Err(BenchError::Unexpected("echo changed the payload".into()));
        }
        if i >= warmup {
            latencies.record(took);
        }
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_round_trips_are_measured() {
        let server = EchoServer::start().unwrap();
        let latencies = measure(server.addr(), 50, 5, 64).await.unwrap();
        assert_eq!(latencies.count(), 50);
        let s = latencies.summary();
        assert!(s.p50_ms > 0.0 && s.p50_ms < 1000.0, "{s:?}");
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error() {
        let server = EchoServer::start().unwrap();
        let addr = server.addr();
        server.stop().await.unwrap();
        assert!(measure(addr, 1, 0, 1).await.is_err());
    }
}
