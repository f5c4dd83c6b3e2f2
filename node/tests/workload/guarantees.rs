//! Watch, Lease and Lock clients running beside the KV workload, and their verdict.
//!
//! Started once the workload runs ([`Guarantees::start`]): the watchers of
//! [`super::watchers::plans`] (four per member; the faults begin only once every one is
//! created), [`HOLDERS_PER_MEMBER`] lease holders per member (every second one stops keeping its
//! lease alive at a seeded instant in the fault phase), and one locker per member. Their keys
//! are under `l…` (`lease/`, `lock/`), outside the workload's `[k, l)`, and every write they make
//! is recorded in the workload's history (see [`super::watchers::Pins`] for the deletes the
//! server makes), so the whole database is checked as one and the watchers are checked against
//! its revision log.

use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use kvcheck::{
    Acquisition, ChangeKind, ClientId, DbHistory, DbOp, DbOutcome, DbOutput, KeyRange, KeyValue, Response,
    Revision, RevisionLog, StreamItem, check_lock_fencing, check_members_agree, check_watch_stream,
    release_revision,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{oneshot, watch};

use super::leases::{self, LeaseLog};
use super::lockers::{self, LockerLog};
use super::members::Members;
use super::requests::{self, revision};
use super::watchers::{self, Finish, Pins, Recorded, Watcher};
use super::{Workload, connect};

pub const HOLDERS_PER_MEMBER: usize = 2;
/// Client ids of the final reads of `[l, m)`.
const FINAL_READ_CLIENTS: u64 = 3_000;
/// Client ids of the watch observations added to the history.
const OBSERVATION_CLIENTS: u64 = 200_000;

/// The running Watch, Lease and Lock clients.
pub struct Guarantees {
    members: Members,
    pins: Pins,
    finish: Finish,
    watchers: Vec<Watcher>,
    stop: watch::Sender<bool>,
    holders: Vec<tokio::task::JoinHandle<LeaseLog>>,
    lockers: Vec<tokio::task::JoinHandle<LockerLog>>,
    election_timeout: Duration,
}

/// What the clients recorded, once stopped.
pub struct Recordings {
    pub leases: Vec<LeaseLog>,
    pub lockers: Vec<LockerLog>,
    pub watchers: Vec<Recorded>,
    /// Each member's final read of `[l, m)`.
    pub finals: Vec<Vec<KeyValue>>,
    pub lease_summary: Result<leases::LeaseSummary, Vec<String>>,
    pub through: Revision,
    /// Watch observations added to the history ([`Recordings::observations`]).
    pub observations: usize,
    pub election_timeout: Duration,
}

/// The store's revision, read from any member (for the watchers' start revisions).
async fn current_revision(members: &Members) -> Revision {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for endpoint in members.endpoints() {
            if let Some(mut c) = connect(std::slice::from_ref(endpoint)).await
                && let Ok(Ok(r)) = tokio::time::timeout(requests::REQUEST_TIMEOUT, c.get("k", None)).await
            {
                return revision(r.header());
            }
        }
        assert!(Instant::now() < deadline, "no member answered a read for 30 s");
    }
}

impl Guarantees {
    /// Starts the clients (see the module docs) for a fault phase of `fault_secs`.
    pub async fn start(workload: &Workload, seed: u64, fault_secs: u64, election_timeout: Duration) -> Self {
        let members = workload.members.clone();
        let pins = Pins::new(workload.rec.clone());
        let (finish, finish_rx) = watch::channel(None);
        let revision = current_revision(&members).await;
        let mut created = Vec::new();
        let watchers = watchers::plans(members.len(), revision)
            .into_iter()
            .map(|plan| {
                let (tx, rx) = oneshot::channel();
                created.push((plan.name.clone(), rx));
                Watcher::spawn(plan, members.clone(), pins.clone(), finish_rx.clone(), tx)
            })
            .collect();
        for (name, rx) in created {
            let ok = tokio::time::timeout(Duration::from_secs(30), rx).await;
            assert!(matches!(ok, Ok(Ok(()))), "watcher {name} was not created within 30 s");
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1ea5e);
        let holders = (0..(HOLDERS_PER_MEMBER * members.len()) as u64)
            .map(|i| {
                let stop_after = (i % 2 == 1).then(|| {
                    let latest = (fault_secs * 600).max(2_500);
                    Duration::from_millis(rng.random_range(2_000..latest))
                });
                let (m, r, p, s) = (members.clone(), workload.rec.clone(), pins.clone(), stop_rx.clone());
                tokio::spawn(leases::holder(i, m, r, p, s, stop_after))
            })
            .collect();
        let lockers = (0..members.len() as u64)
            .map(|i| {
                let (m, r, p, s) = (members.clone(), workload.rec.clone(), pins.clone(), stop_rx.clone());
                tokio::spawn(lockers::locker(i, m, r, p, s, seed))
            })
            .collect();
        Guarantees { members, pins, finish, watchers, stop, holders, lockers, election_timeout }
    }

