#!/usr/bin/env bash
# Benchmarks raftkv against etcd on this machine with the same client code (kvbench).
#
# One run: installs etcd-server from Debian if missing, builds kvnode and kvbench (release),
# measures the machine's floor (fdatasync of the data disk, loopback gRPC round trip), starts a
# 3-member etcd cluster and a 3-member raftkv cluster on loopback (free ports picked at run
# time, data dirs side by side on one filesystem, fsync on for both), preloads the key space,
# runs every workload against each system alternately (etcd, raftkv, etcd, raftkv, ...), then
# on a fresh cluster per system holding 1,000,000 keys measures a member's data dir, saves its
# snapshot (Maintenance.Snapshot to a synced file, as `etcdctl snapshot save`), times its
# restart after kill -9 and after SIGTERM, and defragments the leader while 8 writers put to it
# and 8 more to the other members (the Defragment call's time, how long the leader's puts
# stalled, whether the others' went on), and prints one markdown report (see BENCHMARKS.md). Writes go to the leader; put and mixed also run as put@all and
# mixed@all, each request sent to the next member round-robin as clientv3 balances. Puts run at
# 1, 16, 64, 256 and 1,000 clients, with random keys (put, put@all) and with sequential keys
# (put-seq, put-seq@all: each put takes the next key, as etcd's documented put benchmark
# `benchmark put --sequential-keys` does). Every run records the servers' and kvbench's own CPU
# time per operation (utime+stime from /proc). After the report, `kvbench plot` draws the runs
# as SVG (throughput against clients, the latency distribution at 64 clients, per workload;
# see --out).
# The lease runs follow (kvbench lease): lease-keepalive (one lease per client renewed over a
# stream the client keeps open, 16/64 clients spread over every member, and 1/64 to the leader
# only as lease-keepalive@leader: one client's one stream is on one member, and spread it would
# be on the leader or not by chance), lease-keepalive-once (a new stream per keep-alive, as etcd's
# `benchmark lease-keepalive` does, 64 clients) and lease-cycle (grant → put a key attached →
# revoke, 16 and 64 clients): keep-alives or cycles per second, latency, the servers' RSS during
# the run. Two watch runs close the list: watch-latency (puts on the leader, one watcher on a
# follower: put → event latency) and watch-fanout (1,000 watchers of one prefix over 30 streams,
# 10 per member, puts at a fixed rate: events delivered per second, missing and duplicated
# events, the servers' RSS during the run).
#
# Usage: scripts/bench.sh [options]
#   --smoke              ~1 s per workload with tiny counts (50 fan-out watchers), leaving out
#                        the runs marked "full" in the run table (1,000 clients; put-seq and
#                        put-seq@all but at 64 clients) unless --only names them; exits non-zero
#                        if any workload has errors or zero throughput, a watch run misses or
#                        repeats an event, a lease run cannot revoke its leases, or the plots
#                        cannot be drawn (into the work dir's plots/) (what CI runs).
#                        Also BENCH_SMOKE=1.
#   --big                restart/maintenance test with 5,000,000 keys instead of 1,000,000
#                        (slow). Also BENCH_BIG=1.
#   --raftkv-bin PATH    kvnode binary (default: target/release/kvnode, built by this script).
#   --etcd-bin PATH      etcd binary (default: `etcd` on PATH, installed from Debian if missing).
#   --require-raftkv     fail if kvnode cannot run, instead of benchmarking etcd alone.
#                        Also BENCH_REQUIRE_RAFTKV=1.
#   --systems LIST       comma-separated subset of etcd,raftkv (default both).
#   --rounds N           repetitions of each workload per system (default 2; smoke 1).
#   --duration S         measured seconds per run (default 10; smoke 1).
#   --warmup S           unmeasured seconds before each run (default 2; smoke 0.2).
#   --out FILE           also write the report to FILE, the raw records to FILE.jsonl and the
#                        plots (put-throughput.svg, put-latency.svg, ... one pair per workload)
#                        into the directory FILE without its .md, plus -plots (/tmp/bench.md:
#                        /tmp/bench-plots/).
#   --no-build           use the binaries already built.
#   --keep               keep the work dir (data dirs, logs, results) instead of deleting it.
#   --only LIST          run only these runs, comma-separated, each "NAME" or "NAME:clients"
#                        (e.g. put:64,put@all:64,get-serial); for quick iterations. Names:
#                        put, put@all, put-seq, put-seq@all, get-linear, get-serial, mixed,
#                        mixed@all, txn-cas, range,
#                        lease-keepalive, lease-keepalive@leader, lease-keepalive-once,
#                        lease-cycle, watch-latency, watch-fanout (NAME@all = NAME sent to all
#                        members round-robin; put-seq = put of sequential keys; the lease runs
#                        go to all members unless
#                        @leader; for the watch runs "clients" is the number of watchers),
#                        e.g. lease-keepalive:64,lease-cycle:16.
#   --no-restart         skip the restart/maintenance test (disk size, snapshot save, restarts,
#                        defragmentation).
#   --slow-fsync MS      put every data dir (and the fsync floor probe) on slowfs, a passthrough
#                        FUSE mount over the work dir that answers each fsync/fdatasync MS
#                        milliseconds (decimals allowed) after the real one, as a cloud volume
#                        would (tools/slowfs, built in release like kvbench; see BENCHMARKS.md).
#                        Also BENCH_SLOW_FSYNC_MS.
# Environment: BENCH_DIR (parent of the work dir, default $TMPDIR or /tmp; must not be tmpfs
# for a real run), BENCH_ETCD_ARGS / BENCH_RAFTKV_ARGS (extra flags for one system's members),
# BENCH_START_TIMEOUT (seconds a cluster may take to serve, default 60), KVBENCH (the kvbench
# binary, default target/release/kvbench; CI's smoke run uses the debug one cargo test built),
# BENCH_WATCH_RATE (puts/s of watch-latency, default 100), BENCH_FANOUT_RATE (puts/s of
# watch-fanout, default 200), BENCH_FANOUT_WATCHERS (default 1000; smoke 50), SLOWFS (the
# slowfs binary for --slow-fsync, default target/release/slowfs).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

