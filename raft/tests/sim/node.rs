//! One simulated server: the Raft core plus a driver that follows the Ready contract, with
//! the disk (MemStorage + state machine) separate from everything a crash loses.

use std::collections::{HashMap, HashSet};

use prost::Message as _;
use raft::pb::{ConfChange, EntryType, HardState, RaftMessage};
use raft::{Config, MemStorage, Proposed, RaftError, RawNode, Ready, Role, Storage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::checker::{Checker, LogView, Violation};
use super::network::Network;
use super::state_machine::SmState;

/// How far the driver got with the Ready it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Taken from the core, nothing persisted yet.
    Taken,
    /// Persisted; messages not yet sent, entries not yet applied.
    Persisted,
}

pub struct SimNode {
    pub id: u64,
    pub cfg: Config,
    /// The disk.
    pub storage: MemStorage,
    /// The state machine, persisted atomically with each applied entry (like the server's
    /// redb state machine and its applied index).
    pub sm: SmState,
    /// The process; `None` while crashed.
    pub raw: Option<RawNode<MemStorage>>,
    pending: Option<(Ready, Stage)>,
    pub log: LogView,
    /// Within one life, commitIndex never decreases.
    commit_floor: u64,
    /// The persisted hard state (term and commit never go back, one vote per term).
    persisted_hs: HardState,
    pub crashes: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Notable events for the simulation's trace (filled only when `verbose`).
    pub events: Vec<String>,
    pub verbose: bool,
    /// Clients waiting on this member, as a server's wait registry holds them (lost in a
    /// crash): proposal data -> (term it can commit in, whether it was forwarded).
    waiters: HashMap<Vec<u8>, (u64, bool)>,
    /// Proposals of each batch this member forwarded, by sequence number.
    forwarded: HashMap<u64, Vec<Vec<u8>>>,
    /// Read contexts this member asked for and still waits on; an answer for anything else
    /// (a duplicate, or one from before a crash) is ignored, as a server ignores it.
    reads_pending: HashSet<Vec<u8>>,
    /// Lives so far: forwarded batch numbers of each life start above the previous life's.
    lives: u64,
}

impl SimNode {
    pub fn new(cfg: Config, storage: MemStorage, checker: &mut Checker) -> Result<Self, Violation> {
        let mut log = LogView::new();
        let first = storage.first_index().map_err(|e| e.to_string())?;
        let last = storage.last_index().map_err(|e| e.to_string())?;
        log.append(&storage.entries(first, last + 1, None).map_err(|e| e.to_string())?, checker)?;
        let persisted_hs = storage.initial_state().map_err(|e| e.to_string())?.hard_state;
        let mut n = Self {
            id: cfg.id,
            cfg,
            storage,
            sm: SmState::default(),
            raw: None,
            pending: None,
            log,
            commit_floor: 0,
            persisted_hs,
            crashes: 0,
            snapshots_installed: 0,
            events: Vec::new(),
            verbose: false,
            waiters: HashMap::new(),
            forwarded: HashMap::new(),
            reads_pending: HashSet::new(),
            lives: 0,
        };
        n.restart()?;
        Ok(n)
    }

    pub fn alive(&self) -> bool {
        self.raw.is_some()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.as_ref().is_some_and(|r| r.soft_state().role == Role::Leader)
    }

    pub fn crash(&mut self) {
        self.raw = None;
        self.pending = None;
        self.crashes += 1;
        self.waiters.clear();
        self.forwarded.clear();
        self.reads_pending.clear();
    }

    /// Restarts from the disk alone. A state machine older than the storage's snapshot is
    /// restored from it first, as a real driver does.
    pub fn restart(&mut self) -> Result<(), Violation> {
        let first = self.storage.first_index().map_err(|e| e.to_string())?;
        if self.sm.applied + 1 < first {
            let snap = self.storage.snapshot(0).map_err(|e| e.to_string())?;
            self.sm = SmState::from_snapshot(&snap).ok_or("undecodable snapshot in storage")?;
        }
        self.lives += 1;
        let cfg = Config { applied: self.sm.applied, forward_seq_base: self.lives << 40, ..self.cfg.clone() };
        let raw =
            RawNode::new(&cfg, self.storage.clone()).map_err(|e| format!("restart of {}: {e}", self.id))?;
        self.commit_floor = raw.hard_state().commit;
        self.raw = Some(raw);
        Ok(())
    }

    /// Runs one input against the core and checks what must hold after every input.
    pub fn input<T>(
        &mut self,
        checker: &mut Checker,
        f: impl FnOnce(&mut RawNode<MemStorage>) -> Result<T, RaftError>,
    ) -> Result<Option<Result<T, RaftError>>, Violation> {
        let Some(raw) = self.raw.as_mut() else { return Ok(None) };
        let out = f(raw);
        if let Err(RaftError::Storage(e)) = &out {
            return Err(format!("node {}: storage error surfaced: {e}", self.id));
        }
        self.after_input(checker)?;
        Ok(Some(out))
    }