    /// After the heal at `heal_at` and the workload's stop: stops the holders (they revoke their
    /// leases) and lockers (they unlock), waits for the lease bounds, reads `[l, m)` from every
    /// member (recorded), and lets every watcher catch up with the highest revision the history
    /// saw.
    pub async fn stop(self, workload: &Workload, heal_at: Instant) -> Recordings {
        let _ = self.stop.send(true);
        // Every step of a holder or locker is bounded by a timeout; 30 s here only turns a hang
        // into a failure that says who hung.
        let mut leases = Vec::new();
        for (i, h) in self.holders.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(30), h).await {
                Ok(log) => leases.push(log.expect("lease holder panicked")),
                Err(_) => panic!("lease holder h{i} did not stop within 30 s"),
            }
        }
        let mut lockers = Vec::new();
        for (i, l) in self.lockers.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(30), l).await {
                Ok(log) => lockers.push(log.expect("locker panicked")),
                Err(_) => panic!("locker l{i} did not stop within 30 s"),
            }
        }
        println!("guarantees: holders and lockers stopped; waiting for the leases to go");
        // The lease check waits (bounded) for the leases that must go; the final reads come after,
        // when the lock leases of crashed lockers have expired too.
        let lease_summary = leases::check_wait(&leases, &self.pins, heal_at, self.election_timeout).await;
        wait_empty(&self.members, Duration::from_secs(lockers::LOCK_TTL as u64) + self.election_timeout * 4)
            .await;
        println!("guarantees: final reads of [l, m)");
        let finals = final_reads(workload, &self.members).await;
        let through = workload
            .rec
            .history()
            .operations()
            .iter()
            .filter_map(|o| match &o.outcome {
                DbOutcome::Ok(out) => Some(out.revision),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        println!("guarantees: watchers catching up with revision {through}");
        let _ = self.finish.send(Some(through));
        let mut watchers = Vec::new();
        for w in self.watchers {
            match tokio::time::timeout(Duration::from_secs(30), w.join()).await {
                Ok(r) => watchers.push(r),
                Err(_) => panic!("a watcher did not catch up with revision {through} within 30 s"),
            }
        }
        let mut recordings = Recordings {
            leases,
            lockers,
            watchers,
            finals,
            lease_summary,
            through,
            observations: 0,
            election_timeout: self.election_timeout,
        };
        let observations = recordings.observations(&workload.history());
        recordings.observations = observations.len();
        workload.observe(observations);
        recordings
    }
}

