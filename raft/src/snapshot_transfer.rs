//! Chunked, resumable InstallSnapshot: the leader's sending cursor and the follower's buffer.
//!
//! The leader sends one chunk at a time and moves on when the follower reports the offset it
//! expects next. The follower only accepts the chunk that starts exactly where its buffer
//! ends and answers everything else with that offset, so loss, duplication and reordering
//! cost a round trip, never correctness. A leader that restarts sending from offset 0 is told
//! where to resume.

use crate::pb::{InstallSnapshotRequest, Snapshot, SnapshotMetadata};

use super::unstable::snapshot_index_term;

/// What the leader should do after a follower's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SenderStep {
    /// Send the chunk at the (possibly moved) cursor.
    SendChunk,
    /// The chunk at the cursor is already in flight.
    Wait,
    /// The follower has the whole snapshot.
    Finished,
}

/// The leader's side of one snapshot transfer to one follower.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotSender {
    snapshot: Snapshot,
    /// Start of the chunk in flight.
    offset: u64,
    /// A response arrived since the last heartbeat; otherwise the chunk is resent.
    responded: bool,
}

impl SnapshotSender {
    pub(crate) fn new(snapshot: Snapshot) -> Self {
        Self { snapshot, offset: 0, responded: true }
    }

    pub(crate) fn index_term(&self) -> (u64, u64) {
        snapshot_index_term(&self.snapshot)
    }

    /// The chunk at the cursor, as an InstallSnapshot request for `term` from `leader_id`.
    pub(crate) fn chunk(&self, term: u64, leader_id: u64, chunk_size: usize) -> InstallSnapshotRequest {
        let (index, snap_term) = self.index_term();
        let len = self.snapshot.data.len();
        let start = usize::try_from(self.offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(chunk_size).min(len);
        InstallSnapshotRequest {
            term,
            leader_id,
            last_included_index: index,
            last_included_term: snap_term,
            offset: start as u64,
            data: self.snapshot.data.get(start..end).unwrap_or_default().to_vec(),
            done: end == len,
            conf_state: self.snapshot.metadata.as_ref().and_then(|m| m.conf_state.clone()),
        }
    }

    /// Moves the cursor to where the follower wants it.
    pub(crate) fn on_response(&mut self, next_offset: u64, done: bool) -> SenderStep {
        self.responded = true;
        if done {
            return SenderStep::Finished;
        }
        if next_offset > self.snapshot.data.len() as u64 {
            // Nonsense from the follower: start over.
            self.offset = 0;
            return SenderStep::SendChunk;
        }
        if next_offset == self.offset {
            return SenderStep::Wait;
        }
        self.offset = next_offset;
        SenderStep::SendChunk
    }

    /// Called every heartbeat: whether the chunk in flight should be sent again because no
    /// answer came since the previous heartbeat.
    pub(crate) fn should_resend(&mut self) -> bool {
        let resend = !self.responded;
        self.responded = false;
        resend
    }
}

/// The follower's buffer for one snapshot from one leader.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotReceiver {
    from: u64,
    index: u64,
    term: u64,
    buf: Vec<u8>,
}

/// What the follower answers after a chunk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReceiveOutcome {
    /// Send me the bytes from this offset.
    NextOffset(u64),
    /// The snapshot is complete.
    Complete(Snapshot),
}

