//! Recording this member's name and client URLs in the replicated membership (etcd's
//! `publish`), so MemberList shows them. Proposed like any write, so a follower's proposal
//! reaches the leader inside Raft; retried until the stored attributes match.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use crate::api::ApiContext;
use crate::proto::kvserverpb::{MemberAttributes, internal_request};

/// Publishes until the membership shows `name` and `client_urls` for this member, or the
/// member stops.
pub(super) async fn publish_attributes(
    ctx: Arc<ApiContext>,
    name: String,
    client_urls: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let current = ctx.kv.members().ok().and_then(|ms| ms.into_iter().find(|m| m.id == ctx.member_id));
        if let Some(m) = &current
            && m.name == name
            && m.client_urls == client_urls
        {
            return;
        }
        // Until the membership holds this member (a joiner replaying the log), wait.
        if current.is_some() {
            let attributes =
                MemberAttributes { id: ctx.member_id, name: name.clone(), client_urls: client_urls.clone() };
            match ctx.propose(internal_request::Request::MemberAttributes(attributes)).await {
                Ok(_) => continue,
                Err(e) => debug!(error = %e, "publishing member attributes failed; retrying"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
