//! Raft's safety properties, checked incrementally as the simulation runs:
//! Election Safety, Log Matching, Leader Completeness, State Machine Safety, monotonic
//! commit/applied indexes, durability of acknowledged entries and linearizable ReadIndex;
//! and what clients of any member see: a proposal is acknowledged only once applied, no
//! proposal is applied twice, and one reported lost or refused never applies.

use std::collections::{BTreeMap, HashMap, HashSet};

use raft::ReadState;
use raft::pb::{ConfState, Entry, EntryType};

use super::state_machine::{entry_hash, mix};

pub type Violation = String;

/// A node's persisted log as chain hashes: the hash at index i covers entries 1..=i, so equal
/// chain hashes at an index mean equal logs up to it (the Log Matching property).
#[derive(Debug, Clone, Default)]
pub struct LogView {
    /// Index of `chain[0]`: the entry at the compaction point (or 0).
    offset: u64,
    chain: Vec<(u64, u64)>,
}

impl LogView {
    pub fn new() -> Self {
        Self { offset: 0, chain: vec![(0, 0)] }
    }

    pub fn last_index(&self) -> u64 {
        self.offset + self.chain.len() as u64 - 1
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// (term, chain hash) at `index`, if it is in the persisted, uncompacted log.
    pub fn at(&self, index: u64) -> Option<(u64, u64)> {
        let i = index.checked_sub(self.offset)?;
        self.chain.get(usize::try_from(i).ok()?).copied()
    }

    pub fn reset_to(&mut self, index: u64, term: u64, chain: u64) {
        self.offset = index;
        self.chain = vec![(term, chain)];
    }

    pub fn compact(&mut self, index: u64) {
        if index > self.offset && index <= self.last_index() {
            let drop = (index - self.offset) as usize;
            self.chain.drain(..drop);
            self.offset = index;
        }
    }

    /// Mirrors MemStorage::append: skip what is at or below the compaction point, truncate
    /// the conflicting suffix, append. Every new (index, term) is checked against every log.
    pub fn append(&mut self, entries: &[Entry], checker: &mut Checker) -> Result<(), Violation> {
        for e in entries {
            if e.index <= self.offset {
                continue;
            }
            if e.index > self.last_index() + 1 {
                return Err(format!("persisted entry {} leaves a gap after {}", e.index, self.last_index()));
            }
            self.chain.truncate((e.index - self.offset) as usize);
            let prev = self.chain.last().map_or(0, |c| c.1);
            let chain = mix(prev, entry_hash(e));
            checker.log_entry(e.index, e.term, chain)?;
            self.chain.push((e.term, chain));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Checker {
    pub leader_of_term: HashMap<u64, u64>,
    /// (index, term) -> chain hash, over every log of every node ever.
    chain_of: HashMap<(u64, u64), u64>,
    /// index -> (term, chain hash) of the entry applied there.
    applied: BTreeMap<u64, (u64, u64)>,
    /// index -> state machine hash after applying it.
    sm_hash_at: HashMap<u64, u64>,
    /// index -> a term by which the entry was known committed (an upper bound of the term
    /// it was committed in).
    commit_term: BTreeMap<u64, u64>,
    /// Membership after each applied conf change.
    pub conf_at: BTreeMap<u64, ConfState>,
    /// Highest index applied (and so acknowledged to a client) anywhere.
    pub max_acked: u64,
    pending_reads: HashMap<Vec<u8>, u64>,
    pub reads_confirmed: u64,
    pub leaders_elected: u64,
    /// Leaders elected since the simulation last looked (for its trace).
    pub new_leaders: Vec<(u64, u64)>,
    /// Index at which each client proposal (normal entry with data) was applied, to check
    /// that accepted proposals were applied, and applied once.
    pub applied_data: HashMap<Vec<u8>, u64>,
    /// Proposals whose clients were told they failed (refused, or lost with their term).
    failed: HashSet<Vec<u8>>,
    /// Proposals acknowledged to their clients, and how many of them were forwarded.
    pub acked: u64,
    pub acked_forwarded: u64,
    /// Proposals reported failed, refused by a leader among them.
    pub failed_count: u64,
    pub refused: u64,
}

impl Checker {
    /// Election Safety: at most one leader per term.
    pub fn leader(&mut self, term: u64, id: u64) -> Result<(), Violation> {
        match self.leader_of_term.insert(term, id) {
            Some(other) if other != id => Err(format!("two leaders in term {term}: {other} and {id}")),
            Some(_) => Ok(()),
            None => {
                self.leaders_elected += 1;
                self.new_leaders.push((term, id));
                Ok(())
            }
        }
    }

    fn log_entry(&mut self, index: u64, term: u64, chain: u64) -> Result<(), Violation> {
        match self.chain_of.insert((index, term), chain) {
            Some(other) if other != chain => {
                Err(format!("log matching: two different logs hold an entry of term {term} at {index}"))
            }
            _ => Ok(()),
        }
    }

    pub fn chain_of(&self, index: u64, term: u64) -> Option<u64> {
        self.chain_of.get(&(index, term)).copied()
    }

    /// State Machine Safety: nobody applies a different entry at an index.
    pub fn applied(
        &mut self,
        node: u64,
        e: &Entry,
        chain: u64,
        sm_hash: u64,
        node_term: u64,
    ) -> Result<(), Violation> {
        if let Some(&(t, c)) = self.applied.get(&e.index) {
            if (t, c) != (e.term, chain) {
                return Err(format!(
                    "state machine safety: node {node} applied (term {}) at {} where (term {t}) was applied",
                    e.term, e.index
                ));
            }
        } else {
            self.applied.insert(e.index, (e.term, chain));
            self.commit_term.insert(e.index, node_term);
            let is_proposal = e.entry_type == EntryType::EntryNormal as i32 && !e.data.is_empty();
            if is_proposal {
                if let Some(other) = self.applied_data.insert(e.data.clone(), e.index) {
                    return Err(format!(
                        "proposal {:?} applied twice: at {other} and at {}",
                        String::from_utf8_lossy(&e.data),
                        e.index
                    ));
                }
                if self.failed.contains(&e.data) {
                    return Err(format!(
                        "proposal {:?} was reported failed to its client but applied at {}",
                        String::from_utf8_lossy(&e.data),
                        e.index
                    ));
                }
            }
        }
        self.sm_state(node, e.index, sm_hash)?;
        self.max_acked = self.max_acked.max(e.index);
        Ok(())
    }

    /// Two state machines at the same index must be identical.
    pub fn sm_state(&mut self, node: u64, index: u64, hash: u64) -> Result<(), Violation> {
        match self.sm_hash_at.insert(index, hash) {
            Some(h) if h != hash => {
                Err(format!("state machine of node {node} at {index} differs from another's"))
            }
            _ => Ok(()),
        }
    }

    /// Leader Completeness, checked when a new leader persists its no-op: its log holds every
    /// entry known committed in an earlier term.
    pub fn leader_completeness(
        &self,
        node: u64,
        term: u64,
        noop_index: u64,
        log: &LogView,
    ) -> Result<(), Violation> {
        let Some((&j, _)) = self.commit_term.iter().rev().find(|(_, ct)| **ct < term) else { return Ok(()) };
        if j >= noop_index {
            return Err(format!(
                "leader completeness: leader {node} of term {term} put its no-op at {noop_index}, below committed {j}"
            ));
        }
        if j < log.offset() {
            return Ok(()); // compacted: this node applied it, State Machine Safety covers it
        }
        let want = self.applied.get(&j).map(|a| a.1);
        match log.at(j) {
            Some((_, chain)) if Some(chain) == want => Ok(()),
            _ => Err(format!("leader completeness: leader {node} of term {term} lacks committed entry {j}")),
        }
    }

    pub fn conf_applied(&mut self, node: u64, index: u64, cs: ConfState) -> Result<(), Violation> {
        let mut cs = cs;
        cs.voters.sort_unstable();
        cs.learners.sort_unstable();
        match self.conf_at.insert(index, cs.clone()) {
            Some(other) if other != cs => Err(format!(
                "node {node} reached configuration {cs:?} at {index} where another reached {other:?}"
            )),
            _ => Ok(()),
        }
    }

    /// A member answered its client: the proposal applied there.
    pub fn proposal_acked(&mut self, node: u64, data: &[u8], forwarded: bool) -> Result<(), Violation> {
        if !self.applied_data.contains_key(data) {
            return Err(format!(
                "node {node} acknowledged {:?}, which no member applied",
                String::from_utf8_lossy(data)
            ));
        }
        self.acked += 1;
        self.acked_forwarded += u64::from(forwarded);
        Ok(())
    }

    /// A member told its client the proposal failed: it must never apply, anywhere.
    pub fn proposal_failed(&mut self, node: u64, data: &[u8], refused: bool) -> Result<(), Violation> {
        if let Some(index) = self.applied_data.get(data) {
            return Err(format!(
                "node {node} reported {:?} failed, but it was applied at {index}",
                String::from_utf8_lossy(data)
            ));
        }
        self.failed.insert(data.to_vec());
        self.failed_count += 1;
        self.refused += u64::from(refused);
        Ok(())
    }

    pub fn read_requested(&mut self, ctx: Vec<u8>) {
        self.pending_reads.insert(ctx, self.max_acked);
    }

    pub fn read_requested_cancel(&mut self, ctx: &[u8]) {
        self.pending_reads.remove(ctx);
    }

    /// Linearizable reads: the read point covers every write acknowledged before the read.
    pub fn read_confirmed(&mut self, node: u64, rs: &ReadState) -> Result<(), Violation> {
        let Some(floor) = self.pending_reads.remove(&rs.request_ctx) else {
            return Err(format!("node {node} confirmed a read nobody asked for (or twice)"));
        };
        if rs.index < floor {
            return Err(format!(
                "stale read on node {node}: read index {} but {floor} was acknowledged before",
                rs.index
            ));
        }
        self.reads_confirmed += 1;
        Ok(())
    }

    /// The latest committed membership.
    pub fn latest_conf(&self) -> Option<&ConfState> {
        self.conf_at.values().next_back()
    }
}