/// Feeds one chunk into `slot`. Only a chunk starting exactly at the end of the buffer is
/// accepted. A chunk of a different snapshot (or from a different leader, whose encoding of
/// the same index might differ) replaces the buffer when it starts at offset 0; otherwise it
/// is answered with offset 0 so its sender restarts.
pub(crate) fn receive_chunk(
    slot: &mut Option<SnapshotReceiver>,
    from: u64,
    req: &InstallSnapshotRequest,
) -> ReceiveOutcome {
    let same = |r: &SnapshotReceiver| {
        r.from == from && r.index == req.last_included_index && r.term == req.last_included_term
    };
    if !slot.as_ref().is_some_and(same) {
        if req.offset != 0 {
            return ReceiveOutcome::NextOffset(0);
        }
        *slot = Some(SnapshotReceiver {
            from,
            index: req.last_included_index,
            term: req.last_included_term,
            buf: Vec::new(),
        });
    }
    let Some(r) = slot.as_mut() else { return ReceiveOutcome::NextOffset(0) };
    let have = r.buf.len() as u64;
    if req.offset != have {
        return ReceiveOutcome::NextOffset(have);
    }
    r.buf.extend_from_slice(&req.data);
    if !req.done {
        return ReceiveOutcome::NextOffset(r.buf.len() as u64);
    }
    let data = std::mem::take(&mut r.buf);
    *slot = None;
    ReceiveOutcome::Complete(Snapshot {
        metadata: Some(SnapshotMetadata {
            index: req.last_included_index,
            term: req.last_included_term,
            conf_state: req.conf_state.clone(),
        }),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::ConfState;

    fn snap(index: u64, term: u64, data: &[u8]) -> Snapshot {
        Snapshot {
            metadata: Some(SnapshotMetadata {
                index,
                term,
                conf_state: Some(ConfState { voters: vec![1, 2], learners: vec![] }),
            }),
            data: data.to_vec(),
        }
    }

    #[test]
    fn chunks_reassemble_in_order() {
        let s = snap(9, 2, b"abcdefghij");
        let mut tx = SnapshotSender::new(s.clone());
        let mut rx = None;
        let mut rounds = 0;
        loop {
            rounds += 1;
            let c = tx.chunk(5, 1, 3);
            match receive_chunk(&mut rx, 1, &c) {
                ReceiveOutcome::NextOffset(n) => assert_eq!(tx.on_response(n, false), SenderStep::SendChunk),
                ReceiveOutcome::Complete(got) => {
                    assert_eq!(got, s);
                    assert_eq!(tx.on_response(10, true), SenderStep::Finished);
                    break;
                }
            }
        }
        assert_eq!(rounds, 4);
        assert!(rx.is_none());
    }

    #[test]
    fn out_of_order_and_repeated_chunks_get_expected_offset() {
        let mut tx = SnapshotSender::new(snap(9, 2, b"abcdefghij"));
        let mut rx = None;
        let first = tx.chunk(5, 1, 4);
        assert_eq!(receive_chunk(&mut rx, 1, &first), ReceiveOutcome::NextOffset(4));
        assert_eq!(receive_chunk(&mut rx, 1, &first), ReceiveOutcome::NextOffset(4), "repeat");
        tx.on_response(4, false);
        tx.on_response(8, false); // bogus jump ahead: the cursor follows it ...
        let skipped = tx.chunk(5, 1, 4);
        assert_eq!(receive_chunk(&mut rx, 1, &skipped), ReceiveOutcome::NextOffset(4), "gap");
        // ... and the follower's answer brings it back.
        assert_eq!(tx.on_response(4, false), SenderStep::SendChunk);
        assert_eq!(tx.chunk(5, 1, 4).offset, 4);
        assert_eq!(tx.on_response(4, false), SenderStep::Wait, "a duplicate answer sends nothing");
        assert_eq!(tx.on_response(99, false), SenderStep::SendChunk);
        assert_eq!(tx.chunk(5, 1, 4).offset, 0, "an impossible offset restarts");
    }

    #[test]
    fn new_snapshot_resets_buffer_only_from_offset_zero() {
        let mut rx = None;
        let a = SnapshotSender::new(snap(9, 2, b"abcdefghij")).chunk(5, 1, 4);
        assert_eq!(receive_chunk(&mut rx, 1, &a), ReceiveOutcome::NextOffset(4));
        let mut b_tx = SnapshotSender::new(snap(12, 3, b"0123456789"));
        b_tx.on_response(4, false);
        let b_mid = b_tx.chunk(5, 1, 4);
        assert_eq!(receive_chunk(&mut rx, 1, &b_mid), ReceiveOutcome::NextOffset(0));
        assert_eq!(rx.as_ref().map(|r| r.index), Some(9), "a mid-stream chunk does not reset");
        let b0 = SnapshotSender::new(snap(12, 3, b"0123456789")).chunk(5, 1, 4);
        assert_eq!(receive_chunk(&mut rx, 1, &b0), ReceiveOutcome::NextOffset(4));
        assert_eq!(rx.as_ref().map(|r| r.index), Some(12));
        // The same snapshot from another leader starts over too.
        assert_eq!(receive_chunk(&mut rx, 2, &b_mid), ReceiveOutcome::NextOffset(0));
    }

    #[test]
    fn resume_after_leader_restart_and_resend_on_silence() {
        let s = snap(9, 2, b"abcdefghij");
        let mut rx = None;
        let tx = SnapshotSender::new(s.clone());
        let c = tx.chunk(5, 1, 4);
        receive_chunk(&mut rx, 1, &c);
        // A restarted leader starts from 0 and is told to resume at 4.
        let mut tx2 = SnapshotSender::new(s);
        let n = match receive_chunk(&mut rx, 1, &tx2.chunk(6, 1, 4)) {
            ReceiveOutcome::NextOffset(n) => n,
            ReceiveOutcome::Complete(_) => panic!("not complete"),
        };
        assert_eq!(n, 4);
        assert_eq!(tx2.on_response(n, false), SenderStep::SendChunk);
        assert!(!tx2.should_resend(), "answered since the last heartbeat");
        assert!(tx2.should_resend(), "silent for a heartbeat");
        let empty = SnapshotSender::new(snap(3, 1, b"")).chunk(5, 1, 4);
        assert!(empty.done && empty.data.is_empty());
    }
}
