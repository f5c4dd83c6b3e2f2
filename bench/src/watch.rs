//! The watch workloads (`kvbench watch`): how soon a put reaches a watcher on another member,
//! and how many events per second the members deliver to many watchers of one prefix.
//!
//! Both share one shape. Watchers are created on a prefix no earlier run wrote to, over
//! `--streams` watch streams (each on its own gRPC connection, several watchers multiplexed on
//! one stream as clientv3 does), stream `j` on watch member `j mod m`, watcher `i` on stream
//! `i mod s`. Only once every watcher is created does a separate client start putting to the
//! leader at a fixed rate (`--rate`, at most `--writers` puts in flight). Each value carries the
//! put's sequence number and the instant it was sent on kvbench's monotonic clock, which the
//! watchers share (one process), so an event's latency is the time from the put leaving the
//! writer to the event arriving at the watcher, with no clock skew.
//!
//! Every watcher keeps the set of sequence numbers it received: an event seen twice is a
//! duplicate, and an acknowledged put a watcher never saw by the end of the drain (the writer
//! has stopped; kvbench waits up to `--drain-timeout` for the events still on their way) is a
//! missing event. Events per second are those received during the measured window, across all
//! watchers; latencies are those of the puts sent in it. The servers' resident memory is read
//! every [`RSS_INTERVAL`](crate::rss::RSS_INTERVAL) from the creation of the watchers to the end
//! of the drain.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use etcd_client::{Client, Event, EventType, KvClient, WatchOptions, WatchResponse, WatchStream};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch as signal;
use tokio::task::JoinSet;

use crate::conn;
use crate::error::BenchError;
use crate::keys;
use crate::procfs::CpuSample;
use crate::rss::RssSampler;
use crate::stats::Latencies;

/// Bytes of a value that carry the put's identity: sequence number and send time.
pub const HEADER_BYTES: usize = 16;
/// Distinct keys the writer cycles through under the run's prefix.
const KEYS_PER_RUN: u64 = 100;
/// Highest sequence number a watcher accepts; a larger one is no put of this run.
const MAX_SEQ: u64 = 1 << 32;
/// How often the drain checks whether every watcher has every event.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// The watch workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatchWorkload {
    /// Put → event latency: one watcher on a follower, puts on the leader at a moderate rate.
    WatchLatency,
    /// Fan-out: many watchers of one prefix over every member, puts at a fixed rate; events
    /// delivered per second.
    WatchFanout,
}

impl WatchWorkload {
    /// The name used on the command line, in records and in the report.
    pub fn name(self) -> &'static str {
        match self {
            WatchWorkload::WatchLatency => "watch-latency",
            WatchWorkload::WatchFanout => "watch-fanout",
        }
    }
}

/// Which members the watchers are on. The writer always sends to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Every member but the leader: an event must cross Raft before a watcher sees it.
    Followers,
    /// Every member given, the leader included.
    All,
}

impl Placement {
    /// The name used on the command line, in records and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Followers => "followers",
            Placement::All => "all",
        }
    }
}

/// What one watch run does.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    /// Watchers of the run's prefix.
    pub watchers: u64,
    /// Watch streams (one gRPC connection each) the watchers are spread over.
    pub streams: u64,
    /// The members the streams go to.
    pub placement: Placement,
    /// Puts per second the writer aims at.
    pub rate: f64,
    /// Puts in flight at most.
    pub writers: u64,
    /// Bytes per value, at least [`HEADER_BYTES`].
    pub value_size: usize,
    /// Puts before the measured window (their events are checked, not measured).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Longest wait, after the last put, for the events still on their way.
    pub drain_timeout: Duration,
    /// Longest a put, a connect or a watch creation may take.
    pub request_timeout: Duration,
    /// Server processes whose memory and CPU time are read.
    pub server_pids: Vec<u32>,
    /// Seeds the values' filler bytes and the run's prefix.
    pub seed: u64,
}

