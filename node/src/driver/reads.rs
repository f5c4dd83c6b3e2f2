//! Linearizable reads (etcd's linearizable read loop): every read waiting when a turn starts
//! shares one read index request, on the leader as on a follower (which asks the leader inside
//! Raft); once the index comes back, the reads wait until this member has applied that far.
//!
//! Reads are idempotent, so a request whose answer does not come (a lost message, a leader
//! that changed or vanished) is simply asked again: after [`READ_RETRY`], or at once when the
//! leader changes. Clients that gave up are forgotten on the way.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::raft::{RaftError, RawNode, ReadState, Storage};

use super::error::{DriverError, FatalError};
use super::handle::Reply;

/// How long a read index request may go unanswered before it is asked again (etcd's
/// `readIndexRetryTime`).
pub(crate) const READ_RETRY: Duration = Duration::from_millis(500);

struct Asked {
    batch: Vec<Reply<u64>>,
    at: Instant,
}

/// Reads between their arrival and their answer.
#[derive(Default)]
pub(crate) struct Reads {
    /// Not yet asked for.
    queued: Vec<Reply<u64>>,
    /// Asked for, by request context.
    asked: HashMap<u64, Asked>,
    /// With a known read index, waiting for this member to apply it.
    waiting_apply: BTreeMap<u64, Vec<Reply<u64>>>,
    next_ctx: u64,
}

impl Reads {
    pub(crate) fn push(&mut self, reply: Reply<u64>) {
        self.queued.push(reply);
    }

    /// Asks the core for one read index covering every queued read, and again for those asked
    /// long ago without an answer. Without a known leader they stay queued for the next turn.
    pub(crate) fn issue<S: Storage>(
        &mut self,
        node: &mut RawNode<S>,
        now: Instant,
    ) -> Result<(), FatalError> {
        let overdue: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, a)| now.duration_since(a.at) >= READ_RETRY)
            .map(|(c, _)| *c)
            .collect();
        for ctx in overdue {
            if let Some(a) = self.asked.remove(&ctx) {
                self.queued.extend(a.batch);
            }
        }
        self.queued.retain(|r| !r.is_closed());
        if self.queued.is_empty() {
            return Ok(());
        }
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        match node.read_index(ctx.to_be_bytes().to_vec()) {
            Ok(()) => {
                let batch = std::mem::take(&mut self.queued);
                self.asked.insert(ctx, Asked { batch, at: now });
                Ok(())
            }
            Err(RaftError::Storage(e)) => Err(e.into()),
            // No leader known: nothing was sent; ask again next turn.
            Err(_) => Ok(()),
        }
    }

    /// The core confirmed a read index.
    pub(crate) fn confirmed(&mut self, rs: ReadState) {
        let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else { return };
        if let Some(a) = self.asked.remove(&u64::from_be_bytes(ctx)) {
            self.waiting_apply.entry(rs.index).or_default().extend(a.batch);
        }
    }

    /// The leader changed: whatever was asked of the old one is asked of the new one.
    pub(crate) fn leader_changed(&mut self) {
        for (_, a) in self.asked.drain() {
            self.queued.extend(a.batch);
        }
    }

    /// Answers the reads whose index this member has applied.
    pub(crate) fn applied(&mut self, applied: u64) {
        let later = self.waiting_apply.split_off(&(applied + 1));
        for (index, batch) in std::mem::replace(&mut self.waiting_apply, later) {
            for reply in batch {
                let _ = reply.send(Ok(index));
            }
        }
    }

    pub(crate) fn fail_all(&mut self, error: &DriverError) {
        let asked = self.asked.drain().flat_map(|(_, a)| a.batch);
        let waiting = std::mem::take(&mut self.waiting_apply).into_values().flatten();
        for reply in self.queued.drain(..).chain(asked).chain(waiting) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Config, MemStorage, bootstrap};
    use tokio::sync::oneshot;

    /// Persists, applies and advances every Ready, as a driver would.
    fn drive(n: &mut RawNode<MemStorage>) {
        while n.has_ready() {
            let rd = n.ready().expect("ready");
            n.storage().append(&rd.entries).expect("append");
            if let Some(hs) = rd.hard_state {
                n.storage().set_hard_state(hs);
            }
            for e in &rd.committed_entries {
                if e.entry_type == crate::proto::raftpb::EntryType::EntryConfChange as i32 {
                    let cc = <crate::proto::raftpb::ConfChange as prost::Message>::decode(e.data.as_slice())
                        .expect("conf change");
                    let cs = n.apply_conf_change(&cc).expect("apply");
                    n.storage().set_conf_state(cs);
                }
            }
            n.advance(rd).expect("advance");
        }
    }

    /// A single-member cluster whose member leads and has committed in its term.
    fn leader() -> RawNode<MemStorage> {
        let boot = bootstrap(&[1]).expect("bootstrap");
        let s = MemStorage::new();
        s.append(&boot.entries).expect("append");
        s.set_hard_state(boot.hard_state);
        let mut n = RawNode::new(&Config::new(1), s).expect("node");
        drive(&mut n);
        n.campaign().expect("campaign");
        drive(&mut n);
        n
    }

    #[test]
    fn reads_of_one_turn_share_one_request_and_wait_for_apply() {
        let mut node = leader();
        let mut reads = Reads::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        reads.push(a);
        reads.push(b);
        reads.issue(&mut node, Instant::now()).expect("issue");
        let rd = node.ready().expect("ready");
        assert_eq!(rd.read_states.len(), 1, "one request for both");
        let index = rd.read_states[0].index;
        for rs in rd.read_states.clone() {
            reads.confirmed(rs);
        }
        reads.applied(index - 1);
        assert!(a_rx.try_recv().is_err(), "not applied that far yet");
        reads.applied(index);
        assert_eq!(a_rx.try_recv().expect("answered").expect("ok"), index);
        assert_eq!(b_rx.try_recv().expect("answered").expect("ok"), index);
    }

    #[test]
    fn unanswered_reads_are_asked_again_and_closed_ones_forgotten() {
        let mut node = RawNode::new(&Config::new(2), MemStorage::new()).expect("node");
        let mut reads = Reads::default();
        let (a, mut a_rx) = oneshot::channel();
        let (gone, gone_rx) = oneshot::channel::<Result<u64, DriverError>>();
        reads.push(a);
        reads.push(gone);
        drop(gone_rx);
        // No leader known: nothing is asked, the read stays queued.
        reads.issue(&mut node, Instant::now()).expect("issue");
        assert!(reads.asked.is_empty());
        assert_eq!(reads.queued.len(), 1, "the abandoned read was dropped");
        reads.fail_all(&DriverError::Stopped);
        assert_eq!(a_rx.try_recv().expect("answered").unwrap_err(), DriverError::Stopped);
    }
}
