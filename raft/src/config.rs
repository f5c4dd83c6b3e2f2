//! Tunables of one Raft node.

use super::error::RaftError;

/// Configuration of a [`RawNode`](super::RawNode). Times are counted in ticks: the driver
/// decides how long a tick is, so the core stays free of clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0 (0 means "nobody" in votes and leader hints).
    pub id: u64,
    /// Base election timeout. A follower campaigns after a random timeout in
    /// `[election_tick, 2 * election_tick)` without hearing from a leader.
    pub election_tick: usize,
    /// A leader sends heartbeats every `heartbeat_tick` ticks; must be below `election_tick`.
    pub heartbeat_tick: usize,
    /// Run a pre-vote round before a real election, so that a node that was partitioned
    /// away cannot force the healthy majority into a new term.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an election timeout,
    /// and voters ignore elections while they hear from a live leader.
    pub check_quorum: bool,
    /// Upper bound on the encoded size of entries in one AppendEntries message (at least one
    /// entry is always sent).
    pub max_size_per_msg: u64,
    /// How many AppendEntries messages may be in flight to one follower while replicating.
    pub max_inflight_msgs: usize,
    /// Bytes of snapshot data per InstallSnapshot chunk.
    pub snapshot_chunk_size: usize,
    /// The last index the driver's state machine has applied (set on restart so entries are
    /// not applied twice).
    pub applied: u64,
    /// Seed of the core's PRNG (election timeouts). Mixed with `id` so that peers started
    /// with the same seed still draw different timeouts.
    pub seed: u64,
    /// Sequence number of the first batch of proposals this node forwards to a leader. It must
    /// exceed every one used before a restart (the server takes the wall clock in
    /// nanoseconds), because a leader drops batches at or below the last it accepted from a
    /// sender in its term: that is how a duplicated message never appends twice.
    pub forward_seq_base: u64,
    /// Refuse membership changes after which fewer voters than a quorum are members the
    /// leader hears from, and promotions of learners that are behind (etcd's
    /// `--strict-reconfig-check`, on by default).
    pub strict_reconfig_check: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            id: 0,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            snapshot_chunk_size: 1024 * 1024,
            applied: 0,
            seed: 0,
            forward_seq_base: 1,
            strict_reconfig_check: true,
        }
    }
}

impl Config {
    /// A default configuration for node `id`.
    pub fn new(id: u64) -> Self {
        Self { id, ..Self::default() }
    }

    /// Rejects configurations under which the algorithm cannot work (no id, heartbeats no
    /// more frequent than elections, empty windows).
    pub fn validate(&self) -> Result<(), RaftError> {
        if self.id == 0 {
            return Err(RaftError::InvalidConfig("id must not be 0".into()));
        }
        if self.heartbeat_tick == 0 {
            return Err(RaftError::InvalidConfig("heartbeat_tick must be greater than 0".into()));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(RaftError::InvalidConfig("election_tick must be greater than heartbeat_tick".into()));
        }
        if self.max_inflight_msgs == 0 {
            return Err(RaftError::InvalidConfig("max_inflight_msgs must be greater than 0".into()));
        }
        if self.snapshot_chunk_size == 0 {
            return Err(RaftError::InvalidConfig("snapshot_chunk_size must be greater than 0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_unusable_configs() {
        assert!(Config::new(1).validate().is_ok());
        assert!(Config::new(0).validate().is_err());
        assert!(Config { heartbeat_tick: 0, ..Config::new(1) }.validate().is_err());
        assert!(Config { election_tick: 1, heartbeat_tick: 1, ..Config::new(1) }.validate().is_err());
        assert!(Config { max_inflight_msgs: 0, ..Config::new(1) }.validate().is_err());
        assert!(Config { snapshot_chunk_size: 0, ..Config::new(1) }.validate().is_err());
    }
}