SMOKE=${BENCH_SMOKE:-0}
BIG=${BENCH_BIG:-0}
REQUIRE_RAFTKV=${BENCH_REQUIRE_RAFTKV:-0}
RAFTKV_BIN=""
ETCD_BIN=""
SYSTEMS="etcd,raftkv"
ROUNDS=""
DURATION=""
WARMUP=""
OUT=""
BUILD=1
KEEP=${BENCH_KEEP:-0}
ONLY=""
RESTART_TEST=1
START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
SLOW_FSYNC_MS=${BENCH_SLOW_FSYNC_MS:-}

die() { echo "bench.sh: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --big) BIG=1 ;;
        --raftkv-bin) need_arg "$@"; RAFTKV_BIN=$2; shift ;;
        --etcd-bin) need_arg "$@"; ETCD_BIN=$2; shift ;;
        --require-raftkv) REQUIRE_RAFTKV=1 ;;
        --systems) need_arg "$@"; SYSTEMS=$2; shift ;;
        --rounds) need_arg "$@"; ROUNDS=$2; shift ;;
        --duration) need_arg "$@"; DURATION=$2; shift ;;
        --warmup) need_arg "$@"; WARMUP=$2; shift ;;
        --out) need_arg "$@"; OUT=$2; shift ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --only) need_arg "$@"; ONLY=$2; shift ;;
        --no-restart) RESTART_TEST=0 ;;
        --slow-fsync) need_arg "$@"; SLOW_FSYNC_MS=$2; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

# ---- sizes -------------------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
    KEYS=2000; ROUNDS=${ROUNDS:-1}; DURATION=${DURATION:-1}; WARMUP=${WARMUP:-0.2}
    RESTART_KEYS=2000; FSYNC_SAMPLES=200; PING_SAMPLES=2000; DEFRAG_SETTLE=0.3
    CATCH_UP_TIMEOUT=20; RESTART_TIMEOUT=60
    FANOUT_WATCHERS=${BENCH_FANOUT_WATCHERS:-50}; FANOUT_STREAMS=6; WATCH_DRAIN=20
