//! The concurrent workload and verdict shared by the fault suites (`faults_process.rs`,
//! `faults_container.rs`).
//!
//! Clients pinned to every member ([`members`]) send etcd requests over a few keys: reads of one
//! key, of two and of all of them, puts, deletes, compare-and-set and multi-key transactions
//! ([`requests`]). Each is recorded with its response (header revision, create/mod revision and
//! version of every key returned) in a `kvcheck` whole-database history, with an outcome that is
//! ok, failed (definitely not applied) or unknown. After healing, every member answers a
//! linearizable read of the whole key space, and the verdict is:
//!
//! - `check_db`: the history is linearizable against etcd's whole-database model (one revision
//!   per write, create/mod revision and version per key, ranges, transaction atomicity);
//! - the per-key register check on the history's projection ([`project`]), which trusts no
//!   revision the server reports;
//! - no lost acknowledged write, checked on the projection against each member's final read;
//! - every member that was up most of the run served writes and linearizable reads.
//!
//! Watchers, lease holders and lockers run beside the KV clients ([`guarantees`]); their writes
//! are in the same history, and their streams, leases and lock tenures are checked against the
//! revision log `check_db` returns ([`guarantees::Recordings::verify`]).

#![allow(dead_code)]

pub mod guarantees;
pub mod leases;
pub mod lockers;
pub mod members;
pub mod project;
pub mod requests;
pub mod watchers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use kvcheck::{
    CheckOptions, CheckResult, ClientId, DbCheckResult, DbHistory, DbOp, DbOperation, DbOutcome, DbOutput,
    DbRecorder, OpId, Response, RevisionLog, check, check_db,
};
pub use members::{Answer, Members};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
pub use requests::REQUEST_TIMEOUT;

/// Clients pinned to each member.
pub const CLIENTS_PER_MEMBER: usize = 2;
/// Budget of each of the two checks.
const CHECK_BUDGET: Duration = Duration::from_secs(90);

/// Reads a numeric knob from the environment.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Connects within [`REQUEST_TIMEOUT`], or `None`.
pub async fn connect(endpoints: &[String]) -> Option<Client> {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_millis(500));
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(opts))).await.ok()?.ok()
}

/// (member id of the answering member, leader id it reports).
pub async fn status(endpoint: &str) -> Option<(u64, u64)> {
    let mut c = connect(&[endpoint.to_string()]).await?;
    let s = tokio::time::timeout(Duration::from_secs(1), c.status()).await.ok()?.ok()?;
    Some((s.header()?.member_id(), s.leader()))
}