/// Waits (up to `within`) until no key of `[l, m)` is left, as a linearizable read shows.
async fn wait_empty(members: &Members, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for endpoint in members.endpoints() {
            let Some(mut c) = connect(std::slice::from_ref(endpoint)).await else { continue };
            let options = etcd_client::GetOptions::new().with_range("m").with_count_only();
            if let Ok(Ok(r)) =
                tokio::time::timeout(requests::REQUEST_TIMEOUT, c.get("l", Some(options))).await
                && r.count() == 0
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A recorded linearizable read of `[l, m)` from every member.
async fn final_reads(workload: &Workload, members: &Members) -> Vec<Vec<KeyValue>> {
    let mut finals = Vec::new();
    for member in 0..members.len() {
        let client = FINAL_READ_CLIENTS + member as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(mut c) = connect(&[members.endpoint(member).to_string()]).await {
                let op = DbOp::Range { range: KeyRange::between("l", "m") };
                let pending = workload.rec.invoke(client, op.clone());
                let (outcome, _) = requests::execute(&mut c, &op).await;
                let kvs = match &outcome {
                    DbOutcome::Ok(out) => match &out.response {
                        Response::Range { kvs, .. } => Some(kvs.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                workload.rec.complete(pending, outcome);
                if let Some(kvs) = kvs {
                    finals.push(kvs);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "final read of [l, m) from member {member} kept failing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    finals
}

impl Recordings {
    /// What the watchers were told about revisions no acknowledged put or delete of the history
    /// claims (those filled by unknown-outcome writes, and transactions), as single-key reads at
    /// that revision (the key with the event's state, or absent after a delete), one per revision
    /// and key. The check then places the unknown writes where the server did, so the revision
    /// log matches the server's even where no client read could tell two placements apart (two
    /// lost puts of one key). A watcher reporting a change no write made still fails `check_db`,
    /// and watchers disagreeing fail `check_members_agree`.
    pub fn observations(&self, history: &DbHistory) -> Vec<(ClientId, DbOp, DbOutput)> {
        let claimed: BTreeSet<Revision> = history
            .operations()
            .iter()
            .filter_map(|o| match (&o.op, &o.outcome) {
                (DbOp::Put { .. }, DbOutcome::Ok(out)) => Some(out.revision),
                (DbOp::DeleteRange { .. }, DbOutcome::Ok(out))
                    if matches!(out.response, Response::DeleteRange { deleted } if deleted > 0) =>
                {
                    Some(out.revision)
                }
                _ => None,
            })
            .collect();
        let mut seen: BTreeMap<(Revision, String), Option<KeyValue>> = BTreeMap::new();
        for w in &self.watchers {
            for item in w.items_through(self.through) {
                let StreamItem::Events { events, .. } = item else { continue };
                for e in events {
                    let kv = e.change.kv;
                    if claimed.contains(&kv.mod_revision) {
                        continue;
                    }
                    let state = (e.change.kind == ChangeKind::Put).then(|| kv.clone());
                    seen.entry((kv.mod_revision, kv.key)).or_insert(state);
                }
            }
        }
        seen.into_iter()
            .enumerate()
            .map(|(i, ((revision, key), state))| {
                let kvs: Vec<KeyValue> = state.into_iter().collect();
                let response = Response::Range { count: kvs.len() as u64, kvs };
                let op = DbOp::Range { range: KeyRange::single(key) };
                (OBSERVATION_CLIENTS + i as ClientId, op, DbOutput { revision, response })
            })
            .collect()
    }

    /// Checks the watchers against `log` and each other, the locks by revision, and reports the
    /// lease verdict; prints the numbers under `label`. Returns the problems found.
    pub fn verify(&self, label: &str, log: &RevisionLog) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut total_events = 0;
        println!(
            "{label}: watchers (checked through revision {}; {} of their events, at revisions no acknowledged \
             put or delete claims, were added to the history as reads)",
            self.through, self.observations
        );
        for w in &self.watchers {
            let Some(spec) = w.spec(self.through) else {
                problems.push(format!("watcher {} was never created", w.plan.name));
                continue;
            };
            let items = w.items_through(self.through);
            match check_watch_stream(log, &spec, &items) {
                Ok(s) => {
                    total_events += s.events;
                    println!(
                        "  {:<26} from {:>5}: {:>6} events, {:>4} progress, {:>3} reconnects",
                        w.plan.name, spec.start_revision, s.events, s.progress, s.reconnects
                    );
                }
                Err(e) => problems.push(format!("watcher {}: {e}", w.plan.name)),
            }
        }
        let streams: Vec<Vec<StreamItem>> =
            self.watchers.iter().map(|w| w.items_through(self.through)).collect();
        match check_members_agree(streams.iter().map(Vec::as_slice)) {
            Ok(n) => println!("{label}: members agree: {n} events compared across watchers and members"),
            Err(e) => problems.push(format!("watch events across members: {e}")),
        }
        let acquisitions: Vec<Acquisition> = self
            .lockers
            .iter()
            .flat_map(|l| &l.held)
            .map(|h| Acquisition {
                holder: h.holder.clone(),
                key: h.key.clone(),
                create_revision: h.create_revision,
                acquired_at: h.acquired_at,
                released_at: release_revision(log, &h.key, h.create_revision),
            })
            .collect();
        let sessions: usize = self.lockers.iter().map(|l| l.sessions).sum();
        let crashed: usize = self.lockers.iter().map(|l| l.crashed).sum();
        let expired: usize = self.lockers.iter().map(|l| l.expired_while_waiting).sum();
        match check_lock_fencing(&acquisitions) {
            Ok(n) => println!(
                "{label}: locks: {n} acquisitions fenced by revision ({sessions} sessions, {crashed} crashed \
                 holders released by lease expiry, {expired} sessions lost while waiting)"
            ),
            Err(e) => problems.push(format!("lock: {e}")),
        }
        match &self.lease_summary {
            Ok(s) => println!(
                "{label}: leases: {} leases, {} keep-alive answers, {} stopped mid-run, {} revoked at the end, \
                 slowest stop-to-gone {:?}, slowest gone after the later of stop and heal {:?} (bound: TTL {} s + \
                 election timeout {:?} + {:?} = {:?})",
                s.leases,
                s.keep_alive_answers,
                s.stopped_mid_run,
                s.revoked,
                s.slowest_expiry,
                s.slowest_bounded,
                leases::LEASE_TTL,
                self.election_timeout,
                leases::SLACK,
                Duration::from_secs(leases::LEASE_TTL as u64) + self.election_timeout + leases::SLACK
            ),
            Err(p) => problems.extend(p.iter().cloned()),
        }
        let streams: Vec<&[StreamItem]> = streams.iter().map(Vec::as_slice).collect();
        problems.extend(leases::check_keys(&self.leases, &self.finals, &streams));
        println!(
            "{label}: watch/lease/lock: {} watchers, {total_events} events checked, {} violations",
            self.watchers.len(),
            problems.len()
        );
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}
