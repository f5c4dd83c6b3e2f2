//! etcd's `Lock` service (v3lockpb): Lock and Unlock.
//!
//! A lock named N is held by the waiter whose key under `N/` was created first. Lock puts the
//! caller's key `N/<lease hex>` (attached to its lease) and waits until every older waiter's key
//! is gone; the caller then holds the lock until it deletes the key (Unlock) or its lease ends.
//! Holders fence their writes by comparing the key's create revision in a transaction.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::TxnRequest;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

use super::errors::EtcdError;
use super::recipes::{
    Recipes, created_at, first_created_op, one_key, op_get, op_put, txn_read, waiter_key, waiters_prefix,
};

/// The Lock service of one member.
pub struct LockService {
    recipes: Arc<Recipes>,
}

impl LockService {
    pub fn new(recipes: Arc<Recipes>) -> Self {
        Self { recipes }
    }
}

/// Deletes a waiter's key unless disarmed: a Lock that fails or is abandoned by its caller
/// (the RPC dropped) must leave the queue, or it would block every later waiter until its
/// lease expires.
struct LeaveQueueOnDrop {
    recipes: Arc<Recipes>,
    key: Option<Vec<u8>>,
}

impl LeaveQueueOnDrop {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for LeaveQueueOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let recipes = self.recipes.clone();
            tokio::spawn(async move {
                if let Err(e) = recipes.delete(key).await {
                    tracing::debug!(error = %e, "could not remove an abandoned lock waiter");
                }
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let req = request.into_inner();
        let recipes = &self.recipes;
        let lease = recipes.session_lease(req.lease).await?;
        let prefix = waiters_prefix(&req.name);
        let key = waiter_key(&prefix, lease);
        // Join the queue, or find this lease already in it (it then keeps its place).
        let join = TxnRequest::new(
            vec![created_at(&key, 0)],
            vec![op_put(&key, Vec::new(), lease), first_created_op(&prefix)],
            vec![op_get(one_key(&key)), first_created_op(&prefix)],
        );
        let joined = recipes.txn(join).await?;
        let my_revision = if joined.succeeded {
            joined.header.as_ref().map_or(0, |h| h.revision)
        } else {
            txn_read(&joined, 0).map_or(0, |kv| kv.create_revision)
        };
        let holder = txn_read(&joined, 1).map(|kv| kv.create_revision);
        if holder.is_none_or(|rev| rev == my_revision) {
            return Ok(Response::new(LockResponse { header: joined.header, key }));
        }

        let guard = LeaveQueueOnDrop { recipes: recipes.clone(), key: Some(key.clone()) };
        recipes.wait_deletes(&prefix, my_revision - 1).await?;
        // The key may have gone with its lease while waiting.
        let mine = recipes.get(one_key(&key)).await?;
        guard.disarm();
        if mine.kvs.is_empty() {
            return Err(EtcdError::SessionExpired.into());
        }
        Ok(Response::new(LockResponse { header: mine.header, key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let deleted = self.recipes.delete(request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header: deleted.header }))
    }
}
