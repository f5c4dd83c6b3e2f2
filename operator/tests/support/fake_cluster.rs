//! An in-memory Raft group behind [`MembershipClient`], for the operator's tests (test-only code:
//! the library and the `kv-operator` binary carry none of it).
//!
//! It models what the operator relies on, with the same refusals a real cluster gives: calls
//! need a quorum of running voters, a learner is promoted only once caught up, MoveLeader must
//! reach the leader and name a running voter, removing the leader elects another one. The test
//! harness drives it like kubelet would: [`FakeCluster::start`] when a member's pod runs,
//! [`FakeCluster::stop`] when it is gone. Every successful mutating call is logged so tests can
//! assert the order of membership changes.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use kv_operator::membership::{EndpointStatus, Member, MembershipClient, MembershipError};

/// A membership call the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    AddLearner { peer_url: String, id: u64 },
    Promote { id: u64 },
    Remove { id: u64 },
    MoveLeader { from: u64, to: u64 },
}

#[derive(Debug, Clone)]
struct FakeMember {
    id: u64,
    name: String,
    peer_url: String,
    client_url: String,
    is_learner: bool,
    running: bool,
    /// Applied index; running members catch up instantly unless `lagging`.
    applied: u64,
    lagging: bool,
    /// Running but reporting errors (a bad version, a corrupt disk).
    faulty: bool,
}

#[derive(Debug, Default)]
struct State {
    members: Vec<FakeMember>,
    leader: Option<u64>,
    index: u64,
    term: u64,
    next_id: u64,
    calls: Vec<Call>,
}

/// A shared handle on one simulated cluster; clones see the same state.
#[derive(Debug, Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
}

