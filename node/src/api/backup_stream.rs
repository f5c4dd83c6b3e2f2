//! Maintenance.Snapshot's stream: a backup written on a blocking thread from one read
//! transaction, cut into 32 KiB chunks (etcd's send buffer), at most a few chunks in flight —
//! so memory stays bounded whatever the size of the key space, and a client that goes away
//! stops the export.

use std::io::{self, Write};
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{info, warn};

use crate::proto::etcdserverpb::{ResponseHeader, SnapshotResponse};
use crate::storage::KvStore;
use crate::storage::backup::BackupError;

/// Bytes per response (etcd's `snapshotSendBufferSize`).
const CHUNK: usize = 32 * 1024;
/// Chunks queued between the exporting thread and the gRPC stream.
const IN_FLIGHT: usize = 4;

pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// Streams a backup of `kv`. `estimated_size` (the database file's size, as etcd reports its
/// own) feeds `remaining_bytes` until the last chunk, which says 0.
pub fn stream(
    kv: KvStore,
    member_id: u64,
    version: &'static str,
    header: ResponseHeader,
    estimated_size: u64,
) -> SnapshotStream {
    let (chunks_tx, mut chunks) = mpsc::channel::<Result<Vec<u8>, Status>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let sink = ChunkSink { tx: chunks_tx.clone(), buf: Vec::with_capacity(CHUNK) };
        match kv.export_backup(member_id, version, sink) {
            Ok((_, summary)) => {
                info!(
                    revision = summary.revision,
                    bytes = summary.size,
                    keys = summary.keys,
                    "snapshot sent"
                );
            }
            Err(BackupError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                info!("snapshot stream abandoned by the client");
            }
            Err(e) => {
                warn!(error = %e, "snapshot failed");
                let _ = chunks_tx.blocking_send(Err(Status::internal(format!("etcdserver: snapshot: {e}"))));
            }
        }
    });
    let (out_tx, out) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        let mut sent = 0u64;
        let mut header = Some(header);
        let Some(mut current) = chunks.recv().await else { return };
        loop {
            let next = chunks.recv().await;
            let response = current.map(|blob| {
                sent += blob.len() as u64;
                let remaining = if next.is_none() { 0 } else { estimated_size.saturating_sub(sent).max(1) };
                SnapshotResponse {
                    header: header.take(),
                    remaining_bytes: remaining,
                    blob,
                    version: version.into(),
                }
            });
            if out_tx.send(response).await.is_err() {
                return;
            }
            match next {
                Some(n) => current = n,
                None => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(out))
}

/// Cuts what the exporter writes into chunks for the stream; fails with `BrokenPipe` once the
/// stream is gone, which ends the export.
struct ChunkSink {
    tx: mpsc::Sender<Result<Vec<u8>, Status>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