impl WatchPlan {
    /// Rejects plans that cannot run.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.watchers == 0 || self.streams == 0 || self.writers == 0 {
            return Err(BenchError::Config("--watchers, --streams and --writers must be at least 1".into()));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(BenchError::Config(format!("--rate {} must be a positive number", self.rate)));
        }
        if self.value_size < HEADER_BYTES {
            return Err(BenchError::Config(format!(
                "--value-size {} is too small: a watch value carries {HEADER_BYTES} bytes of identity",
                self.value_size
            )));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Config("--duration must be above 0".into()));
        }
        Ok(())
    }
}

/// What a watch run measured.
#[derive(Debug)]
pub struct WatchStats {
    /// Watch streams opened (no more than there are watchers).
    pub streams: u64,
    /// Wall time of the measured window.
    pub elapsed: Duration,
    /// Puts sent in the window and acknowledged.
    pub puts: u64,
    /// Their acknowledgement latencies.
    pub put_latencies: Latencies,
    /// Events received in the window, over all watchers.
    pub events: u64,
    /// Put sent → event received, for the first delivery of every put sent in the window.
    pub latencies: Latencies,
    /// Acknowledged puts (warm-up included) some watcher never received, summed over watchers.
    pub missing: u64,
    /// Events a watcher received more than once, summed over watchers.
    pub duplicates: u64,
    /// Failed puts, broken or canceled watches, events no put of this run made.
    pub errors: u64,
    /// The first of those errors.
    pub first_error: Option<String>,
    /// CPU time used during the window.
    pub cpu: CpuSample,
    /// The servers' summed resident memory before any watcher was created, KiB.
    pub rss_before_kib: Option<u64>,
    /// Its highest reading from the watchers' creation to the end of the drain, KiB.
    pub rss_peak_kib: Option<u64>,
}

impl WatchStats {
    /// Acknowledged puts per second in the window.
    pub fn puts_per_s(&self) -> f64 {
        per_second(self.puts, self.elapsed)
    }

    /// Events received per second in the window, over all watchers.
    pub fn events_per_s(&self) -> f64 {
        per_second(self.events, self.elapsed)
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// A set of sequence numbers, one bit each: what a watcher received, or what the writer had
/// acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = (usize::try_from(seq / 64).unwrap_or(usize::MAX), 1u64 << (seq % 64));
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += u64::from(fresh);
        fresh
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Adds every number of `other`.
    pub fn union_with(&mut self, other: &SeqSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
        self.len = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
    }

    /// How many numbers of this set `other` lacks.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// The value of put `seq` sent at `sent_ns`: the two numbers, then `filler` up to its length.
pub fn payload(seq: u64, sent_ns: u64, filler: &[u8]) -> Vec<u8> {
    let mut value = filler.to_vec();
    value.resize(value.len().max(HEADER_BYTES), 0);
    value[..8].copy_from_slice(&seq.to_le_bytes());
    value[8..HEADER_BYTES].copy_from_slice(&sent_ns.to_le_bytes());
    value
}

/// The sequence number and send time a value carries, if it is one of [`payload`]'s.
pub fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let sent_ns = u64::from_le_bytes(value.get(8..HEADER_BYTES)?.try_into().ok()?);
    (seq < MAX_SEQ).then_some((seq, sent_ns))
}

/// The put an event reports, if it is a put of this run.
fn decode_event(event: &Event) -> Option<(u64, u64)> {
    if event.event_type() != EventType::Put {
        return None;
    }
    decode(event.kv()?.value())
}

/// The key of put `seq` under `prefix`.
fn key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{:04}", seq % KEYS_PER_RUN).as_bytes());
    key
}

/// The members whose endpoints the watch streams go to.
fn watch_members(
    endpoints: &[String],
    leader: &str,
    placement: Placement,
) -> Result<Vec<String>, BenchError> {
    let members: Vec<String> = match placement {
        Placement::All => endpoints.to_vec(),
        Placement::Followers => endpoints.iter().filter(|e| e.as_str() != leader).cloned().collect(),
    };
    if members.is_empty() {
        return Err(BenchError::Config(format!(
            "--watch-on {} leaves no member to watch on among {endpoints:?} (leader {leader})",
            placement.name()
        )));
    }
    Ok(members)
}