/// Who served each request, and why requests did not succeed.
#[derive(Debug, Default)]
struct Tally {
    served_by: Mutex<Vec<(OpId, usize)>>,
    /// Reason => (unknown, failed) counts.
    reasons: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Tally {
    fn note(
        &self,
        members: &Members,
        op_id: OpId,
        member: usize,
        op: &DbOp,
        outcome: &DbOutcome,
        reason: Option<String>,
    ) {
        let answer = match outcome {
            DbOutcome::Ok(_) if requests::may_write(op) => Answer::OkWrite,
            DbOutcome::Ok(_) => Answer::OkRead,
            DbOutcome::Unknown => Answer::Unknown,
            DbOutcome::Failed => Answer::Failed,
        };
        members.record(member, answer);
        self.served_by.lock().unwrap_or_else(PoisonError::into_inner).push((op_id, member));
        if let Some(reason) = reason {
            let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
            let counts = reasons.entry(reason).or_default();
            if *outcome == DbOutcome::Unknown {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
}

/// One workload client, pinned to member `id mod n` (see [`members`]); reconnects after any
/// request that did not succeed.
async fn client_loop(
    id: u64,
    members: Members,
    rec: DbRecorder,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let home = id as usize % members.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (id * 0x9e37_79b9));
    let mut seen = requests::Seen::new();
    let mut conn: Option<(usize, Client)> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let target = members.route(home);
        if conn.as_ref().map(|(m, _)| *m) != Some(target) {
            conn = connect(&[members.endpoint(target).to_string()]).await.map(|c| (target, c));
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some((member, c)) = conn.as_mut() else { continue };
        let member = *member;
        seq += 1;
        let op = requests::next_op(&mut rng, &seen, id, seq);
        let pending = rec.invoke(id, op.clone());
        let op_id = pending.id();
        let (outcome, reason) = requests::execute(c, &op).await;
        if let DbOutcome::Ok(out) = &outcome {
            requests::remember(&mut seen, &op, &out.response);
        }
        let failed = reason.is_some();
        tally.note(&members, op_id, member, &op, &outcome, reason);
        rec.complete(pending, outcome);
        if failed {
            // A fresh connection after a timeout or a broken stream; a short pause so that a
            // leaderless member is not hammered.
            conn = None;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The running workload: [`CLIENTS_PER_MEMBER`] clients per member recording into one history.
pub struct Workload {
    pub rec: DbRecorder,
    pub members: Members,
    /// Reads added after the run (watch observations, see [`Workload::observe`]).
    observed: Mutex<Vec<DbOperation>>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts the clients, pinned to `members`.
    pub fn start(members: Members, seed: u64) -> Self {
        let rec = DbRecorder::new();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let workers = (0..Self::clients_for(&members))
            .map(|id| {
                let (m, r, t, s) = (members.clone(), rec.clone(), tally.clone(), stop.clone());
                tokio::spawn(client_loop(id, m, r, t, s, seed))
            })
            .collect();
        Workload { rec, members, observed: Mutex::default(), tally, stop, workers }
    }

    /// Adds reads that no client sent but the server answered all the same (what watchers were
    /// told, see `guarantees::observations`), each spanning the whole run: invoked at 0 and
    /// completed after everything recorded, so they add no real-time constraint.
    pub fn observe(&self, ops: impl IntoIterator<Item = (ClientId, DbOp, DbOutput)>) {
        self.observed.lock().unwrap_or_else(PoisonError::into_inner).extend(ops.into_iter().map(
            |(client, op, out)| DbOperation {
                id: 0,
                client,
                op,
                invoke: 0,
                complete: 0,
                outcome: DbOutcome::Ok(out),
            },
        ));
    }

    /// The recorded history with the observations ([`Workload::observe`]) appended.
    pub fn history(&self) -> DbHistory {
        let recorded = self.rec.history();
        let observed = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        if observed.is_empty() {
            return recorded;
        }
        let mut ops = recorded.operations().to_vec();
        let next_id = ops.iter().map(|o| o.id + 1).max().unwrap_or(0);
        let end = ops.iter().map(|o| o.complete).max().unwrap_or(0) + 1;
        ops.extend(observed.iter().enumerate().map(|(i, o)| DbOperation {
            id: next_id + i as OpId,
            complete: end,
            ..o.clone()
        }));
        DbHistory::new(ops).expect("observations get fresh ids and span the run")
    }

    fn clients_for(members: &Members) -> u64 {
        (CLIENTS_PER_MEMBER * members.len()) as u64
    }

    /// Stops the clients and waits for their last operations to complete.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            w.await.unwrap();
        }
    }

    /// After healing, one linearizable read of the whole key space from every member (client id
    /// `clients + member`), recorded in the history; retries for up to 30 s per member. Returns
    /// each member's view of every key.
    pub async fn final_reads(&self) -> Result<Vec<HashMap<String, Option<String>>>, String> {
        let mut finals = Vec::new();
        let op = DbOp::Range { range: requests::whole_range() };
        for member in 0..self.members.len() {
            let client = Self::clients_for(&self.members) + member as u64;
            let endpoint = [self.members.endpoint(member).to_string()];
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut reader = connect(&endpoint).await;
            loop {
                if let Some(r) = reader.as_mut() {
                    let pending = self.rec.invoke(client, op.clone());
                    let op_id = pending.id();
                    let (outcome, reason) = requests::execute(r, &op).await;
                    self.tally.note(&self.members, op_id, member, &op, &outcome, reason);
                    if let DbOutcome::Ok(out) = &outcome
                        && let Response::Range { kvs, .. } = &out.response
                    {
                        let mut view: HashMap<String, Option<String>> =
                            (0..requests::KEYS).map(|k| (requests::key(k), None)).collect();
                        for kv in kvs {
                            view.insert(kv.key.clone(), Some(kv.value.clone()));
                        }
                        self.rec.complete(pending, outcome);
                        finals.push(view);
                        break;
                    }
                    self.rec.complete(pending, outcome);
                }
                if Instant::now() >= deadline {
                    return Err(format!("final read from member {member} kept failing for 30 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                reader = connect(&endpoint).await;
            }
        }
        Ok(finals)
    }

    /// Why requests did not succeed, most frequent first: `unknown failed reason` lines.
    pub fn reasons(&self) -> String {
        let reasons = self.tally.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<_> = reasons.iter().collect();
        rows.sort_by_key(|(_, (u, f))| std::cmp::Reverse(u + f));
        rows.iter().map(|(r, (u, f))| format!("{u:>7} unknown {f:>7} failed  {r}\n")).collect()
    }

    /// Prints the run's report under `label` (operations by outcome, `faults`, requests by member,
    /// why requests did not succeed) and runs [`verify`] on the history. On failure the history
    /// is saved ([`Workload::save`]) and returned with the verdict; `RAFTKV_KEEP_HISTORY=1` saves
    /// it after a passing run too.
    pub fn conclude(
        &self,
        label: &str,
        seed: u64,
        faults: &str,
        finals: &[HashMap<String, Option<String>>],
        names: &[String],
    ) -> Result<RevisionLog, (Verdict, PathBuf)> {
        let history = self.history();
        // The per-key check gets the history as the clients recorded it: the watch observations
        // span the whole run, which only costs that check time (a read concurrent with
        // everything), and exist for `check_db`'s revision log.
        let recorded = self.rec.history();
        let s = summarize(&recorded);
        println!(
            "{label}: seed {seed}: {} operations ({} ok, {} unknown, {} failed), {faults}",
            s.total, s.ok, s.unknown, s.failed
        );
        println!("{label}: requests by member\n{}", self.members.report(names));
        println!("{label}: why requests did not succeed\n{}", self.reasons());
        let verdict = verify(label, &history, &recorded, finals, &self.members, names);
        if verdict.is_ok() && env_u64("RAFTKV_KEEP_HISTORY") == Some(1) {
            println!("{label}: history in {}", self.save(&history, label, seed).display());
        }
        verdict.map_err(|v| (v, self.save(&history, label, seed)))
    }

    /// Writes the whole history as JSON next to the temp files, for replaying the check
    /// (`DbHistory::read_json_file`) after a failed run, and which member served each request
    /// (`<op id> <member index>` lines); returns the history's path.
    pub fn save(&self, history: &DbHistory, label: &str, seed: u64) -> PathBuf {
        let base = std::env::temp_dir().join(format!("{label}-seed-{seed}"));
        let path = base.with_extension("history.json");
        match history.to_json() {
            Ok(json) => {
                if let Err(e) = std::fs::write(&path, json) {
                    println!("{label}: could not write {}: {e}", path.display());
                }
            }
            Err(e) => println!("{label}: could not serialize the history: {e}"),
        }
        let served = self.tally.served_by.lock().unwrap_or_else(PoisonError::into_inner);
        let lines: String = served.iter().map(|(op, m)| format!("{op} {m}\n")).collect();
        let _ = std::fs::write(base.with_extension("served-by.txt"), lines);
        path
    }
}

/// Why a run failed its verdict.
#[derive(Debug)]
pub enum Verdict {
    /// Watch, Lease or Lock guarantees broken (see `guarantees.rs`).
    Guarantees(Vec<String>),
    /// Not linearizable; the minimal failing history's file, if one was written.
    Violation { check: &'static str, text: String, artifact: Option<PathBuf> },
    /// A checker ran out of budget.
    Undecided(String),
    /// Acknowledged writes not readable at the end.
    LostWrites(Vec<String>),
    /// Too few successful operations to mean anything.
    TooFewOps(usize),
    /// Members that were up most of the run but served no write or no read.
    IdleMembers(Vec<String>),
}

/// Counts of a history's operations by outcome, for the report.
pub struct Summary {
    pub total: usize,
    pub ok: usize,
    pub unknown: usize,
    pub failed: usize,
}

pub fn summarize(history: &DbHistory) -> Summary {
    let ops = history.operations();
    Summary {
        total: ops.len(),
        ok: ops.iter().filter(|o| matches!(o.outcome, DbOutcome::Ok(_))).count(),
        unknown: ops.iter().filter(|o| o.outcome == DbOutcome::Unknown).count(),
        failed: ops.iter().filter(|o| o.outcome == DbOutcome::Failed).count(),
    }
}

/// Runs the verdict (see the module docs), printing each check's report under `label`.
pub fn verify(
    label: &str,
    history: &DbHistory,
    recorded: &DbHistory,
    finals: &[HashMap<String, Option<String>>],
    members: &Members,
    names: &[String],
) -> Result<RevisionLog, Verdict> {
    let ok_ops = summarize(history).ok;
    if ok_ops <= 50 {
        return Err(Verdict::TooFewOps(ok_ops));
    }
    let options = || CheckOptions::default().with_time_budget(CHECK_BUDGET);
    let report = check_db(history, options());
    println!("{label}: check_db: {report}");
    let log = match &report.result {
        DbCheckResult::Ok(log) => log.clone(),
        DbCheckResult::Violation(v) => {
            let artifact = v.artifact_path().map(|p| p.to_path_buf());
            return Err(Verdict::Violation { check: "check_db", text: v.to_string(), artifact });
        }
        DbCheckResult::Timeout { .. } => return Err(Verdict::Undecided(report.to_string())),
    };
    let projected = project::per_key(recorded);
    let report = check(&projected, options());
    println!("{label}: per-key check: {report}");
    match &report.result {
        CheckResult::Ok => {}
        CheckResult::Violation(v) => {
            let artifact = v.artifact_path().map(|p| p.to_path_buf());
            return Err(Verdict::Violation { check: "per-key check", text: v.to_string(), artifact });
        }
        other => return Err(Verdict::Undecided(format!("{other:?}"))),
    }
    let lost: Vec<String> = finals
        .iter()
        .enumerate()
        .flat_map(|(m, view)| {
            let name = names.get(m).cloned().unwrap_or_default();
            project::lost_writes(&projected, view).into_iter().map(move |p| format!("read from {name}: {p}"))
        })
        .collect();
    if !lost.is_empty() {
        return Err(Verdict::LostWrites(lost));
    }
    let idle = members.idle(names);
    if idle.is_empty() { Ok(log) } else { Err(Verdict::IdleMembers(idle)) }
}
