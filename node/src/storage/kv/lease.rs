//! Leases in the replicated state: granted, revoked and checkpointed by applying log entries,
//! so every member holds the same leases and attachments. A lease's clock is not here (only
//! the leader's lessor keeps time); what is here is what a new leader restarts it from.

use prost::Message;
use redb::ReadableTable;

use crate::proto::etcdserverpb::{
    LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
};
use crate::proto::kvserverpb::LeaseRecord;
use crate::storage::error::{KvError, StoreError};

use super::effects::LeaseChange;
use super::write::Writer;

/// A lease with the keys attached to it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedKeys {
    pub record: LeaseRecord,
    /// In key order; empty unless asked for.
    pub keys: Vec<Vec<u8>>,
}

pub(crate) fn decode_lease(bytes: &[u8]) -> Result<LeaseRecord, StoreError> {
    LeaseRecord::decode(bytes).map_err(|e| StoreError::decode("leases", e))
}

impl Writer<'_> {
    /// Grants a lease with the id and TTL the proposer chose (it raised the TTL to the cluster's
    /// minimum before proposing, so every member stores the same).
    pub(crate) fn lease_grant(&mut self, req: &LeaseGrantRequest) -> Result<LeaseGrantResponse, KvError> {
        if self.leases.get(req.id)?.is_some() {
            return Err(KvError::LeaseExists);
        }
        let record = LeaseRecord { id: req.id, ttl: req.ttl, remaining_ttl: 0 };
        self.leases.insert(req.id, record.encode_to_vec().as_slice())?;
        self.lease_changes.push(LeaseChange::Granted { id: req.id, ttl: req.ttl });
        Ok(LeaseGrantResponse { header: self.header(), id: req.id, ttl: req.ttl, error: String::new() })
    }

    /// Revokes a lease: every key attached to it is deleted, all at one revision (so a watcher
    /// sees them go together), then the lease.
    pub(crate) fn lease_revoke(&mut self, req: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse, KvError> {
        if self.leases.get(req.id)?.is_none() {
            return Err(KvError::LeaseNotFound);
        }
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for item in self.lease_keys.range((req.id, &[][..])..)? {
            let (k, _) = item?;
            let (lease, key) = k.value();
            if lease != req.id {
                break;
            }
            keys.push(key.to_vec());
        }
        for key in &keys {
            self.delete_key(key)?;
        }
        self.leases.remove(req.id)?;
        self.lease_changes.push(LeaseChange::Revoked { id: req.id });
        Ok(LeaseRevokeResponse { header: self.header() })
    }

    /// Records the remaining TTLs a leader measured, so that a restart or a new leader does not
    /// give the leases their whole TTL again. Leases gone meanwhile are skipped.
    pub(crate) fn lease_checkpoint(&mut self, req: &LeaseCheckpointRequest) -> Result<(), StoreError> {
        for cp in &req.checkpoints {
            let Some(stored) = self.leases.get(cp.id)? else { continue };
            let mut record = decode_lease(stored.value())?;
            drop(stored);
            record.remaining_ttl = cp.remaining_ttl;
            self.leases.insert(cp.id, record.encode_to_vec().as_slice())?;
            self.lease_changes.push(LeaseChange::Checkpointed { id: cp.id, remaining_ttl: cp.remaining_ttl });
        }
        Ok(())
    }
}