/// Per stream opened: the member it goes to (an index into the watch members) and how many
/// watchers it carries. Stream `j` goes to member `j mod members`, watcher `i` rides stream
/// `i mod streams`; a stream that would carry no watcher is not opened.
fn layout(watchers: u64, streams: u64, members: usize) -> Vec<(usize, u64)> {
    let streams = streams.min(watchers).max(1);
    (0..streams)
        .map(|j| {
            let member = usize::try_from(j).unwrap_or(0) % members.max(1);
            (member, watchers / streams + u64::from(j < watchers % streams))
        })
        .collect()
}

/// Failures counted by one task, and the first one's message.
#[derive(Debug, Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn note(&mut self, error: impl std::fmt::Display) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(error.to_string());
        }
    }

    fn absorb(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// What the writers and the watchers of one run share.
struct Shared {
    /// Zero of the send times carried in the values.
    epoch: Instant,
    /// Puts sent at or after this many nanoseconds past `epoch` are measured.
    window_start_ns: u64,
    /// Events received, over all watchers.
    delivered: AtomicU64,
    /// First deliveries (distinct sequence numbers per watcher), over all watchers.
    distinct: AtomicU64,
}

impl Shared {
    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Hands out put slots: put `n` is due `n / rate` seconds after `start`, none after `end`.
struct Pacer {
    start: Instant,
    rate: f64,
    end: Instant,
    next: AtomicU64,
}

impl Pacer {
    /// The next put's sequence number and when it is due, or `None` once the run is over.
    fn claim(&self) -> Option<(u64, Instant)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let due = self.start + Duration::from_secs_f64(n as f64 / self.rate);
        (due < self.end).then_some((n, due))
    }
}

/// What the writer's puts came to.
struct Written {
    /// Sequence numbers of the acknowledged puts, warm-up included.
    acked: SeqSet,
    /// Acknowledged puts sent in the window.
    puts: u64,
    /// Their acknowledgement latencies.
    latencies: Latencies,
    errors: Errors,
}

impl Written {
    fn new() -> Result<Self, BenchError> {
        Ok(Self {
            acked: SeqSet::default(),
            puts: 0,
            latencies: Latencies::new()?,
            errors: Errors::default(),
        })
    }

    fn absorb(&mut self, other: Written) {
        self.acked.union_with(&other.acked);
        self.puts += other.puts;
        self.latencies.merge(&other.latencies);
        self.errors.absorb(other.errors);
    }
}

/// One of the writer's puts in flight: sends each slot it claims.
struct Writer {
    kv: KvClient,
    prefix: Vec<u8>,
    filler: Vec<u8>,
    written: Written,
}

async fn write(mut w: Writer, pacer: Arc<Pacer>, shared: Arc<Shared>, timeout: Duration) -> Written {
    while let Some((seq, due)) = pacer.claim() {
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let sent_ns = shared.ns(sent);
        let put = w.kv.put(key(&w.prefix, seq), payload(seq, sent_ns, &w.filler), None);
        let out = &mut w.written;
        match tokio::time::timeout(timeout, put).await {
            Ok(Ok(_)) => {
                out.acked.insert(seq);
                if sent_ns >= shared.window_start_ns {
                    out.puts += 1;
                    out.latencies.record(sent.elapsed());
                }
            }
            Ok(Err(e)) => out.errors.note(BenchError::from(e)),
            Err(_) => out.errors.note(BenchError::Timeout(timeout)),
        }
    }
    w.written
}

/// One watch stream and the watchers on it.
struct Reader {
    /// Keeps the stream's connection open.
    _client: Client,
    stream: WatchStream,
    /// Watch id → index of the watcher on this stream.
    ids: HashMap<i64, usize>,
    seen: Vec<SeqSet>,
    duplicates: u64,
    latencies: Latencies,
    errors: Errors,
}

impl Reader {
    /// Connects to `endpoint` and creates `watchers` watchers of `prefix` on one stream, each
    /// after the previous one is confirmed.
    async fn open(
        endpoint: String,
        watchers: u64,
        prefix: Vec<u8>,
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let mut client = Client::connect([conn::url(&endpoint)], Some(conn::options(timeout))).await?;
        let options = || Some(WatchOptions::new().with_prefix());
        let mut stream = client.watch(prefix.clone(), options()).await?;
        let mut ids = HashMap::new();
        for i in 0..usize::try_from(watchers).unwrap_or(usize::MAX) {
            if i > 0 {
                stream.watch(prefix.clone(), options()).await?;
            }
            let id = tokio::time::timeout(timeout, created(&mut stream))
                .await
                .map_err(|_| BenchError::Timeout(timeout))??;
            if ids.insert(id, i).is_some() {
                return Err(BenchError::Unexpected(format!(
                    "{endpoint} gave watch id {id} twice on one stream"
                )));
            }
        }
        Ok(Self {
            _client: client,
            stream,
            seen: vec![SeqSet::default(); ids.len()],
            ids,
            duplicates: 0,
            latencies: Latencies::new()?,
            errors: Errors::default(),
        })
    }

    /// Counts the events of one response.
    fn take(&mut self, resp: &WatchResponse, shared: &Shared) {
        if resp.canceled() {
            self.errors.note(format!("watch {} canceled: {:?}", resp.watch_id(), resp.cancel_reason()));
            return;
        }
        let events = resp.events();
        if events.is_empty() {
            return;
        }
        let Some(seen) = self.ids.get(&resp.watch_id()).and_then(|&w| self.seen.get_mut(w)) else {
            self.errors
                .note(format!("events for watch {}, which this stream never created", resp.watch_id()));
            return;
        };
        let now_ns = shared.ns(Instant::now());
        let mut fresh = 0;
        for event in events {
            match decode_event(event) {
                Some((seq, sent_ns)) if seen.insert(seq) => {
                    fresh += 1;
                    if sent_ns >= shared.window_start_ns {
                        self.latencies.record(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
                    }
                }
                Some(_) => self.duplicates += 1,
                None => self.errors.note("an event that no put of this run made"),
            }
        }
        shared.delivered.fetch_add(events.len() as u64, Ordering::Relaxed);
        shared.distinct.fetch_add(fresh, Ordering::Relaxed);
    }
}

/// Waits for the confirmation of the watcher just requested; its watch id.
async fn created(stream: &mut WatchStream) -> Result<i64, BenchError> {
    loop {
        match stream.message().await? {
            Some(r) if r.canceled() || (r.created() && r.watch_id() < 0) => {
                return Err(BenchError::Unexpected(format!("watch refused: {:?}", r.cancel_reason())));
            }
            Some(r) if r.created() => return Ok(r.watch_id()),
            Some(_) => {}
            None => {
                return Err(BenchError::Unexpected(
                    "watch stream ended before its watcher was created".into(),
                ));
            }
        }
    }
}

/// Reads one stream until `stop` turns true, the stream ends or it fails.
async fn read(mut r: Reader, shared: Arc<Shared>, mut stop: signal::Receiver<bool>) -> Reader {
    loop {
        let message = tokio::select! {
            m = r.stream.message() => m,
            _ = stop.wait_for(|s| *s) => break,
        };
        match message {
            Ok(Some(resp)) => r.take(&resp, &shared),
            Ok(None) => {
                r.errors.note("the server ended a watch stream");
                break;
            }
            Err(e) => {
                r.errors.note(BenchError::from(e));
                break;
            }
        }
    }
    r
}

/// Runs one watch workload against the cluster at `endpoints`.
pub async fn run(endpoints: &[String], plan: &WatchPlan) -> Result<WatchStats, BenchError> {
    plan.validate()?;
    let timeout = plan.request_timeout;
    let leader = conn::leader(endpoints, timeout).await?;
    let members = watch_members(endpoints, &leader, plan.placement)?;
    // A prefix no earlier run wrote to, so the watchers see this run's puts only.
    let prefix = keys::run_prefix("w", plan.seed);
    let memory = RssSampler::start(&plan.server_pids);
    let (stop, stopped) = signal::channel(false);
    let readers = open_readers(&members, plan, &prefix).await?;
    let streams = readers.len() as u64;
    let writer = Client::connect([conn::url(&leader)], Some(conn::options(timeout))).await?;

    // Every watcher is in place: the clock starts, the writers and the readers with it.
    let epoch = Instant::now();
    let shared = Arc::new(Shared {
        epoch,
        window_start_ns: u64::try_from(plan.warmup.as_nanos()).unwrap_or(u64::MAX),
        delivered: AtomicU64::new(0),
        distinct: AtomicU64::new(0),
    });
    let mut reading = JoinSet::new();
    for r in readers {
        reading.spawn(read(r, shared.clone(), stopped.clone()));
    }
    let end = epoch + plan.warmup + plan.duration;
    let pacer = Arc::new(Pacer { start: epoch, rate: plan.rate, end, next: AtomicU64::new(0) });
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut writing = JoinSet::new();
    for _ in 0..plan.writers {
        let filler = keys::random_value(&mut rng, plan.value_size);
        let w = Writer { kv: writer.kv_client(), prefix: prefix.clone(), filler, written: Written::new()? };
        writing.spawn(write(w, pacer.clone(), shared.clone(), timeout));
    }

    let window = measure_window(&shared, epoch + plan.warmup, end, &plan.server_pids).await;
    let mut written = Written::new()?;
    while let Some(joined) = writing.join_next().await {
        written.absorb(joined.map_err(|e| BenchError::Unexpected(format!("writer task failed: {e}")))?);
    }
    // The writer has stopped; the events still on their way get until the drain timeout.
    let expected = plan.watchers * written.acked.len();
    let drain_until = Instant::now() + plan.drain_timeout;
    while shared.distinct.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let _ = stop.send(true);
    let memory = memory.finish().await?;

    let (mut latencies, mut missing, mut duplicates, mut errors) = (Latencies::new()?, 0, 0, written.errors);
    while let Some(joined) = reading.join_next().await {
        let r = joined.map_err(|e| BenchError::Unexpected(format!("watch task failed: {e}")))?;
        missing += r.seen.iter().map(|seen| written.acked.missing_from(seen)).sum::<u64>();
        duplicates += r.duplicates;
        latencies.merge(&r.latencies);
        errors.absorb(r.errors);
    }
    Ok(WatchStats {
        streams,
        elapsed: window.elapsed,
        puts: written.puts,
        put_latencies: written.latencies,
        events: window.events,
        latencies,
        missing,
        duplicates,
        errors: errors.count,
        first_error: errors.first,
        cpu: window.cpu,
        rss_before_kib: memory.before_kib,
        rss_peak_kib: memory.peak_kib,
    })
}

/// Opens the watch streams over `members` and creates every watcher on them.
async fn open_readers(
    members: &[String],
    plan: &WatchPlan,
    prefix: &[u8],
) -> Result<Vec<Reader>, BenchError> {
    let mut opening = JoinSet::new();
    for (member, watchers) in layout(plan.watchers, plan.streams, members.len()) {
        let endpoint = members[member].clone();
        opening.spawn(Reader::open(endpoint, watchers, prefix.to_vec(), plan.request_timeout));
    }
    let mut readers = Vec::with_capacity(opening.len());
    while let Some(opened) = opening.join_next().await {
        readers.push(opened.map_err(|e| BenchError::Unexpected(format!("watch task failed: {e}")))??);
    }
    Ok(readers)
}

/// What the measured window saw.
struct Window {
    elapsed: Duration,
    /// Events received in it, over all watchers.
    events: u64,
    cpu: CpuSample,
}

/// Waits for the window from `start` to `end`, reading the CPU counters and the events
/// delivered at both ends.
async fn measure_window(shared: &Shared, start: Instant, end: Instant, server_pids: &[u32]) -> Window {
    tokio::time::sleep_until(start.into()).await;
    let (opened, cpu_start) = (Instant::now(), CpuSample::take(server_pids));
    let delivered = shared.delivered.load(Ordering::Relaxed);
    tokio::time::sleep_until(end.into()).await;
    let cpu = cpu_start.until(&CpuSample::take(server_pids));
    let events = shared.delivered.load(Ordering::Relaxed) - delivered;
    Window { elapsed: opened.elapsed(), events, cpu }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sets_count_inserts_unions_and_what_another_lacks() {
        let mut a = SeqSet::default();
        assert!(a.insert(0) && a.insert(63) && a.insert(64) && a.insert(1000));
        assert!(!a.insert(64), "a second insert is a duplicate");
        assert_eq!(a.len(), 4);
        let mut b = SeqSet::default();
        b.insert(63);
        b.insert(5000);
        assert_eq!(a.missing_from(&b), 3, "0, 64 and 1000 are not in b");
        assert_eq!(b.missing_from(&a), 1, "5000 is not in a");
        assert_eq!(a.missing_from(&SeqSet::default()), 4);
        a.union_with(&b);
        assert_eq!(a.len(), 5);
        assert_eq!(b.missing_from(&a), 0);
    }

    #[test]
    fn values_carry_sequence_and_send_time() {
        let filler = vec![7u8; 256];
        let value = payload(42, 123_456_789, &filler);
        assert_eq!(value.len(), 256);
        assert_eq!(decode(&value), Some((42, 123_456_789)));
        assert_eq!(&value[HEADER_BYTES..], &filler[HEADER_BYTES..]);
        assert_eq!(payload(1, 2, &[]).len(), HEADER_BYTES);
        assert_eq!(decode(&value[..15]), None, "too short");
        assert_eq!(decode(&payload(MAX_SEQ, 0, &filler)), None, "no run puts that many");
    }

    #[test]
    fn keys_cycle_under_the_prefix() {
        assert_eq!(key(b"w/1/", 7), b"w/1/0007".to_vec());
        assert_eq!(key(b"w/1/", KEYS_PER_RUN + 7), key(b"w/1/", 7));
    }

    #[test]
    fn streams_spread_over_members_and_watchers_over_streams() {
        // 10 watchers on 4 streams over 3 members: streams carry 3, 3, 2, 2; stream 3 wraps to
        // member 0.
        assert_eq!(layout(10, 4, 3), vec![(0, 3), (1, 3), (2, 2), (0, 2)]);
        // Fewer watchers than streams: only streams that carry one are opened.
        assert_eq!(layout(2, 30, 3), vec![(0, 1), (1, 1)]);
        assert_eq!(layout(1000, 30, 3).iter().map(|s| s.1).sum::<u64>(), 1000);
        let per_member = |m| layout(1000, 30, 3).iter().filter(|s| s.0 == m).map(|s| s.1).sum::<u64>();
        assert_eq!((per_member(0), per_member(1), per_member(2)), (334, 333, 333));
    }

    #[test]
    fn followers_are_the_endpoints_but_the_leader() {
        let eps = vec!["a:1".to_string(), "b:2".to_string(), "c:3".to_string()];
        assert_eq!(watch_members(&eps, "b:2", Placement::Followers).unwrap(), vec!["a:1", "c:3"]);
        assert_eq!(watch_members(&eps, "b:2", Placement::All).unwrap(), eps);
        assert!(watch_members(&eps[1..2], "b:2", Placement::Followers).is_err());
    }

    #[test]
    fn the_pacer_spaces_puts_and_stops_at_the_end() {
        let start = Instant::now();
        let pacer =
            Pacer { start, rate: 100.0, end: start + Duration::from_millis(50), next: AtomicU64::new(0) };
        let slots: Vec<(u64, Instant)> = std::iter::from_fn(|| pacer.claim()).collect();
        assert_eq!(slots.len(), 5, "0, 10, 20, 30, 40 ms");
        assert_eq!(slots[3], (3, start + Duration::from_millis(30)));
        assert!(pacer.claim().is_none());
    }

    #[test]
    fn plans_that_cannot_run_are_refused() {
        let plan = WatchPlan {
            watchers: 1,
            streams: 1,
            placement: Placement::Followers,
            rate: 100.0,
            writers: 1,
            value_size: 256,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            server_pids: Vec::new(),
            seed: 1,
        };
        assert!(plan.validate().is_ok());
        assert!(WatchPlan { watchers: 0, ..plan.clone() }.validate().is_err());
        assert!(WatchPlan { rate: 0.0, ..plan.clone() }.validate().is_err());
        assert!(WatchPlan { rate: f64::NAN, ..plan.clone() }.validate().is_err());
        assert!(WatchPlan { value_size: 15, ..plan.clone() }.validate().is_err());
        assert!(WatchPlan { duration: Duration::ZERO, ..plan }.validate().is_err());
    }
}
