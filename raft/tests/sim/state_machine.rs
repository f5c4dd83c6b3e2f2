//! The replicated state machine of the simulation: a running hash of every applied entry.
//! Two nodes that applied the same entries in the same order have the same hash, so
//! comparing hashes at an index compares whole histories.

use raft::pb::{Entry, Snapshot};

/// What a node's state machine holds; persisted atomically with every applied entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmState {
    pub applied: u64,
    pub hash: u64,
}

pub fn mix(h: u64, x: u64) -> u64 {
    let mut z = (h ^ x).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Identity of an entry's content (index, term, type and data).
pub fn entry_hash(e: &Entry) -> u64 {
    let mut h = mix(mix(mix(0, e.index), e.term), e.entry_type as u64);
    for chunk in e.data.chunks(8) {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(buf));
    }
    mix(h, e.data.len() as u64)
}

impl SmState {
    pub fn apply(&mut self, e: &Entry) {
        self.hash = mix(self.hash, entry_hash(e));
        self.applied = e.index;
    }

    /// Snapshot bytes: the state plus a deterministic filler of varying length, so that
    /// transfers take several chunks.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
        let filler = (self.hash % 200) as usize;
        out.extend((0..filler).map(|i| (self.hash >> (i % 56)) as u8));
        out
    }

    pub fn decode(data: &[u8]) -> Option<Self> {
        let applied = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
        let hash = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
        let s = Self { applied, hash };
        (s.encode() == data).then_some(s)
    }

    pub fn from_snapshot(s: &Snapshot) -> Option<Self> {
        let st = Self::decode(&s.data)?;
        let index = s.metadata.as_ref()?.index;
        (st.applied == index).then_some(st)
    }
}
