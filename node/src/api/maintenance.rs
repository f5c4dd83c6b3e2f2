//! etcd's `Maintenance` service: Status and MoveLeader (what `etcdctl endpoint status` and
//! `etcdctl move-leader` use), Alarm listing, and HashKV for consistency checks.
//!
//! RPCs raftkv does not implement yet answer `Unimplemented` with etcd's "not capable" text, so
//! a client learns plainly that the feature is absent rather than receiving made-up data.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::warn;

use crate::driver::DriverError;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, StatusRequest, StatusResponse, alarm_request,
};

use crate::proto::kvserverpb::internal_request::Request as Write;
use crate::storage::Outcome;

use super::backup_stream;
use super::context::ApiContext;
use super::errors::EtcdError;

/// The etcd version raftkv answers Status with; clients gate features on it: learners need
/// 3.4, and kube-apiserver sends watch progress requests (for consistent reads from its
/// cache) only to 3.5.13 and later.
pub const ETCD_API_VERSION: &str = "3.5.13";

/// The Maintenance service of one member.
pub struct MaintenanceService {
    ctx: Arc<ApiContext>,
    /// The last measure of the database's bytes in use, if it still stands.
    in_use: Mutex<Option<InUse>>,
}

/// A measure of the database's bytes in use, and what it was taken after.
#[derive(Debug, Clone, Copy)]
struct InUse {
    at: Instant,
    /// The compaction revision when it was taken: a compaction (asked of any member, or
    /// made by the auto-compactor) frees history pages, so a measure taken before it is
    /// not reused however fresh.
    compact_revision: i64,
    bytes: u64,
}

/// How long a measure of the bytes in use is reused while no compaction or defragmentation
/// happens (measuring walks every page of the database while applies wait, so it is not done
/// on every Status; between compactions only writes change the figure, and they mostly grow
/// it and the file together).
const IN_USE_FRESH: Duration = Duration::from_secs(60);

/// How long a measure of the bytes in use waits for the key space's next durable commit.
const DURABLE_WAIT: Duration = Duration::from_secs(2);