    fn after_input(&mut self, checker: &mut Checker) -> Result<(), Violation> {
        let Some(raw) = self.raw.as_ref() else { return Ok(()) };
        let hs = raw.hard_state();
        if raw.soft_state().role == Role::Leader {
            checker.leader(hs.current_term, self.id)?;
        }
        if hs.commit < self.commit_floor {
            return Err(format!(
                "node {}: commit went back from {} to {}",
                self.id, self.commit_floor, hs.commit
            ));
        }
        self.commit_floor = hs.commit;
        Ok(())
    }

    /// Advances the Ready handshake by one or more stages.
    pub fn drive(
        &mut self,
        now: u64,
        rng: &mut ChaCha8Rng,
        net: &mut Network,
        checker: &mut Checker,
    ) -> Result<(), Violation> {
        let Some(raw) = self.raw.as_mut() else { return Ok(()) };
        match self.pending.take() {
            None => {
                if raw.has_ready() {
                    let rd = raw.ready().map_err(|e| format!("node {}: ready failed: {e}", self.id))?;
                    self.pending = Some((rd, Stage::Taken));
                    // Often the whole handshake happens at once.
                    if rng.random_ratio(1, 2) {
                        return self.drive(now, rng, net, checker);
                    }
                }
            }
            Some((rd, Stage::Taken)) => {
                self.persist(&rd, checker)?;
                self.pending = Some((rd, Stage::Persisted));
                if rng.random_ratio(1, 2) {
                    return self.drive(now, rng, net, checker);
                }
            }
            Some((rd, Stage::Persisted)) => self.finish(rd, now, rng, net, checker)?,
        }
        Ok(())
    }

    fn persist(&mut self, rd: &Ready, checker: &mut Checker) -> Result<(), Violation> {
        let id = self.id;
        if let Some(snap) = &rd.snapshot {
            let meta = snap.metadata.clone().unwrap_or_default();
            self.storage.apply_snapshot(snap.clone()).map_err(|e| format!("node {id}: {e}"))?;
            let chain = checker.chain_of(meta.index, meta.term).ok_or_else(|| {
                format!("node {id}: snapshot at {} of an entry no log ever held", meta.index)
            })?;
            self.log.reset_to(meta.index, meta.term, chain);
        }
        self.storage.append(&rd.entries).map_err(|e| format!("node {id}: {e}"))?;
        self.log.append(&rd.entries, checker)?;
        if let Some(hs) = rd.hard_state {
            let old = self.persisted_hs;
            if hs.current_term < old.current_term || hs.commit < old.commit {
                return Err(format!("node {id}: persisted hard state went back: {old:?} -> {hs:?}"));
            }
            if hs.current_term == old.current_term && old.voted_for != 0 && hs.voted_for != old.voted_for {
                return Err(format!("node {id}: voted twice in term {}", hs.current_term));
            }
            self.storage.set_hard_state(hs);
            self.persisted_hs = hs;
        }
        // A new leader's no-op reaching its disk: its log must hold everything committed
        // in earlier terms.
        for e in &rd.entries {
            let noop = e.entry_type == EntryType::EntryNormal as i32 && e.data.is_empty();
            if noop && checker.leader_of_term.get(&e.term) == Some(&id) {
                checker.leader_completeness(id, e.term, e.index, &self.log)?;
            }
        }
        Ok(())
    }

    fn finish(
        &mut self,
        rd: Ready,
        now: u64,
        rng: &mut ChaCha8Rng,
        net: &mut Network,
        checker: &mut Checker,
    ) -> Result<(), Violation> {
        let id = self.id;
        let mut rd = rd;
        for m in std::mem::take(&mut rd.messages) {
            net.send(now, m, rng);
        }
        if let Some(snap) = &rd.snapshot {
            let st = SmState::from_snapshot(snap)
                .ok_or_else(|| format!("node {id}: garbled snapshot installed"))?;
            if st.applied <= self.sm.applied {
                return Err(format!(
                    "node {id}: snapshot at {} would move applied back from {}",
                    st.applied, self.sm.applied
                ));
            }
            checker.sm_state(id, st.applied, st.hash)?;
            if self.verbose {
                let cs = snap.metadata.as_ref().and_then(|m| m.conf_state.clone());
                self.events.push(format!("node {id} installs snapshot at {} with {cs:?}", st.applied));
            }
            self.sm = st;
            self.snapshots_installed += 1;
            // The snapshot may hold proposals made here without this member seeing them
            // apply: their clients cannot be told either way (a server answers "timed out").
            self.waiters.clear();
            self.forwarded.clear();
        }
        let term = self.raw.as_ref().map_or(0, |r| r.hard_state().current_term);
        for e in &rd.committed_entries {
            if e.index != self.sm.applied + 1 {
                return Err(format!("node {id}: applied {} right after {}", e.index, self.sm.applied));
            }
            let chain = self
                .log
                .at(e.index)
                .filter(|(t, _)| *t == e.term)
                .ok_or_else(|| {
                    format!("node {id}: applying entry {} that is not in its persisted log", e.index)
                })?
                .1;
            self.sm.apply(e);
            checker.applied(id, e, chain, self.sm.hash, term)?;
            if e.entry_type == EntryType::EntryConfChange as i32 {
                let cc = ConfChange::decode(e.data.as_slice()).map_err(|e| e.to_string())?;
                let raw = self.raw.as_mut().ok_or("crashed while applying")?;
                match raw.apply_conf_change(&cc) {
                    Ok(cs) => {
                        if self.verbose {
                            self.events.push(format!("node {id} applies {cc:?} at {}: {cs:?}", e.index));
                        }
                        self.storage.set_conf_state(cs.clone());
                        checker.conf_applied(id, e.index, cs)?;
                    }
                    Err(err) => return Err(format!("node {id}: committed conf change refused: {err}")),
                }
            }
        }
        self.answer_clients(&rd, checker)?;
        for rs in std::mem::take(&mut rd.read_states) {
            if self.reads_pending.remove(&rs.request_ctx) {
                checker.read_confirmed(id, &rs)?;
            }
        }
        if let Some(raw) = self.raw.as_mut() {
            raw.advance(rd).map_err(|e| format!("node {id}: advance failed: {e}"))?;
        }
        self.after_input(checker)
    }

