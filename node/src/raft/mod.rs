//! The Raft consensus core: a deterministic state machine with no I/O, no clock and no threads.

pub mod storage;