else
    KEYS=100000; ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-2}
    FSYNC_SAMPLES=2000; PING_SAMPLES=20000; DEFRAG_SETTLE=2
    CATCH_UP_TIMEOUT=120; RESTART_TIMEOUT=600
    if [ "$BIG" = 1 ]; then RESTART_KEYS=5000000; else RESTART_KEYS=1000000; fi
    # 5M keys of 256 B outgrow both systems' default quota of 2 GiB (etcd's database then
    # holds 1.8 GiB, raftkv's more): both get etcd's largest recommended quota, 8 GiB.
    [ "$BIG" = 1 ] && QUOTA_FLAG=--quota-backend-bytes=8589934592
    FANOUT_WATCHERS=${BENCH_FANOUT_WATCHERS:-1000}; FANOUT_STREAMS=30; WATCH_DRAIN=60
fi
RANGE_LEN=1000
VALUE_SIZE=256
WATCH_RATE=${BENCH_WATCH_RATE:-100}
FANOUT_RATE=${BENCH_FANOUT_RATE:-200}

# name clients connections target [full] — the runs, in order; each alternates the systems. The
# target is kvbench's: leader; all (each connection to one member in turn, as etcd's benchmark
# tool spreads reads); round-robin (each request to the next member, as clientv3 balances an
# application's requests), which the name marks as WORKLOAD@all. An @all run follows its
# leader-only twin so that the two are measured close in time. A watch run (kvbench watch) reads
# the same fields as: watchers, watch streams (one connection each, spread over the members in
# turn), the members the watchers are on (followers or all); its writer puts to the leader. A
# lease run (kvbench lease) reads them as clients, connections, target; round-robin starts
# client i on member i mod 3, so keep-alive streams spread evenly over the members; a lease run
# named NAME@leader sends everything to the leader. put-seq is put with `--key-order
# sequential`: each put takes the next key, one sequence shared by every client, wrapping at the
# key space. Clients map to connections as etcd's benchmarks pair them (1,000 clients over 100
# connections as in etcd's documented put benchmark). A row marked "full" is left out of a
# --smoke session unless --only names it, which keeps CI's smoke run about as long as before the
# put matrix grew: smoke keeps every random-key count but 1,000 and put-seq at 64 clients (enough
# for every plot to have each kind of line).
RUNS=(
    "put 1 1 leader"
    "put@all 1 1 round-robin"
    "put 16 2 leader"
    "put@all 16 2 round-robin"
    "put 64 8 leader"
    "put@all 64 8 round-robin"
    "put 256 32 leader"
    "put@all 256 32 round-robin"
    "put 1000 100 leader full"
    "put@all 1000 100 round-robin full"
    "put-seq 1 1 leader full"
    "put-seq@all 1 1 round-robin full"
    "put-seq 16 2 leader full"
    "put-seq@all 16 2 round-robin full"
    "put-seq 64 8 leader"
    "put-seq@all 64 8 round-robin"
    "put-seq 256 32 leader full"
    "put-seq@all 256 32 round-robin full"
    "put-seq 1000 100 leader full"
    "put-seq@all 1000 100 round-robin full"
    "get-linear 64 8 all"
    "get-serial 64 8 all"
    "mixed 64 8 leader"
    "mixed@all 64 8 round-robin"
    "txn-cas 64 8 leader"
    "range 16 2 all"
    "lease-keepalive@leader 1 1 leader"
    "lease-keepalive 16 2 round-robin"
    "lease-keepalive 64 8 round-robin"
    "lease-keepalive@leader 64 8 leader"
    "lease-keepalive-once 64 8 round-robin"
    "lease-cycle 16 2 round-robin"
    "lease-cycle 64 8 round-robin"
    "watch-latency 1 1 followers"
    "watch-fanout $FANOUT_WATCHERS $FANOUT_STREAMS all"
)
if [ -n "$ONLY" ]; then
    # Keeps the runs in their order (a "full" row too: naming it asks for it, smoke or not); a spec that selects nothing is a typo (put-all for
    # put@all), so it stops the script instead of silently shrinking the session.
    selected=()
    declare -A used=()
    IFS=, read -r -a only_specs <<<"$ONLY"
    for spec in "${RUNS[@]}"; do
        read -r name clients _ <<<"$spec"
        for want in "${only_specs[@]}"; do
            if [ "$want" = "$name" ] || [ "$want" = "$name:$clients" ]; then
                selected+=("$spec")
                used["=$want"]=1 # prefixed: an empty name is not a valid subscript
                break
            fi
        done
    done
    for want in "${only_specs[@]}"; do
        [ -n "${used["=$want"]:-}" ] || die "--only: \"$want\" names no run (see --help for the names)"
    done
    RUNS=("${selected[@]}")
