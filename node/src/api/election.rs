//! etcd's `Election` service (v3electionpb): Campaign, Proclaim, Leader, Observe, Resign.
//!
//! The leader of election N is the candidate whose key under `N/` was created first; its value
//! is what the leader proclaims. Campaign puts the caller's key `N/<lease hex>` with its value
//! and waits until every older candidate's key is gone. A leader is named by its key and the
//! key's create revision, so a Proclaim or Resign of a leadership already lost does nothing.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::{ResponseHeader, TxnRequest};
use crate::proto::mvccpb::KeyValue;
use crate::proto::mvccpb::event::EventType;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::watch::WatchRange;

use super::errors::EtcdError;
use super::recipes::{
    Recipes, Watched, created_at, one_key, op_delete, op_get, op_put, prefix_end, txn_read, waiter_key,
    waiters_prefix,
};

/// The Election service of one member.
pub struct ElectionService {
    recipes: Arc<Recipes>,
}

impl ElectionService {
    pub fn new(recipes: Arc<Recipes>) -> Self {
        Self { recipes }
    }
}

/// Puts a new value on the leader's key if it is still the same leadership.
async fn proclaim(
    recipes: &Recipes,
    leader: &LeaderKey,
    value: Vec<u8>,
) -> Result<ResponseHeader, EtcdError> {
    let lease = recipes.session_lease(leader.lease).await?;
    let txn = TxnRequest::new(
        vec![created_at(&leader.key, leader.rev)],
        vec![op_put(&leader.key, value, lease)],
        Vec::new(),
    );
    let resp = recipes.txn(txn).await?;
    if !resp.succeeded {
        return Err(EtcdError::ElectionNotLeader);
    }
    Ok(resp.header.unwrap_or_default())
}

/// Deletes the leader's key if it is still the same leadership (otherwise nothing happens).
async fn resign(recipes: &Recipes, key: &[u8], rev: i64) -> Result<ResponseHeader, EtcdError> {
    let txn = TxnRequest::new(vec![created_at(key, rev)], vec![op_delete(key)], Vec::new());
    Ok(recipes.txn(txn).await?.header.unwrap_or_default())
}

/// Resigns a candidacy whose Campaign the caller abandoned (the RPC dropped), so it does not
/// become leader with nobody to act on it.
struct ResignOnDrop {
    recipes: Arc<Recipes>,
    candidacy: Option<(Vec<u8>, i64)>,
}

impl ResignOnDrop {
    fn disarm(mut self) {
        self.candidacy = None;
    }
}

