//! etcd's Watch on this member's own applied state: watchers, the hub that feeds them from the
//! key space's history, and what a stream is told. The client API (`api/watch.rs`) turns
//! notices into `WatchResponse`s.
//!
//! The guarantees are etcd's: events of a watcher arrive ordered by revision, each once, all
//! events of one revision in one response, with no gap from the start revision on; a
//! watcher can resume at the last revision it saw plus one; a progress notification at
//! revision R follows every event at or below R. A start revision below the compaction
//! revision cancels the watcher with `compact_revision` set (at the compaction revision itself
//! it is served, deletions included); one in the future waits for it.

mod hub;
mod watcher;

pub use hub::{COMPACTED, DUPLICATE_ID, EMPTY_RANGE, HubStopped, Notice, STREAM_QUEUE, StreamId, WatchHub};
pub use watcher::{StartAt, WatchRange, WatchSpec};