    /// Answers the clients waiting here, as a server's wait registry does: an applied proposal
    /// succeeds; a refused batch fails; and once an entry of a later term is applied, every
    /// proposal still waiting from an earlier term is lost (it could only commit in its own
    /// term, and that term's entries are all applied by now).
    fn answer_clients(&mut self, rd: &Ready, checker: &mut Checker) -> Result<(), Violation> {
        let id = self.id;
        for e in &rd.committed_entries {
            if let Some((_, forwarded)) = self.waiters.remove(&e.data) {
                checker.proposal_acked(id, &e.data, forwarded)?;
            }
        }
        if let Some(top) = rd.committed_entries.iter().map(|e| e.term).max() {
            let lost: Vec<Vec<u8>> =
                self.waiters.iter().filter(|(_, (term, _))| *term < top).map(|(d, _)| d.clone()).collect();
            for data in lost {
                self.waiters.remove(&data);
                if self.verbose {
                    self.events.push(format!(
                        "node {id} reports {} lost (applied an entry of term {top})",
                        String::from_utf8_lossy(&data)
                    ));
                }
                checker.proposal_failed(id, &data, false)?;
            }
        }
        for r in &rd.rejected_proposals {
            for data in self.forwarded.remove(&r.seq).unwrap_or_default() {
                if self.waiters.remove(&data).is_some() {
                    if self.verbose {
                        self.events.push(format!(
                            "node {id} reports {} refused: {}",
                            String::from_utf8_lossy(&data),
                            r.error
                        ));
                    }
                    checker.proposal_failed(id, &data, true)?;
                }
            }
        }
        Ok(())
    }

    /// A client proposes `data` here: appended if this member leads, forwarded otherwise.
    pub fn propose(
        &mut self,
        data: Vec<u8>,
        checker: &mut Checker,
    ) -> Result<Option<Result<Proposed, RaftError>>, Violation> {
        let d = data.clone();
        let out = self.input(checker, |r| r.propose(d))?;
        if self.verbose {
            self.events.push(format!(
                "node {} proposes {}: {out:?}",
                self.id,
                String::from_utf8_lossy(&data)
            ));
        }
        if let Some(Ok(p)) = &out {
            let forwarded = matches!(p, Proposed::Forwarded { .. });
            if let Proposed::Forwarded { seq, .. } = p {
                self.forwarded.insert(*seq, vec![data.clone()]);
            }
            self.waiters.insert(data, (p.term(), forwarded));
        }
        Ok(out)
    }

    /// A client asks for a read index here (served by this member once it applied that far).
    pub fn read_index(&mut self, ctx: Vec<u8>, checker: &mut Checker) -> Result<bool, Violation> {
        let c = ctx.clone();
        let accepted = matches!(self.input(checker, |r| r.read_index(c))?, Some(Ok(())));
        if accepted {
            self.reads_pending.insert(ctx);
        }
        Ok(accepted)
    }

    /// The driver compacts its log up to what it applied, keeping `keep` entries.
    pub fn compact(&mut self, keep: u64) -> Result<(), Violation> {
        let applied = self.sm.applied;
        let first = self.storage.first_index().map_err(|e| e.to_string())?;
        if applied < first {
            return Ok(());
        }
        let cs = self.storage.initial_state().map_err(|e| e.to_string())?.conf_state;
        let current = self.storage.snapshot(0).ok().and_then(|s| s.metadata).map_or(0, |m| m.index);
        if applied > current {
            self.storage.create_snapshot(applied, cs, self.sm.encode()).map_err(|e| e.to_string())?;
        }
        let upto = applied.saturating_sub(keep);
        if upto >= first {
            self.storage.compact(upto).map_err(|e| e.to_string())?;
            self.log.compact(upto);
        }
        Ok(())
    }

    pub fn applied(&self) -> u64 {
        self.sm.applied
    }

    pub fn deliver(&mut self, msg: RaftMessage, checker: &mut Checker) -> Result<(), Violation> {
        self.input(checker, |r| r.step(msg)).map(|_| ())
    }
}