/// Deterministic, well-spread member ids (splitmix64 of a counter), like the random-looking ids
/// real clusters hand out.
fn member_id(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl State {
    fn voters_running(&self) -> (usize, usize) {
        let voters = self.members.iter().filter(|m| !m.is_learner);
        let total = voters.clone().count();
        let running = voters.filter(|m| m.running && !m.faulty).count();
        (running, total)
    }

    fn has_quorum(&self) -> bool {
        let (running, total) = self.voters_running();
        total > 0 && running > total / 2
    }

    /// Re-elects when the leader is gone, catches members up, as a real group would settle.
    fn settle(&mut self) {
        let leader_ok = self.leader.is_some_and(|l| {
            self.members.iter().any(|m| m.id == l && m.running && !m.is_learner && !m.faulty)
        });
        if !self.has_quorum() {
            self.leader = None;
        } else if !leader_ok {
            self.leader =
                self.members.iter().filter(|m| m.running && !m.is_learner && !m.faulty).map(|m| m.id).min();
            self.term += 1;
            self.index += 1;
        }
        if self.leader.is_some() {
            let index = self.index;
            for m in self.members.iter_mut().filter(|m| m.running && !m.lagging) {
                m.applied = index;
            }
        }
    }

    fn require_quorum(&self, endpoints: &[String]) -> Result<(), MembershipError> {
        let reachable =
            endpoints.iter().any(|e| self.members.iter().any(|m| &m.client_url == e && m.running));
        if self.has_quorum() && reachable && self.leader.is_some() {
            Ok(())
        } else {
            Err(MembershipError::Unreachable {
                endpoints: endpoints.to_vec(),
                message: "etcdserver: no leader".into(),
            })
        }
    }

    fn member_mut(&mut self, id: u64) -> Result<&mut FakeMember, MembershipError> {
        self.members.iter_mut().find(|m| m.id == id).ok_or(MembershipError::Refused {
            call: "member",
            message: "etcdserver: member not found".into(),
        })
    }
}

impl FakeCluster {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; keep the data usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forms the cluster from `--initial-cluster-state=new` members: `(name, peer URL, client URL)`.
    pub fn bootstrap(&self, members: &[(String, String, String)]) {
        let mut s = self.lock();
        for (name, peer_url, client_url) in members {
            s.next_id += 1;
            let id = member_id(s.next_id);
            s.members.push(FakeMember {
                id,
                name: name.clone(),
                peer_url: peer_url.clone(),
                client_url: client_url.clone(),
                is_learner: false,
                running: true,
                applied: 0,
                lagging: false,
                faulty: false,
            });
        }
        s.index += 1;
        s.settle();
    }

    /// True once [`FakeCluster::bootstrap`] has run.
    pub fn is_bootstrapped(&self) -> bool {
        !self.lock().members.is_empty()
    }

    /// The member with this peer URL starts (its pod runs): it publishes its name and client URL.
    pub fn start(&self, name: &str, peer_url: &str, client_url: &str) {
        let mut s = self.lock();
        if let Some(m) = s.members.iter_mut().find(|m| m.peer_url == peer_url) {
            m.running = true;
            m.name = name.to_string();
            m.client_url = client_url.to_string();
        }
        s.settle();
    }

    /// The member with this peer URL stops answering (its pod is gone or not running).
    pub fn stop(&self, peer_url: &str) {
        let mut s = self.lock();
        if let Some(m) = s.members.iter_mut().find(|m| m.peer_url == peer_url) {
            m.running = false;
        }
        s.settle();
    }

    /// A running member that reports errors and never leads (a broken version).
    pub fn set_faulty(&self, peer_url: &str, faulty: bool) {
        let mut s = self.lock();
        if let Some(m) = s.members.iter_mut().find(|m| m.peer_url == peer_url) {
            m.faulty = faulty;
        }
        s.settle();
    }

    /// A member that stays behind the leader's log while set.
    pub fn set_lagging(&self, peer_url: &str, lagging: bool) {
        let mut s = self.lock();
        if let Some(m) = s.members.iter_mut().find(|m| m.peer_url == peer_url) {
            m.lagging = lagging;
        }
        s.settle();
    }

    /// Appends `n` entries (client writes) to the log.
    pub fn write(&self, n: u64) {
        let mut s = self.lock();
        s.index += n;
        s.settle();
    }

    /// The member list: `(id, peer URL, is_learner)`.
    pub fn members(&self) -> Vec<(u64, String, bool)> {
        self.lock().members.iter().map(|m| (m.id, m.peer_url.clone(), m.is_learner)).collect()
    }

    /// Peer URL of the leader.
    pub fn leader_peer_url(&self) -> Option<String> {
        let s = self.lock();
        let leader = s.leader?;
        s.members.iter().find(|m| m.id == leader).map(|m| m.peer_url.clone())
    }

    /// Every accepted mutating call, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }
}

#[async_trait]
impl MembershipClient for FakeCluster {
    async fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>, MembershipError> {
        let s = self.lock();
        s.require_quorum(endpoints)?;
        Ok(s.members
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_urls: vec![m.peer_url.clone()],
                client_urls: if m.name.is_empty() { vec![] } else { vec![m.client_url.clone()] },
                is_learner: m.is_learner,
            })
            .collect())
    }

    async fn status(&self, endpoint: &str) -> Result<EndpointStatus, MembershipError> {
        let s = self.lock();
        let unreachable = || MembershipError::Unreachable {
            endpoints: vec![endpoint.to_string()],
            message: "connection refused".into(),
        };
        let m = s.members.iter().find(|m| m.client_url == endpoint && m.running).ok_or_else(unreachable)?;
        Ok(EndpointStatus {
            member_id: m.id,
            leader: if m.faulty { 0 } else { s.leader.unwrap_or(0) },
            raft_index: if m.id == s.leader.unwrap_or(0) { s.index } else { m.applied },
            raft_applied_index: m.applied,
            raft_term: s.term,
            is_learner: m.is_learner,
            has_errors: m.faulty,
        })
    }

    async fn add_learner(&self, endpoints: &[String], peer_url: &str) -> Result<Member, MembershipError> {
        let mut s = self.lock();
        s.require_quorum(endpoints)?;
        if s.members.iter().any(|m| m.peer_url == peer_url) {
            return Err(MembershipError::Refused {
                call: "MemberAdd",
                message: "etcdserver: Peer URLs already exists".into(),
            });
        }
        s.next_id += 1;
        let id = member_id(s.next_id);
        s.members.push(FakeMember {
            id,
            name: String::new(),
            peer_url: peer_url.to_string(),
            client_url: String::new(),
            is_learner: true,
            running: false,
            applied: 0,
            lagging: false,
            faulty: false,
        });
        s.index += 1;
        s.calls.push(Call::AddLearner { peer_url: peer_url.to_string(), id });
        s.settle();
        Ok(Member {
            id,
            name: String::new(),
            peer_urls: vec![peer_url.to_string()],
            client_urls: vec![],
            is_learner: true,
        })
    }

    async fn promote(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        let mut s = self.lock();
        s.require_quorum(endpoints)?;
        let index = s.index;
        let m = s.member_mut(id)?;
        if !m.is_learner {
            return Err(MembershipError::Refused {
                call: "MemberPromote",
                message: "etcdserver: can only promote a learner member".into(),
            });
        }
        if !m.running || m.applied + 10 < index {
            return Err(MembershipError::Refused {
                call: "MemberPromote",
                message: "etcdserver: can only promote a learner member which is in sync with leader".into(),
            });
        }
        m.is_learner = false;
        s.index += 1;
        s.calls.push(Call::Promote { id });
        s.settle();
        Ok(())
    }

    async fn remove(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        let mut s = self.lock();
        s.require_quorum(endpoints)?;
        s.member_mut(id)?;
        s.members.retain(|m| m.id != id);
        s.index += 1;
        s.calls.push(Call::Remove { id });
        s.settle();
        Ok(())
    }

    async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), MembershipError> {
        let mut s = self.lock();
        let leader = s.leader.ok_or(MembershipError::Refused {
            call: "MoveLeader",
            message: "etcdserver: no leader".into(),
        })?;
        let at_leader = s.members.iter().any(|m| m.id == leader && m.client_url == leader_endpoint);
        if !at_leader {
            return Err(MembershipError::Refused {
                call: "MoveLeader",
                message: "etcdserver: not leader".into(),
            });
        }
        let target_ok = s.members.iter().any(|m| m.id == target && m.running && !m.is_learner && !m.faulty);
        if !target_ok {
            return Err(MembershipError::Refused {
                call: "MoveLeader",
                message: "etcdserver: bad leader transferee".into(),
            });
        }
        s.leader = Some(target);
        s.term += 1;
        s.calls.push(Call::MoveLeader { from: leader, to: target });
        s.settle();
        Ok(())
    }
}
