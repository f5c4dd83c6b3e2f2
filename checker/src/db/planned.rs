//! The two records a plan is made of, apart so that the plan and the equivalence classes it
//! builds from them ([`crate::db::classes`]) both read them without importing each other.

use crate::db::compile::{Kv, Reply, Request};
use crate::db::types::Revision;

/// An operation as the search uses it.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    /// Position in the history's operations.
    pub(crate) source: usize,
    pub(crate) invoke: u64,
    /// Completion time; meaningless (never used) for unknown-outcome writes.
    pub(crate) complete: u64,
    pub(crate) request: Request,
    /// The recorded reply, `None` for an unknown outcome.
    pub(crate) reply: Option<Reply>,
    /// The header revision, 0 for an unknown outcome.
    pub(crate) revision: Revision,
    /// True for an acknowledged write that claims its header revision.
    pub(crate) claims: bool,
}

/// A key-value that a read attributes to a revision (its mod revision).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    pub(crate) kv: Kv,
    /// The planned operation whose response contained it.
    pub(crate) seen_by: usize,
}