impl MaintenanceService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx, in_use: Mutex::new(None) }
    }

    /// Bytes of the database in use: measured at most once a minute, and again after every
    /// compaction and defragmentation of this member's database, so `etcdctl endpoint status`
    /// right after either shows what they gave back. The file size when it cannot be measured.
    async fn size_in_use(&self, file_size: u64) -> u64 {
        let compact_revision = self.ctx.kv.compact_revision().ok();
        let cached = *self.in_use.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = cached
            && m.at.elapsed() < IN_USE_FRESH
            && Some(m.compact_revision) == compact_revision
        {
            return m.bytes;
        }
        // Pages a compaction freed count as free only after a durable commit of the key
        // space, which the Raft loop makes within about a tenth of a second.
        if let Ok(applied) = self.ctx.kv.applied_index() {
            let durable = self.ctx.kv.durable_up_to(applied);
            if tokio::time::timeout(DURABLE_WAIT, durable).await.is_err() {
                warn!(
                    applied,
                    "the key space was not made durable in time; dbSizeInUse may count freed pages"
                );
            }
        }
        let store = self.ctx.store.clone();
        match tokio::task::spawn_blocking(move || store.measure_size_in_use()).await {
            Ok(Ok(bytes)) => {
                if let Some(compact_revision) = compact_revision {
                    let measure = InUse { at: Instant::now(), compact_revision, bytes };
                    *self.in_use.lock().unwrap_or_else(PoisonError::into_inner) = Some(measure);
                }
                bytes
            }
            _ => file_size,
        }
    }

    /// Status's `errors`: one line per raised alarm, in etcd's text form
    /// (`memberID:<id> alarm:NOSPACE `), which `etcdctl endpoint status` shows.
    fn alarm_errors(&self) -> Vec<String> {
        let alarms = self.ctx.kv.alarms().unwrap_or_default();
        alarms
            .iter()
            .map(|a| {
                let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                format!("memberID:{} alarm:{name} ", a.member_id)
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// Lists, raises or clears alarms. Raising and clearing go through the log (every member
    /// then refuses the same requests); a list is read after a read-index barrier, so it shows
    /// every alarm raised before it was asked.
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = request.into_inner();
        if req.action() == alarm_request::AlarmAction::Get {
            self.ctx.linearizable_barrier().await?;
            let alarms = self.ctx.kv.alarms().map_err(|e| EtcdError::Internal(e.to_string()))?;
            return Ok(Response::new(AlarmResponse { header: Some(self.ctx.current_header()), alarms }));
        }
        let applied = self.ctx.propose(Write::Alarm(req)).await?;
        match applied.outcome {
            Outcome::Alarm(mut resp) => {
                resp.header = Some(self.ctx.header(applied.revision));
                Ok(Response::new(resp))
            }
            Outcome::Rejected(e) => Err(EtcdError::from(&e).into()),
            _ => Err(EtcdError::Internal("unexpected apply result".into()).into()),
        }
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let st = self.ctx.node.status();
        let file_size = self.ctx.store.file_size().unwrap_or(0);
        let db_size = file_size as i64;
        let db_size_in_use = self.size_in_use(file_size).await as i64;
        Ok(Response::new(StatusResponse {
            header: Some(self.ctx.current_header()),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: st.leader_id.unwrap_or(0),
            raft_index: st.commit,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors: self.alarm_errors(),
            db_size_in_use,
            is_learner: st.learners.contains(&st.id),
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let store = self.ctx.store.clone();
        let done = tokio::task::spawn_blocking(move || store.defragment());
        // Whatever the outcome, the file may have been swapped: the next Status measures anew.
        let done = done.await;
        *self.in_use.lock().unwrap_or_else(PoisonError::into_inner) = None;
        done.map_err(|e| EtcdError::Internal(e.to_string()))?
            .map_err(|e| EtcdError::Internal(format!("defragment: {e}")))?;
        Ok(Response::new(DefragmentResponse { header: Some(self.ctx.current_header()) }))
    }

    /// This member's hash of its whole replicated state (no barrier: it is a question about
    /// this member's copy, as in etcd).
    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let hash = self.ctx.kv.hash_all().map_err(|e| EtcdError::Internal(e.to_string()))?;
        Ok(Response::new(HashResponse { header: Some(self.ctx.current_header()), hash }))
    }

    /// This member's hash of the key space's history up to a revision.
    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let h = self.ctx.kv.hash_kv(request.get_ref().revision).map_err(|e| EtcdError::from(&e))?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.ctx.current_header()),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    type SnapshotStream = backup_stream::SnapshotStream;

    /// A backup of this member's state as of now (`etcdctl snapshot save`; restore it with
    /// `kvnode snapshot restore`). Served locally, as etcd does: ask a member that is caught up.
    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let estimate = self.ctx.store.file_size().unwrap_or(0);
        Ok(Response::new(backup_stream::stream(
            self.ctx.kv.clone(),
            self.ctx.member_id,
            ETCD_API_VERSION,
            self.ctx.current_header(),
            estimate,
        )))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let st = self.ctx.node.status();
        if !st.is_leader {
            return Err(EtcdError::NotLeader.into());
        }
        if target == st.id {
            return Ok(Response::new(MoveLeaderResponse { header: Some(self.ctx.current_header()) }));
        }
        if !st.voters.contains(&target) {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        self.ctx
            .node
            .transfer_leader(target)
            .await
            .map_err(|e: DriverError| Status::from(EtcdError::from(e)))?;
        // Wait, like etcd, until the target leads (or the transfer times out).
        let mut rx = self.ctx.node.subscribe();
        let wait = async {
            loop {
                if rx.borrow_and_update().leader_id == Some(target) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        let limit = self.ctx.limits.request_timeout.max(Duration::from_secs(1));
        match tokio::time::timeout(limit, wait).await {
            Ok(true) => Ok(Response::new(MoveLeaderResponse { header: Some(self.ctx.current_header()) })),
            _ => Err(EtcdError::Timeout.into()),
        }
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented(EtcdError::NotCapable.to_string()))
    }
}