elif [ "$SMOKE" = 1 ]; then
    selected=()
    for spec in "${RUNS[@]}"; do
        read -r _ _ _ _ scope <<<"$spec"
        [ "$scope" = full ] || selected+=("$spec")
    done
    RUNS=("${selected[@]}")
fi

# ---- tools -------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
KVBENCH=${KVBENCH:-$TARGET_DIR/release/kvbench}
SLOWFS=${SLOWFS:-$TARGET_DIR/release/slowfs}
if [ -n "$SLOW_FSYNC_MS" ]; then
    [[ $SLOW_FSYNC_MS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--slow-fsync wants milliseconds, e.g. 2 or 0.5"
    [ -e /dev/fuse ] || die "--slow-fsync needs FUSE (/dev/fuse is missing)"
    SLOW_FSYNC_US=$(awk -v ms="$SLOW_FSYNC_MS" 'BEGIN { printf "%d", ms * 1000 }')
fi
DEFAULT_RAFTKV=$TARGET_DIR/release/kvnode
RAFTKV_BIN=${RAFTKV_BIN:-$DEFAULT_RAFTKV}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ -z "$ETCD_BIN" ]; then
    if ! command -v etcd >/dev/null 2>&1; then
        echo "== installing etcd-server from Debian"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq etcd-server >/dev/null
    fi
    ETCD_BIN=$(command -v etcd)
fi
[ -x "$ETCD_BIN" ] || die "etcd binary $ETCD_BIN is not executable"

if [ "$BUILD" = 1 ]; then
    packages=(-p kvbench)
    [ "$RAFTKV_BIN" = "$DEFAULT_RAFTKV" ] && packages+=(-p kvnode)
    [ -n "$SLOW_FSYNC_MS" ] && packages+=(-p slowfs)
    echo "== cargo build --release ${packages[*]}"
    cargo build --release --locked "${packages[@]}"
fi
[ -x "$KVBENCH" ] || die "$KVBENCH not built (drop --no-build)"
[ -z "$SLOW_FSYNC_MS" ] || [ -x "$SLOWFS" ] || die "$SLOWFS not built (drop --no-build)"

# ---- work dir ----------------------------------------------------------------------------
BASE=${BENCH_DIR:-${TMPDIR:-/tmp}}
mkdir -p "$BASE"
WORK=$(mktemp -d "$BASE/raftkv-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
FSTYPE=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")
if [ "$FSTYPE" = tmpfs ] && [ "$SMOKE" != 1 ]; then
    die "$WORK is on tmpfs, where fsync costs nothing; set BENCH_DIR to a directory on a disk"
fi

declare -A PID      # "system:member" -> pid of a server this script started
declare -A CLIENT   # "system:member" -> client URL
declare -A PEER     # "system:member" -> peer URL
declare -A METRICS  # "system:member" -> metrics URL
declare -A DATA     # "system:member" -> data dir
declare -A ACTIVE   # system -> 1 once its cluster served
declare -A SKIPPED  # system -> why it was not benchmarked
FAILURES=()
DATA_ROOT=$WORK  # where the members' data dirs and the fsync probe go (the slowfs mount if any)
SLOWFS_PID=""

mounted() { awk -v m="$(realpath "$1")" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

# Stops slowfs, which unmounts on SIGTERM; if it cannot (it was killed, or is stuck), the mount
# is detached so that the work dir can be removed.
unmount_slowfs() {
    [ -n "$SLOWFS_PID" ] || return 0
    kill -TERM "$SLOWFS_PID" 2>/dev/null || true
    wait "$SLOWFS_PID" 2>/dev/null || true
    SLOWFS_PID=""
    if mounted "$WORK/data"; then
        fusermount3 -u -z "$WORK/data" 2>/dev/null || as_root umount -l "$WORK/data" || true
    fi
}

cleanup() {
    local key
    for key in "${!PID[@]}"; do
        kill -TERM "${PID[$key]}" 2>/dev/null || true
    done
    for key in "${!PID[@]}"; do
        wait "${PID[$key]}" 2>/dev/null || true
    done
    unmount_slowfs
    if [ "$KEEP" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# With --slow-fsync, the data live in WORK/backing and are reached through the slowfs mount
# WORK/data, mounted before any member starts so that both systems' data dirs are on it.
if [ -n "$SLOW_FSYNC_MS" ]; then
    mkdir -p "$WORK/backing" "$WORK/data"
    "$SLOWFS" --backing "$WORK/backing" --mount "$WORK/data" --fsync-delay-us "$SLOW_FSYNC_US" \
        >"$WORK/slowfs.log" 2>&1 &
    SLOWFS_PID=$!
    deadline=$((SECONDS + 10))
    until mounted "$WORK/data"; do
        if ! kill -0 "$SLOWFS_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            die "slowfs did not mount $WORK/data: $(tr '\n' ' ' <"$WORK/slowfs.log")"
        fi
        sleep 0.05
    done
    DATA_ROOT=$WORK/data
fi

bin_of() { if [ "$1" = etcd ]; then echo "$ETCD_BIN"; else echo "$RAFTKV_BIN"; fi; }
extra_args_of() { if [ "$1" = etcd ]; then echo "${BENCH_ETCD_ARGS:-}"; else echo "${BENCH_RAFTKV_ARGS:-}"; fi; }
endpoints_of() { echo "${CLIENT[$1:1]},${CLIENT[$1:2]},${CLIENT[$1:3]}"; }
pids_of() { echo "${PID[$1:1]:-},${PID[$1:2]:-},${PID[$1:3]:-}"; }
alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }

# Gives the members of SYSTEM (data under DIR) fresh free ports.
assign() {
    local sys=$1 dir=$2 i ports
    read -r -a ports <<<"$("$KVBENCH" free-ports 9)"
    for i in 1 2 3; do
        CLIENT[$sys:$i]=http://127.0.0.1:${ports[$((3 * i - 3))]}
        PEER[$sys:$i]=http://127.0.0.1:${ports[$((3 * i - 2))]}
        METRICS[$sys:$i]=http://127.0.0.1:${ports[$((3 * i - 1))]}
        DATA[$sys:$i]=$dir/m$i
    done
}

# Starts member I of SYSTEM with etcd's flags, which kvnode shares; logs go next to its data.
start_member() {
    local sys=$1 i=$2 extra
    extra=$(extra_args_of "$sys")
    mkdir -p "${DATA[$sys:$i]}"
    # shellcheck disable=SC2086 # extra args are meant to split into words
    "$(bin_of "$sys")" \
        --name "m$i" \
        --data-dir "${DATA[$sys:$i]}/data" \
        --listen-client-urls "${CLIENT[$sys:$i]}" \
        --advertise-client-urls "${CLIENT[$sys:$i]}" \
        --listen-peer-urls "${PEER[$sys:$i]}" \
        --initial-advertise-peer-urls "${PEER[$sys:$i]}" \
        --initial-cluster "m1=${PEER[$sys:1]},m2=${PEER[$sys:2]},m3=${PEER[$sys:3]}" \
        --initial-cluster-state new \
        --initial-cluster-token "bench-$sys" \
        --listen-metrics-urls "${METRICS[$sys:$i]}" \
        --heartbeat-interval 100 \
        --election-timeout 1000 \
        --snapshot-count 10000 \
        ${QUOTA_FLAG:-} $extra >>"${DATA[$sys:$i]}/server.log" 2>&1 &
    PID[$sys:$i]=$!
}

stop_cluster() {
    local sys=$1 i
    for i in 1 2 3; do
        if [ -n "${PID[$sys:$i]:-}" ]; then
            kill -TERM "${PID[$sys:$i]}" 2>/dev/null || true
            wait "${PID[$sys:$i]}" 2>/dev/null || true
            unset "PID[$sys:$i]"
        fi
    done
}

# Starts SYSTEM's 3 members under DIR and waits until all answer a linearizable get.
# Returns 1 and records why in SKIPPED if a member exits (a binary that cannot run yet) or the
# cluster never serves (then also in FAILURES: a server that runs but does not serve is broken).
start_cluster() {
    local sys=$1 dir=$2 i deadline
    assign "$sys" "$dir"
    for i in 1 2 3; do start_member "$sys" "$i"; done
    deadline=$((SECONDS + START_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        for i in 1 2 3; do
            if ! alive "$sys:$i"; then
                local rc=0
                wait "${PID[$sys:$i]}" 2>/dev/null || rc=$?
                unset "PID[$sys:$i]"
                SKIPPED[$sys]="member m$i exited with code $rc at start-up; its log begins: $(head -c 160 "${DATA[$sys:$i]}/server.log" | tr '\n' ' ')"
                stop_cluster "$sys"
                return 1
            fi
        done
        if "$KVBENCH" wait-ready --endpoints "$(endpoints_of "$sys")" --linearizable --timeout 2 \
            --label "$sys" >/dev/null 2>&1; then
            return 0
        fi
    done
    SKIPPED[$sys]="cluster did not serve a linearizable get within $START_TIMEOUT s"
    FAILURES+=("$sys: ${SKIPPED[$sys]}")
    stop_cluster "$sys"
    return 1
}

# Runs kvbench, appending its JSON record to the results; a failure is remembered, not fatal.
measure() {
    local what=$1
    shift
    if ! "$KVBENCH" "$@" --json >>"$RESULTS"; then
        FAILURES+=("$what")
    fi
}

# ---- header and floor --------------------------------------------------------------------
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
DEVICE=$(findmnt -n -o SOURCE -T "$WORK" 2>/dev/null || df --output=source "$WORK" | tail -n 1)
echo "== machine: $(nproc) cores, ${CPU:-unknown CPU}, $(free -g | awk '/^Mem:/ {print $2}') GiB memory"
if [ -n "$SLOW_FSYNC_MS" ]; then
    echo "== data dirs under $DATA_ROOT (slowfs over $FSTYPE on $DEVICE, every fsync delayed by $SLOW_FSYNC_MS ms)"
else
    echo "== data dirs under $WORK ($FSTYPE on $DEVICE)"
fi
echo "== etcd: $("$ETCD_BIN" --version 2>/dev/null | head -n 1) ($ETCD_BIN)"
echo "== raftkv: $RAFTKV_BIN"
if [ "$SMOKE" = 1 ]; then
    echo "== SMOKE mode: ${DURATION}s per run, $KEYS keys — figures are not benchmark results"
fi
echo "== floor"
measure "fsync-probe" fsync-probe --dir "$DATA_ROOT" --count "$FSYNC_SAMPLES"
measure "fsync-probe --spin" fsync-probe --dir "$DATA_ROOT" --count "$FSYNC_SAMPLES" --spin
measure "ping" ping --count "$PING_SAMPLES"

# ---- clusters ----------------------------------------------------------------------------
IFS=, read -r -a WANTED <<<"$SYSTEMS"
for sys in "${WANTED[@]}"; do
    case "$sys" in etcd | raftkv) ;; *) die "unknown system $sys in --systems" ;; esac
    if [ "$sys" = raftkv ] && [ ! -x "$RAFTKV_BIN" ]; then
        SKIPPED[$sys]="$RAFTKV_BIN is not an executable"
        continue
    fi
    echo "== starting 3-member $sys cluster"
    if start_cluster "$sys" "$DATA_ROOT/$sys"; then
        ACTIVE[$sys]=1
        echo "== $sys serves at $(endpoints_of "$sys"); loading $KEYS keys"
        measure "$sys load" load --endpoints "$(endpoints_of "$sys")" --keys "$KEYS" \
            --value-size "$VALUE_SIZE" --label "$sys"
    fi
done
for sys in "${!SKIPPED[@]}"; do
    echo "!! $sys NOT BENCHMARKED: ${SKIPPED[$sys]}" >&2
    if [ "$sys" = raftkv ] && [ "$REQUIRE_RAFTKV" = 1 ]; then die "raftkv is required (--require-raftkv)"; fi
    if [ "$sys" = etcd ]; then die "etcd is the reference and must run"; fi
done
[ "${#ACTIVE[@]}" -gt 0 ] || die "no system to benchmark"

# ---- workloads, systems alternating ------------------------------------------------------
CHECK=()
[ "$SMOKE" = 1 ] && CHECK=(--check)
watch_rate() { if [ "$1" = watch-fanout ]; then echo "$FANOUT_RATE"; else echo "$WATCH_RATE"; fi; }
for spec in "${RUNS[@]}"; do
    read -r name clients conns target _ <<<"$spec"
    workload=${name%@all}
    key_order=random
    if [[ $workload == *-seq ]]; then
        workload=${workload%-seq}
        key_order=sequential
    fi
    for round in $(seq 1 "$ROUNDS"); do
        for sys in "${WANTED[@]}"; do
            [ -n "${ACTIVE[$sys]:-}" ] || continue
            if [[ $name == watch-* ]]; then
                measure "$sys $name watchers=$clients round $round" watch \
                    --endpoints "$(endpoints_of "$sys")" --label "$sys" --round "$round" \
                    --workload "$name" --watchers "$clients" --streams "$conns" --watch-on "$target" \
                    --rate "$(watch_rate "$name")" --duration "$DURATION" --warmup "$WARMUP" \
                    --drain-timeout "$WATCH_DRAIN" --value-size "$VALUE_SIZE" --server-pids "$(pids_of "$sys")" \
                    "${CHECK[@]}"
                continue
            fi
            if [[ $name == lease-* ]]; then
                measure "$sys $name c=$clients round $round" lease \
                    --endpoints "$(endpoints_of "$sys")" --label "$sys" --round "$round" \
                    --workload "${name%@leader}" --clients "$clients" --connections "$conns" --target "$target" \
                    --duration "$DURATION" --warmup "$WARMUP" --value-size "$VALUE_SIZE" \
                    --server-pids "$(pids_of "$sys")" "${CHECK[@]}"
                continue
            fi
            measure "$sys $name c=$clients round $round" run \
                --endpoints "$(endpoints_of "$sys")" --label "$sys" --round "$round" \
                --workload "$workload" --key-order "$key_order" --clients "$clients" --connections "$conns" \
                --target "$target" --duration "$DURATION" --warmup "$WARMUP" --key-space "$KEYS" \
                --value-size "$VALUE_SIZE" --range-len "$RANGE_LEN" --server-pids "$(pids_of "$sys")" \
                "${CHECK[@]}"
        done
    done
done
for sys in "${!ACTIVE[@]}"; do stop_cluster "$sys"; done

# ---- restart time, size on disk, snapshot save, defragmentation ---------------------------
# A fresh cluster per system holds exactly RESTART_KEYS keys (no workload history). Member 3's
# data dir is measured and its snapshot saved to a synced file; then it is killed with SIGKILL
# and started again with the same flags, timed from its start until it answers a serializable
# get of a loaded key from its own data; then the same after a SIGTERM (a clean stop). Last,
# the leader is defragmented while writers overwrite the loaded keys on it.
for sys in "${WANTED[@]}"; do
    [ -n "${ACTIVE[$sys]:-}" ] && [ "$RESTART_TEST" = 1 ] || continue
    echo "== $sys: restart and maintenance test with $RESTART_KEYS keys"
    if ! start_cluster "$sys" "$DATA_ROOT/$sys-restart"; then
        FAILURES+=("$sys restart cluster: ${SKIPPED[$sys]}")
        unset "SKIPPED[$sys]"
        continue
    fi
    last=$((RESTART_KEYS - 1))
    if ! "$KVBENCH" load --endpoints "$(endpoints_of "$sys")" --keys "$RESTART_KEYS" \
        --value-size "$VALUE_SIZE" --label "$sys" --json >>"$RESULTS"; then
        FAILURES+=("$sys restart load")
        stop_cluster "$sys"
        continue
    fi
    if ! "$KVBENCH" wait-ready --endpoints "${CLIENT[$sys:3]}" --key-index "$last" \
        --timeout "$CATCH_UP_TIMEOUT" >/dev/null; then
        FAILURES+=("$sys member 3 did not catch up")
        stop_cluster "$sys"
        continue
    fi
    measure "$sys disk usage" disk-usage --dir "${DATA[$sys:3]}/data" --keys "$RESTART_KEYS" --label "$sys"
    measure "$sys snapshot save" snapshot-save --endpoint "${CLIENT[$sys:3]}" \
        --out "$WORK/$sys-snapshot.db" --keys "$RESTART_KEYS" --label "$sys" --server-pids "${PID[$sys:3]}"
    rm -f "$WORK/$sys-snapshot.db"
    for signal in KILL TERM; do
        kill "-$signal" "${PID[$sys:3]}" 2>/dev/null || true
        wait "${PID[$sys:3]}" 2>/dev/null || true
        started=$(date +%s%N)
        start_member "$sys" 3
        stopped_by=$([ "$signal" = KILL ] && echo kill || echo term)
        measure "$sys restart after SIG$signal" wait-ready --endpoints "${CLIENT[$sys:3]}" --key-index "$last" \
            --timeout "$RESTART_TIMEOUT" --interval-ms 5 --started-at-ns "$started" --keys "$RESTART_KEYS" \
            --stopped-by "$stopped_by" --label "$sys"
    done
    if leader=$("$KVBENCH" leader --endpoints "$(endpoints_of "$sys")"); then
        others=$(for i in 1 2 3; do [ "${CLIENT[$sys:$i]}" = "$leader" ] || echo "${CLIENT[$sys:$i]}"; done | paste -sd,)
        measure "$sys defrag stall" defrag-stall --endpoint "$leader" --others "$others" --keys "$RESTART_KEYS" \
            --writers 8 --settle "$DEFRAG_SETTLE" --value-size "$VALUE_SIZE" --label "$sys" "${CHECK[@]}"
    else
        FAILURES+=("$sys: no leader for the defrag test")
    fi
    stop_cluster "$sys"
done

# ---- report ------------------------------------------------------------------------------
REPORT=$WORK/report.md
{
    echo "# raftkv vs etcd — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) cores, ${CPU:-unknown CPU}; data dirs on $FSTYPE ($DEVICE)."
    if [ -n "$SLOW_FSYNC_MS" ]; then
        echo "SLOW FSYNC: data dirs on slowfs (FUSE passthrough over that disk): every fsync/fdatasync"
        echo "delayed by $SLOW_FSYNC_MS ms after the real one; the fsync floor below is measured on that mount."
    fi
    echo "etcd: $("$ETCD_BIN" --version 2>/dev/null | head -n 1). Value $VALUE_SIZE B, key space $KEYS keys,"
    echo "${DURATION} s measured after ${WARMUP} s warm-up per run, $ROUNDS round(s) per system (median shown)."
    echo "Restart/maintenance test: $RESTART_KEYS keys$([ "$BIG" = 1 ] || echo " (BENCH_BIG=1 for 5,000,000)")."
    [ "$SMOKE" = 1 ] && echo "SMOKE RUN: tiny counts, the figures are not benchmark results."
    for sys in "${!SKIPPED[@]}"; do
        echo "$sys was not benchmarked (its figures are pending): ${SKIPPED[$sys]}"
    done
    echo
    "$KVBENCH" report --input "$RESULTS"
} >"$REPORT"
cat "$REPORT"
if [ -n "$OUT" ]; then
    cp "$REPORT" "$OUT"
    cp "$RESULTS" "$OUT.jsonl"
fi

# ---- plots -------------------------------------------------------------------------------
# Drawn from the same records as the report. With --out beside it (FILE without .md, plus
# -plots); a smoke session draws them into the work dir as well, so CI exercises the path.
PLOT_DIRS=()
[ -n "$OUT" ] && PLOT_DIRS+=("${OUT%.md}-plots")
[ "$SMOKE" = 1 ] && PLOT_DIRS+=("$WORK/plots")
for dir in "${PLOT_DIRS[@]}"; do
    if written=$("$KVBENCH" plot --input "$RESULTS" --out-dir "$dir"); then
        echo "== plots: $(tr '\n' ' ' <<<"${written:-none (no run to draw)}")"
    else
        FAILURES+=("kvbench plot into $dir")
    fi
done
if [ "${#FAILURES[@]}" -gt 0 ]; then
    printf 'bench.sh: FAILED: %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
