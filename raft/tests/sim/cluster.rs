//! The simulation loop: a fault phase with every kind of trouble, then a quiet phase that
//! must elect a leader and commit within a bounded number of ticks.

use std::collections::BTreeMap;

use raft::pb::{ConfChange, ConfChangeType};
use raft::{Config, MemStorage, RaftError, Storage, bootstrap};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checker::{Checker, Violation};
use super::hostile::{Target, hostile_message};
use super::network::{Faults, Network};
use super::node::SimNode;

/// Steps per tick: messages are delivered and readies handled several times per tick.
const STEPS_PER_TICK: u64 = 3;
const ELECTION_TICK: usize = 10;
/// Bound on the quiet phase: a leader must be elected, and every proposal made to it must
/// commit, within this many ticks (each); the commit everywhere within this many ticks of the
/// last member's last step forward.
const LIVENESS_TICKS: u64 = 40 * ELECTION_TICK as u64;
/// How many [`LIVENESS_TICKS`] budgets a member that keeps catching up may use in all.
const LIVENESS_CATCH_UP_FACTOR: u64 = 10;
/// The simulated clients stop proposing to a leader this far ahead of its commit index.
const MAX_UNCOMMITTED: u64 = 64;
/// More messages in flight than any sane cluster of 7 produces.
const MAX_IN_FLIGHT: usize = 20_000;

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub steps: u64,
    pub verbose: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub steps: u64,
    pub leaders: u64,
    pub applied: u64,
    pub reads: u64,
    pub conf_changes: u64,
    pub crashes: u64,
    pub snapshots_installed: u64,
    /// Proposals answered to their clients: applied (forwarded ones among them), or reported
    /// failed (refused by a leader among them).
    pub acked: u64,
    pub acked_forwarded: u64,
    pub failed: u64,
    pub refused: u64,
}

impl Outcome {
    pub fn add(&mut self, o: &Outcome) {
        self.steps += o.steps;
        self.leaders += o.leaders;
        self.applied += o.applied;
        self.reads += o.reads;
        self.conf_changes += o.conf_changes;
        self.crashes += o.crashes;
        self.snapshots_installed += o.snapshots_installed;
        self.acked += o.acked;
        self.acked_forwarded += o.acked_forwarded;
        self.failed += o.failed;
        self.refused += o.refused;
    }
}

/// Per-mille rates of the fault-phase events; each seed picks its own regime.
#[derive(Debug, Clone, Copy)]
struct Rates {
    propose: u32,
    read: u32,
    conf: u32,
    transfer: u32,
    compact: u32,
    crash: u32,
    restart: u32,
    partition: u32,
    heal: u32,
    hostile: u32,
}

struct Sim {
    rng: ChaCha8Rng,
    rates: Rates,
    now: u64,
    nodes: BTreeMap<u64, SimNode>,
    net: Network,
    checker: Checker,
    pool: Vec<u64>,
    cfg: Config,
    trace: Vec<String>,
    verbose: bool,
    proposals: u64,
    reads: u64,
    conf_changes: u64,
}

impl Sim {
    fn log(&mut self, s: impl FnOnce() -> String) {
        if self.verbose {
            let line = format!("[{:>6}] {}", self.now, s());
            self.trace.push(line);
        }
    }

    fn cfg(&self, id: u64) -> Config {
        Config { id, ..self.cfg.clone() }
    }

