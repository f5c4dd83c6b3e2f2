//! The initial state of a brand-new cluster.
//!
//! Every founding member starts from the same log: one ADD_NODE conf change per founding
//! voter at term 1, already committed but not yet applied, and an empty membership. The
//! driver applies these entries like any others, so the membership at every index is the
//! same function of the log on every node, including a member that joins later and replays
//! the log from index 1.

use prost::Message as _;

use crate::pb::{ConfChange, ConfChangeType, Entry, EntryType, HardState};

use super::error::RaftError;

/// What a founding member persists (with an empty membership) before starting its node with
/// `applied = 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    /// Entries 1..=n: one committed ADD_NODE per founding voter.
    pub entries: Vec<Entry>,
    /// Term 1, no vote, commit n.
    pub hard_state: HardState,
}

/// The shared initial log of a cluster founded by `voters` (order does not matter).
pub fn bootstrap(voters: &[u64]) -> Result<Bootstrap, RaftError> {
    let members: Vec<(u64, Vec<u8>)> = voters.iter().map(|&id| (id, Vec::new())).collect();
    bootstrap_with_context(&members)
}

/// Like [`bootstrap`], with an opaque context per founding voter carried in its conf change
/// (the server stores each member's name and peer URLs there, so members that join later
/// learn them by replaying the log). Entries are ordered by id; a repeated id keeps its first
/// context.
pub fn bootstrap_with_context(voters: &[(u64, Vec<u8>)]) -> Result<Bootstrap, RaftError> {
    let mut members: Vec<&(u64, Vec<u8>)> = voters.iter().collect();
    members.sort_by_key(|(id, _)| *id);
    members.dedup_by_key(|(id, _)| *id);
    if members.is_empty() || members.iter().any(|(id, _)| *id == 0) {
        return Err(RaftError::InvalidConfig("bootstrap needs at least one voter and no id 0".into()));
    }
    let entries: Vec<Entry> = members
        .iter()
        .zip(1u64..)
        .map(|((id, context), index)| Entry {
            term: 1,
            index,
            entry_type: EntryType::EntryConfChange as i32,
            data: ConfChange {
                change_type: ConfChangeType::ConfChangeAddNode as i32,
                node_id: *id,
                context: context.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        })
        .collect();
    let commit = entries.len() as u64;
    Ok(Bootstrap { entries, hard_state: HardState { current_term: 1, voted_for: 0, commit } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_identical_for_every_member() {
        let a = bootstrap(&[3, 1, 2]).unwrap();
        let b = bootstrap(&[1, 2, 3, 2]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.entries.len(), 3);
        assert_eq!(a.hard_state.commit, 3);
        let cc = ConfChange::decode(a.entries[1].data.as_slice()).unwrap();
        assert_eq!(cc.node_id, 2);
        assert!(bootstrap(&[]).is_err());
        assert!(bootstrap(&[0, 1]).is_err());
    }
}
