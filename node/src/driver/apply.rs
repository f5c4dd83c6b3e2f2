//! Applying committed entries to the key space.
//!
//! Entries are decoded when the core hands them out, because a membership change must reach
//! the core (in log order) before the `Ready` that carried it is advanced. They then wait in a
//! queue until the key space can take them (not while a sync of it runs), and are applied in
//! one transaction per batch. An entry that does not decode stops the member: skipping it
//! would be consistent across members but would silently drop a write.

use std::collections::VecDeque;

use prost::Message as _;
use tracing::{info, warn};

use crate::proto::kvserverpb::{InternalRequest, Member};
use crate::proto::raftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType};
use crate::raft::{RaftError, RawNode, Storage};
use crate::storage::{ApplyResult, Command, KvStore, MemberChange};

use super::error::{DriverError, FatalError};

/// A committed entry, decoded for the key space.
enum Decoded {
    Noop,
    Request(InternalRequest),
    /// A membership change the core applied: the new membership and the table change.
    ConfChange {
        cc: ConfChange,
        conf_state: ConfState,
        change: MemberChange,
    },
    /// A membership change the core refused when applying it (the same on every member, e.g.
    /// one that would remove the last voter): applied as a no-op, its client told why.
    ConfChangeRefused {
        cc: ConfChange,
        error: RaftError,
    },
}

/// One entry applied to the key space, with what its proposer's client should hear.
pub(crate) struct Applied {
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// Encoded size of the entry's data (for the log compaction policy).
    pub(crate) bytes: u64,
    /// (member that proposed it, its request id) when a client waits somewhere.
    pub(crate) requester: Option<(u64, u64)>,
    pub(crate) result: Result<ApplyResult, DriverError>,
    /// The membership table changed (peers to connect to or drop).
    pub(crate) membership_change: Option<MemberChange>,
}

/// Committed entries on their way into the key space.
pub(crate) struct Applier {
    kv: KvStore,
    queue: VecDeque<(Entry, Decoded)>,
    /// The last index applied to the key space. The core's applied index runs ahead of it
    /// while entries wait here; reads, compaction and the published status use this one.
    applied: u64,
}

impl Applier {
    pub(crate) fn new(kv: KvStore, applied: u64) -> Self {
        Self { kv, queue: VecDeque::new(), applied }
    }

    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The key space was replaced by a snapshot at `index`.
    pub(crate) fn restored_to(&mut self, index: u64) {
        self.applied = index;
    }

    /// Takes committed entries from the core: decodes them, applying membership changes to
    /// the core now, in log order.
    pub(crate) fn hand_off<S: Storage>(
        &mut self,
        node: &mut RawNode<S>,
        entries: Vec<Entry>,
    ) -> Result<(), FatalError> {
        for entry in entries {
            let decoded = decode(node, &entry)?;
            self.queue.push_back((entry, decoded));
        }
        Ok(())
    }

    /// Applies every queued entry in one key-space transaction.
    pub(crate) fn apply_queued(&mut self) -> Result<Vec<Applied>, FatalError> {
        if self.queue.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<(Entry, Decoded)> = self.queue.drain(..).collect();
        let commands: Vec<(u64, Command<'_>)> = batch
            .iter()
            .map(|(e, d)| {
                let cmd = match d {
                    Decoded::Noop | Decoded::ConfChangeRefused { .. } => Command::Noop,
                    Decoded::Request(r) => Command::Request(r),
                    Decoded::ConfChange { conf_state, change, .. } => {
                        Command::ConfChange { conf_state, change }
                    }
                };
                (e.index, cmd)
            })
            .collect();
        let results = self.kv.apply_batch(&commands)?;
        if let Some((last, _)) = batch.last() {
            self.applied = self.applied.max(last.index);
        }
        Ok(results
            .into_iter()
            .zip(batch)
            .map(|(result, (entry, decoded))| applied(entry, decoded, result))
            .collect())
    }
}

fn applied(entry: Entry, decoded: Decoded, result: ApplyResult) -> Applied {
    let (requester, result, membership_change) = match decoded {
        Decoded::Noop => (None, Ok(result), None),
        Decoded::Request(r) => (Some((r.proposer, r.id)), Ok(result), None),
        Decoded::ConfChange { cc, change, .. } => {
            (Some((cc.proposer, cc.request_id)), Ok(result), Some(change))
        }
        Decoded::ConfChangeRefused { cc, error } => {
            (Some((cc.proposer, cc.request_id)), Err(DriverError::Refused(error)), None)
        }
    };
    let requester = requester.filter(|(proposer, id)| *proposer != 0 && *id != 0);
    Applied {
        index: entry.index,
        term: entry.term,
        bytes: entry.data.len() as u64,
        requester,
        result,
        membership_change,
    }
}

fn decode<S: Storage>(node: &mut RawNode<S>, entry: &Entry) -> Result<Decoded, FatalError> {
    let undecodable = |source| FatalError::UndecodableEntry { index: entry.index, source };
    match entry.entry_type() {
        EntryType::EntryNormal if entry.data.is_empty() => Ok(Decoded::Noop),
        EntryType::EntryNormal => {
            Ok(Decoded::Request(InternalRequest::decode(entry.data.as_slice()).map_err(undecodable)?))
        }
        EntryType::EntryConfChange => {
            let cc = ConfChange::decode(entry.data.as_slice()).map_err(undecodable)?;
            match node.apply_conf_change(&cc) {
                Ok(conf_state) => {
                    let change = member_change(&cc);
                    info!(
                        index = entry.index,
                        node = format!("{:x}", cc.node_id),
                        change = ?cc.change_type(),
                        voters = ?conf_state.voters,
                        learners = ?conf_state.learners,
                        "membership changed"
                    );
                    Ok(Decoded::ConfChange { cc, conf_state, change })
                }
                Err(RaftError::Storage(e)) => Err(e.into()),
                Err(error) => {
                    warn!(index = entry.index, %error, "membership change refused by the core");
                    Ok(Decoded::ConfChangeRefused { cc, error })
                }
            }
        }
    }
}

/// The membership-table change a Raft membership change implies. The record comes from the
/// change's context; the store keeps a record's published name and URLs where the context has
/// none (a promotion carries only what the proposer knew).
fn member_change(cc: &ConfChange) -> MemberChange {
    let kind = cc.change_type();
    if kind == ConfChangeType::ConfChangeRemoveNode {
        return MemberChange::Remove(cc.node_id);
    }
    let mut member = Member::decode(cc.context.as_slice()).unwrap_or_default();
    member.id = cc.node_id;
    member.is_learner = kind == ConfChangeType::ConfChangeAddLearnerNode;
    MemberChange::Upsert(member)
}