    fn leaders(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.is_leader()).map(|n| n.id).collect()
    }

    fn alive(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.alive()).map(|n| n.id).collect()
    }

    fn node(&mut self, id: u64) -> &mut SimNode {
        self.nodes.get_mut(&id).expect("known node")
    }

    /// Runs one input against node `id` (`None` if it is down or unknown).
    fn input<T>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut raft::RawNode<MemStorage>) -> Result<T, RaftError>,
    ) -> Result<Option<Result<T, RaftError>>, Violation> {
        match self.nodes.get_mut(&id) {
            Some(n) => n.input(&mut self.checker, f),
            None => Ok(None),
        }
    }

    /// One step: deliver what is due, tick now and then, advance every driver.
    fn step(&mut self, tick: bool) -> Result<(), Violation> {
        self.now += 1;
        // A core that answers one message with several (under duplication) floods the network.
        if self.net.in_flight() > MAX_IN_FLIGHT {
            return Err(format!(
                "message storm: {} messages in flight, mostly {:?}",
                self.net.in_flight(),
                self.net.census()
            ));
        }
        for m in self.net.due(self.now, &mut self.rng) {
            if let Some(n) = self.nodes.get_mut(&m.to) {
                n.deliver(m, &mut self.checker)?;
            }
        }
        if tick && self.now.is_multiple_of(STEPS_PER_TICK) {
            for id in self.alive() {
                // Clocks drift a little.
                if self.rng.random_ratio(19, 20) {
                    let n = self.nodes.get_mut(&id).expect("alive");
                    n.input(&mut self.checker, |r| r.tick())?;
                }
            }
        }
        for n in self.nodes.values_mut() {
            n.drive(self.now, &mut self.rng, &mut self.net, &mut self.checker)?;
        }
        for (term, id) in std::mem::take(&mut self.checker.new_leaders) {
            self.log(|| format!("node {id} leads term {term}"));
        }
        let events: Vec<String> =
            self.nodes.values_mut().flat_map(|n| std::mem::take(&mut n.events)).collect();
        for e in events {
            self.log(|| e);
        }
        Ok(())
    }

    fn propose(&mut self) -> Result<(), Violation> {
        let alive = self.alive();
        let leaders = self.leaders();
        // To a leader or to anyone (forwarded to the leader it knows, or refused without one).
        let target = if self.rng.random_ratio(1, 2) {
            leaders.choose(&mut self.rng)
        } else {
            alive.choose(&mut self.rng)
        };
        let Some(&id) = target else { return Ok(()) };
        // Backpressure, as a server applies it: no new proposals while too many are in flight.
        let backlog = self.nodes[&id].raw.as_ref().map(|r| {
            let st = r.status();
            st.last_index.saturating_sub(st.commit)
        });
        if backlog.is_some_and(|b| b > MAX_UNCOMMITTED) {
            return Ok(());
        }
        self.proposals += 1;
        let data = format!("p{}-{}", self.now, self.proposals).into_bytes();
        let r = match self.nodes.get_mut(&id) {
            Some(n) => n.propose(data, &mut self.checker)?,
            None => None,
        };
        if let Some(Err(e)) = r
            && !matches!(
                e,
                RaftError::NotLeader { .. } | RaftError::TransferInProgress | RaftError::ProposalDropped(_)
            )
        {
            return Err(format!("unexpected proposal error: {e}"));
        }
        Ok(())
    }

    fn read(&mut self) -> Result<(), Violation> {
        let alive = self.alive();
        let Some(&id) = alive.choose(&mut self.rng) else { return Ok(()) };
        self.reads += 1;
        let ctx = format!("r{}-{}", self.now, self.reads).into_bytes();
        self.checker.read_requested(ctx.clone());
        let accepted = match self.nodes.get_mut(&id) {
            Some(n) => n.read_index(ctx.clone(), &mut self.checker)?,
            None => false,
        };
        if !accepted {
            self.checker.read_requested_cancel(&ctx);
        }
        Ok(())
    }

    fn conf_change(&mut self) -> Result<(), Violation> {
        let leaders = self.leaders();
        let Some(&leader) = leaders.choose(&mut self.rng) else { return Ok(()) };
        let Some(raw) = self.node(leader).raw.as_ref() else { return Ok(()) };
        let cs = raw.status().conf_state;
        let outsiders: Vec<u64> = self
            .pool
            .iter()
            .copied()
            .filter(|id| !cs.voters.contains(id) && !cs.learners.contains(id))
            .collect();
        let (kind, id) = match self.rng.random_range(0..3) {
            0 if !outsiders.is_empty() => (
                ConfChangeType::ConfChangeAddLearnerNode,
                *outsiders.choose(&mut self.rng).expect("non-empty"),
            ),
            1 if !cs.learners.is_empty() && cs.voters.len() < 5 => {
                (ConfChangeType::ConfChangeAddNode, *cs.learners.choose(&mut self.rng).expect("non-empty"))
            }
            2 if cs.voters.len() > 1 => {
                let all: Vec<u64> = cs.voters.iter().chain(cs.learners.iter()).copied().collect();
                (ConfChangeType::ConfChangeRemoveNode, *all.choose(&mut self.rng).expect("non-empty"))
            }
            _ => return Ok(()),
        };
        if !self.nodes.contains_key(&id) {
            // A brand-new server joins with an empty disk.
            let mut n = SimNode::new(self.cfg(id), MemStorage::new(), &mut self.checker)?;
            n.verbose = self.verbose;
            self.nodes.insert(id, n);
        } else if !self.node(id).alive() {
            self.node(id).restart()?;
        }
        let cc = ConfChange { change_type: kind as i32, node_id: id, context: vec![], ..Default::default() };
        // Through the leader, or through any member (forwarded like any proposal).
        let proposer = if self.rng.random_ratio(2, 3) {
            leader
        } else {
            *self.alive().choose(&mut self.rng).unwrap_or(&leader)
        };
        let r = self.input(proposer, |r| r.propose_conf_change(cc))?;
        if matches!(r, Some(Ok(_))) {
            self.conf_changes += 1;
        }
        self.log(|| format!("node {proposer} proposes {kind:?} {id} (leader {leader}): {r:?}"));
        Ok(())
    }

    fn transfer(&mut self) -> Result<(), Violation> {
        let leaders = self.leaders();
        let Some(&leader) = leaders.choose(&mut self.rng) else { return Ok(()) };
        let voters = self.node(leader).raw.as_ref().map(|r| r.status().conf_state.voters).unwrap_or_default();
        let Some(&to) = voters.choose(&mut self.rng) else { return Ok(()) };
        let r = self.input(leader, |r| r.transfer_leader(to))?;
        self.log(|| format!("leader {leader} transfers to {to}: {r:?}"));
        Ok(())
    }

    fn hostile(&mut self) -> Result<(), Violation> {
        let alive = self.alive();
        let Some(&id) = alive.choose(&mut self.rng) else { return Ok(()) };
        let Some(raw) = self.nodes[&id].raw.as_ref() else { return Ok(()) };
        let st = raw.status();
        let t = Target {
            id,
            term: st.term,
            last_index: st.last_index,
            leader: self.checker.leader_of_term.get(&st.term).copied(),
            members: self.pool.clone(),
        };
        if let Some(m) = hostile_message(&mut self.rng, &t) {
            self.input(id, |r| r.step(m))?;
        }
        Ok(())
    }

    fn partition(&mut self) {
        let mut ids = self.alive();
        if ids.len() < 2 {
            return;
        }
        for i in (1..ids.len()).rev() {
            let j = self.rng.random_range(0..=i);
            ids.swap(i, j);
        }
        let cut = self.rng.random_range(1..ids.len());
        let (a, b) = ids.split_at(cut);
        let symmetric = self.rng.random_ratio(2, 3);
        self.net.partition(a, b, symmetric);
        let (a, b) = (a.to_vec(), b.to_vec());
        self.log(|| format!("partition {a:?} | {b:?} symmetric={symmetric}"));
    }

    fn fault_event(&mut self) -> Result<(), Violation> {
        let r = self.rates;
        if self.rng.random_ratio(r.propose, 1000) {
            self.propose()?;
        }
        if self.rng.random_ratio(r.read, 1000) {
            self.read()?;
        }
        if self.rng.random_ratio(r.conf, 1000) {
            self.conf_change()?;
        }
        if self.rng.random_ratio(r.transfer, 1000) {
            self.transfer()?;
        }
        if self.rng.random_ratio(r.compact, 1000) {
            let alive = self.alive();
            if let Some(&id) = alive.choose(&mut self.rng) {
                let keep = self.rng.random_range(0..4);
                self.node(id).compact(keep)?;
            }
        }
        if self.rng.random_ratio(r.crash, 1000) {
            // Leaders are the most interesting victims.
            let leaders = self.leaders();
            let alive = self.alive();
            let pick =
                if self.rng.random() { leaders.choose(&mut self.rng) } else { alive.choose(&mut self.rng) };
            if let Some(&id) = pick {
                self.node(id).crash();
                self.log(|| format!("crash {id}"));
            }
        }
        if self.rng.random_ratio(r.restart, 1000) {
            let down: Vec<u64> = self.nodes.values().filter(|n| !n.alive()).map(|n| n.id).collect();
            if let Some(&id) = down.choose(&mut self.rng) {
                self.node(id).restart()?;
                self.log(|| format!("restart {id}"));
            }
        }
        if self.rng.random_ratio(r.partition, 1000) {
            self.partition();
        }
        if self.rng.random_ratio(r.heal, 1000) {
            self.net.heal();
            self.log(|| "heal".to_string());
        }
        if self.rng.random_ratio(r.hostile, 1000) {
            self.hostile()?;
        }
        Ok(())
    }

    fn members(&self) -> Vec<u64> {
        self.checker
            .latest_conf()
            .map(|cs| cs.voters.iter().chain(cs.learners.iter()).copied().collect())
            .unwrap_or_default()
    }

    /// Quiet world: no loss, no partitions, every server up again, except servers outside
    /// the committed membership that still believe they are voters: the operator shuts
    /// removed servers down, and without pre-vote or check-quorum such a server would
    /// disrupt every election (Raft thesis, 4.2.3). Removed servers that know it stay up: they
    /// never campaign, but may still be needed to vote by a member that has not yet learned
    /// of the change.
    fn quiet(&mut self) -> Result<(), Violation> {
        let members = self.members();
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            let n = self.node(id);
            let believes_voter = n.storage.initial_state().is_ok_and(|s| s.conf_state.voters.contains(&id));
            if !members.contains(&id) && believes_voter {
                if n.alive() {
                    n.crash();
                }
            } else if !n.alive() {
                n.restart()?;
            }
        }
        Ok(())
    }

    /// A leader of the highest term among members that has applied its whole log: with no
    /// conf change pending it cannot be removed, so proposals made to it must commit.
    fn stable_leader(&self) -> Option<u64> {
        let members = self.members();
        let live = || members.iter().filter_map(|id| self.nodes.get(id)).filter_map(|n| n.raw.as_ref());
        let top = live().map(|r| r.hard_state().current_term).max()?;
        live()
            .map(|r| r.status())
            .find(|st| {
                st.role == raft::Role::Leader
                    && st.term == top
                    && st.conf_state.voters.contains(&st.id)
                    && st.applied == st.last_index
            })
            .map(|st| st.id)
    }

    fn quiet_steps<T>(
        &mut self,
        what: &str,
        done: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, Violation> {
        self.quiet_steps_progressing(what, |_| 0, done)
    }

    /// Steps with the faults stopped until `done` says so. The budget of [`LIVENESS_TICKS`]
    /// starts again whenever `progress` grows, up to [`LIVENESS_CATCH_UP_FACTOR`] budgets in
    /// all: a member catching up one entry per round trip (a one-entry message size and one
    /// message in flight) is slow, not stuck, and what liveness demands is that it is never
    /// stuck.
    fn quiet_steps_progressing<T>(
        &mut self,
        what: &str,
        progress: impl Fn(&Self) -> u64,
        mut done: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, Violation> {
        let budget = LIVENESS_TICKS * STEPS_PER_TICK;
        let mut best = progress(self);
        let mut since_progress = 0;
        for _ in 0..budget * LIVENESS_CATCH_UP_FACTOR {
            self.quiet()?;
            self.step(true)?;
            if let Some(t) = done(self) {
                return Ok(t);
            }
            let now = progress(self);
            if now > best {
                best = now;
                since_progress = 0;
            } else {
                since_progress += 1;
                if since_progress >= budget {
                    break;
                }
            }
        }
        let mut msg = format!("liveness: {what} within {LIVENESS_TICKS} ticks after the faults stopped");
        msg.push_str(&format!("\n  latest conf: {:?}", self.checker.latest_conf()));
        for n in self.nodes.values() {
            let st = n.raw.as_ref().map(|r| r.status());
            msg.push_str(&format!("\n  node {} applied {} status {st:?}", n.id, n.applied()));
            let (first, last) = (n.storage.first_index().unwrap_or(1), n.storage.last_index().unwrap_or(0));
            let tail: Vec<(u64, u64)> = n
                .storage
                .entries(first.max(last.saturating_sub(7)), last + 1, None)
                .unwrap_or_default()
                .iter()
                .map(|e| (e.index, e.term))
                .collect();
            msg.push_str(&format!("\n    persisted log tail (index, term): {tail:?}"));
        }
        Err(msg)
    }

    fn liveness(&mut self) -> Result<(), Violation> {
        self.net.heal();
        self.net.faults = Faults { loss: 0, dup: 0, max_delay: 1, reorder: false };
        // Elected, and still leading two election timeouts later: whatever the fault phase
        // left in flight (a leadership transfer, say) has played out by then.
        let settle = 2 * ELECTION_TICK as u64 * STEPS_PER_TICK;
        let mut seen: Option<(u64, u64)> = None;
        let leader = self.quiet_steps("no leader elected", |s| {
            let leader = s.stable_leader()?;
            match seen {
                Some((l, since)) if l == leader => (s.now - since >= settle).then_some(leader),
                _ => {
                    seen = Some((leader, s.now));
                    None
                }
            }
        })?;
        self.log(|| format!("quiet phase: leader {leader}"));
        let mut last = 0;
        for i in 0..3 {
            let data = format!("final-{i}").into_bytes();
            // Retry while a leadership transfer from the fault phase is still pending.
            let index = self.quiet_steps("a proposal was not accepted", |s| {
                let leader = s.stable_leader()?;
                let n = s.nodes.get_mut(&leader)?;
                let d = data.clone();
                match n.input(&mut s.checker, |r| r.propose(d)) {
                    Ok(Some(Ok(_))) => n.raw.as_ref().map(|r| r.status().last_index),
                    _ => None,
                }
            })?;
            last = last.max(index);
        }
        let target = last.max(self.checker.max_acked);
        // Progress: the entries applied on the members still behind, summed.
        let caught_up = |s: &Self| -> u64 {
            s.members().iter().map(|id| s.nodes.get(id).map_or(0, |n| n.applied().min(target))).sum()
        };
        self.quiet_steps_progressing(
            "proposals made to the leader did not commit everywhere (no member caught up further)",
            caught_up,
            |s| {
                let members = s.members();
                let all = members.iter().all(|id| s.nodes.get(id).is_some_and(|n| n.applied() >= target));
                all.then_some(())
            },
        )?;
        for i in 0..3 {
            let data = format!("final-{i}").into_bytes();
            if !self.applied_data_contains(&data) {
                return Err(format!("liveness: proposal final-{i} was accepted but never applied"));
            }
        }
        Ok(())
    }

    fn applied_data_contains(&self, data: &[u8]) -> bool {
        self.checker.applied_data.contains_key(data)
    }
}

/// Runs one seed: the fault phase for `opts.steps` steps, then the liveness phase.
pub fn run_seed(opts: &SimOptions) -> Result<Outcome, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let voters: u64 = if rng.random_ratio(1, 2) { 3 } else { 5 };
    let pool: Vec<u64> = (1..=voters + 2).collect();
    let cfg = Config {
        id: 1,
        election_tick: ELECTION_TICK,
        heartbeat_tick: rng.random_range(1..=3),
        pre_vote: rng.random(),
        check_quorum: rng.random(),
        max_size_per_msg: *[1u64, 200, 1 << 20].choose(&mut rng).expect("non-empty"),
        max_inflight_msgs: *[1usize, 4, 64].choose(&mut rng).expect("non-empty"),
        snapshot_chunk_size: *[8usize, 33, 4096].choose(&mut rng).expect("non-empty"),
        applied: 0,
        seed: opts.seed,
        forward_seq_base: 1,
        strict_reconfig_check: rng.random(),
    };
    let faults = Faults {
        loss: *[0u32, 20, 100, 250].choose(&mut rng).expect("non-empty"),
        dup: *[0u32, 30, 150].choose(&mut rng).expect("non-empty"),
        max_delay: *[1u64, 4, 12].choose(&mut rng).expect("non-empty"),
        reorder: true,
    };
    let mut pick = |choices: &[u32]| *choices.choose(&mut rng).expect("non-empty");
    let rates = Rates {
        propose: pick(&[50, 150, 300]),
        read: pick(&[10, 30, 80]),
        conf: pick(&[3, 10, 40]),
        transfer: pick(&[2, 5, 20]),
        compact: pick(&[3, 10, 40]),
        crash: pick(&[1, 4, 12]),
        restart: pick(&[10, 20, 60]),
        partition: pick(&[1, 4, 12]),
        heal: pick(&[5, 10, 30]),
        hostile: pick(&[0, 20, 60]),
    };
    let mut sim = Sim {
        rng,
        rates,
        now: 0,
        nodes: BTreeMap::new(),
        net: Network::new(faults),
        checker: Checker::default(),
        pool,
        cfg: cfg.clone(),
        trace: Vec::new(),
        verbose: opts.verbose,
        proposals: 0,
        reads: 0,
        conf_changes: 0,
    };
    sim.log(|| format!("seed {} voters {voters} {cfg:?} {faults:?} {rates:?}", opts.seed));
    let ids: Vec<u64> = (1..=voters).collect();
    let boot = bootstrap(&ids).map_err(|e| e.to_string())?;
    let result = (|| -> Result<(), Violation> {
        for &id in &ids {
            let s = MemStorage::new();
            s.append(&boot.entries).map_err(|e| e.to_string())?;
            s.set_hard_state(boot.hard_state);
            let mut n = SimNode::new(sim.cfg(id), s, &mut sim.checker)?;
            n.verbose = sim.verbose;
            sim.nodes.insert(id, n);
        }
        for _ in 0..opts.steps {
            sim.step(true)?;
            sim.fault_event()?;
        }
        sim.liveness()
    })();
    let outcome = Outcome {
        steps: sim.now,
        leaders: sim.checker.leaders_elected,
        applied: sim.checker.max_acked,
        reads: sim.checker.reads_confirmed,
        conf_changes: sim.conf_changes,
        crashes: sim.nodes.values().map(|n| n.crashes).sum(),
        snapshots_installed: sim.nodes.values().map(|n| n.snapshots_installed).sum(),
        acked: sim.checker.acked,
        acked_forwarded: sim.checker.acked_forwarded,
        failed: sim.checker.failed_count,
        refused: sim.checker.refused,
    };
    match result {
        Ok(()) => {
            if opts.verbose {
                for l in &sim.trace {
                    println!("{l}");
                }
            }
            Ok(outcome)
        }
        Err(v) => {
            let tail: Vec<&String> = sim.trace.iter().rev().take(300).collect();
            let mut msg = format!("seed {} failed at step {}: {v}", opts.seed, sim.now);
            // The first line is the seed's configuration, which explains much of what follows.
            if sim.trace.len() > tail.len()
                && let Some(first) = sim.trace.first()
            {
                msg.push('\n');
                msg.push_str(first);
                msg.push_str("\n...");
            }
            for l in tail.into_iter().rev() {
                msg.push('\n');
                msg.push_str(l);
            }
            Err(msg)
        }
    }
}
