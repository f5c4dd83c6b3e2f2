//! One keep-alive client: a lease of its own, renewed one keep-alive at a time.
//!
//! etcd's `benchmark lease-keepalive` grants one lease per client and then renews it with
//! clientv3's `KeepAliveOnce`, which opens a LeaseKeepAlive stream, sends one request, reads one
//! answer and closes the stream: [`Stream::PerKeepAlive`]. An application's clientv3 instead
//! keeps one stream open and sends every renewal over it: [`Stream::PerClient`], one stream per
//! client here. Either way a client has one keep-alive in flight, and one operation is one
//! keep-alive sent and answered.

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};

use crate::conn::Turns;
use crate::error::BenchError;
use crate::runner::{Outcome, Worker};

/// How a client's keep-alives travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// One stream per client, opened on its first keep-alive and kept for the run.
    PerClient,
    /// A new stream per keep-alive, closed once it is answered (clientv3's `KeepAliveOnce`).
    PerKeepAlive,
}

/// One client keeping one lease alive.
pub struct KeepAliveWorker {
    /// The members, in turn: the lease is granted on the first, a stream opened on the next.
    clients: Turns<Client>,
    id: i64,
    stream: Stream,
    /// The open stream ([`Stream::PerClient`] only).
    open: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// A keep-alive was sent and its answer not read: the runner gave up on it (timeout) or it
    /// failed. Its answer may still come, and would be taken for the next one's, so the next
    /// keep-alive goes on a new stream.
    unsettled: bool,
}

impl KeepAliveWorker {
    /// Grants a lease of `ttl` seconds and sends the first keep-alive (which, per client, opens
    /// the stream), so the measured keep-alives are those of a client already set up.
    pub async fn grant(mut clients: Turns<Client>, ttl: i64, stream: Stream) -> Result<Self, BenchError> {
        let id = clients.turn().lease_grant(ttl, None).await?.id();
        let mut worker = Self { clients, id, stream, open: None, unsettled: false };
        worker.op().await?;
        Ok(worker)
    }

    /// Closes the stream and revokes the lease, so nothing of the run stays in the servers.
    pub async fn revoke(mut self) -> Result<(), BenchError> {
        self.open = None;
        self.clients.turn().lease_revoke(self.id).await?;
        Ok(())
    }

    /// Sends one keep-alive and reads its answer.
    async fn keep_alive(&mut self) -> Result<(), BenchError> {
        if let Some((keeper, stream)) = &mut self.open {
            keeper.keep_alive().await?;
            let answer = stream
                .message()
                .await?
                .ok_or_else(|| BenchError::Unexpected("the server ended a keep-alive stream".into()))?;
            return check_answer(self.id, answer.id(), answer.ttl());
        }
        // etcd-client sends the first keep-alive of a stream itself and reads its answer: an
        // answer of TTL <= 0 is its error, the id is the keeper's.
        let (keeper, stream) = self.clients.turn().lease_keep_alive(self.id).await?;
        check_answer(self.id, keeper.id(), 1)?;
        if self.stream == Stream::PerClient {
            self.open = Some((keeper, stream));
        }
        Ok(())
    }
}

impl Worker for KeepAliveWorker {
    async fn op(&mut self) -> Result<Outcome, BenchError> {
        if self.unsettled {
            self.open = None;
        }
        self.unsettled = true;
        self.keep_alive().await?;
        self.unsettled = false;
        Ok(Outcome::Done)
    }
}

/// An answer to a keep-alive of lease `sent` must name it and give it time.
fn check_answer(sent: i64, id: i64, ttl: i64) -> Result<(), BenchError> {
    if id != sent {
        return Err(BenchError::Unexpected(format!(
            "keep-alive of lease {sent:x} answered for lease {id:x}"
        )));
    }
    if ttl <= 0 {
        return Err(BenchError::LeaseGone(sent));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_must_name_the_lease_and_give_it_time() {
        assert!(check_answer(7, 7, 100).is_ok());
        assert!(matches!(check_answer(7, 8, 100), Err(BenchError::Unexpected(_))));
        assert!(matches!(check_answer(7, 7, 0), Err(BenchError::LeaseGone(7))));
        assert!(matches!(check_answer(7, 7, -1), Err(BenchError::LeaseGone(7))));
    }
}