impl Drop for ResignOnDrop {
    fn drop(&mut self) {
        if let Some((key, rev)) = self.candidacy.take() {
            let recipes = self.recipes.clone();
            tokio::spawn(async move {
                if let Err(e) = resign(&recipes, &key, rev).await {
                    tracing::debug!(error = %e, "could not withdraw an abandoned candidacy");
                }
            });
        }
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

/// Tells `out` the leader now and after every proclamation or change of leader, until the
/// caller goes away.
async fn observe(recipes: Arc<Recipes>, name: Vec<u8>, out: mpsc::Sender<Result<LeaderResponse, Status>>) {
    let caller = out.clone();
    tokio::select! {
        _ = caller.closed() => {}
        _ = tell_leaders(recipes, name, out) => {}
    }
}

async fn tell_leaders(
    recipes: Arc<Recipes>,
    name: Vec<u8>,
    out: mpsc::Sender<Result<LeaderResponse, Status>>,
) {
    let prefix = waiters_prefix(&name);
    loop {
        let leader = match current_or_next_leader(&recipes, &prefix).await {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(e) => {
                let _ = out.send(Err(e.into())).await;
                return;
            }
        };
        let (header, kv) = leader;
        let from = header.revision + 1;
        let key = kv.key.clone();
        if out.send(Ok(LeaderResponse { header: Some(header), kv: Some(kv) })).await.is_err() {
            return;
        }
        if let Err(e) = follow_leader(&recipes, key, from, &out).await {
            let _ = out.send(Err(e.into())).await;
            return;
        }
    }
}

/// The leader now, or if there is none the first candidate to appear (`None`: look again).
async fn current_or_next_leader(
    recipes: &Recipes,
    prefix: &[u8],
) -> Result<Option<(ResponseHeader, KeyValue)>, EtcdError> {
    let now = recipes.first_created(prefix).await?;
    let header = now.header.unwrap_or_default();
    if let Some(kv) = now.kvs.into_iter().next() {
        return Ok(Some((header, kv)));
    }
    let range = WatchRange::Between(prefix.to_vec(), prefix_end(prefix));
    let mut watch = recipes.watch(range, header.revision).await?;
    loop {
        match watch.next().await? {
            Watched::Events { revision, events } => {
                let put = events.into_iter().find(|e| e.r#type == EventType::Put as i32).and_then(|e| e.kv);
                if let Some(kv) = put {
                    let header = ResponseHeader { revision: kv.mod_revision, ..recipes.header(revision) };
                    return Ok(Some((header, kv)));
                }
            }
            Watched::Compacted => return Ok(None),
        }
    }
}

/// Sends every new value of the leader's key until it is deleted (or the caller goes away).
async fn follow_leader(
    recipes: &Recipes,
    key: Vec<u8>,
    from: i64,
    out: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), EtcdError> {
    let mut watch = recipes.watch(WatchRange::Key(key), from).await?;
    loop {
        let (revision, events) = match watch.next().await? {
            Watched::Events { revision, events } => (revision, events),
            Watched::Compacted => return Ok(()),
        };
        for event in events {
            if event.r#type == EventType::Delete as i32 {
                return Ok(());
            }
            let resp = LeaderResponse { header: Some(recipes.header(revision)), kv: event.kv };
            if out.send(Ok(resp)).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let req = request.into_inner();
        let recipes = &self.recipes;
        let lease = recipes.session_lease(req.lease).await?;
        let prefix = waiters_prefix(&req.name);
        let key = waiter_key(&prefix, lease);
        let enter = TxnRequest::new(
            vec![created_at(&key, 0)],
            vec![op_put(&key, req.value.clone(), lease)],
            vec![op_get(one_key(&key))],
        );
        let entered = recipes.txn(enter).await?;
        let mut rev = entered.header.as_ref().map_or(0, |h| h.revision);
        if !entered.succeeded {
            // This lease already campaigns: keep its place, with the value asked for now.
            let existing = txn_read(&entered, 0).cloned().unwrap_or_default();
            rev = existing.create_revision;
            if existing.value != req.value {
                let leader = LeaderKey { name: req.name.clone(), key: key.clone(), rev, lease };
                if let Err(e) = proclaim(recipes, &leader, req.value.clone()).await {
                    let _ = resign(recipes, &key, rev).await;
                    return Err(e.into());
                }
            }
        }
        let guard = ResignOnDrop { recipes: recipes.clone(), candidacy: Some((key.clone(), rev)) };
        let waited = recipes.wait_deletes(&prefix, rev - 1).await;
        guard.disarm();
        waited?;
        Ok(Response::new(CampaignResponse {
            header: entered.header,
            leader: Some(LeaderKey { name: req.name, key, rev, lease }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let req = request.into_inner();
        let leader = req.leader.ok_or(EtcdError::MissingLeaderKey)?;
        let header = proclaim(&self.recipes, &leader, req.value).await?;
        Ok(Response::new(ProclaimResponse { header: Some(header) }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let prefix = waiters_prefix(&request.into_inner().name);
        let found = self.recipes.first_created(&prefix).await?;
        let kv = found.kvs.into_iter().next().ok_or(EtcdError::ElectionNoLeader)?;
        Ok(Response::new(LeaderResponse { header: found.header, kv: Some(kv) }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<ObserveStream>, Status> {
        let (out, rx) = mpsc::channel(16);
        tokio::spawn(observe(self.recipes.clone(), request.into_inner().name, out));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let leader = request.into_inner().leader.ok_or(EtcdError::MissingLeaderKey)?;
        let header = resign(&self.recipes, &leader.key, leader.rev).await?;
        Ok(Response::new(ResignResponse { header: Some(header) }))
    }
}
