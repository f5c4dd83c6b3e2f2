//! Backup and restore through the real tools: `etcdctl snapshot save` from a member under write
//! load, `kvnode snapshot status` and `kvnode snapshot restore` (the binary) into a new
//! 3-member cluster, which then serves the same keys at the same revision with the same
//! HashKV; damaged backups are refused by both commands.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use etcd_client::{GetOptions, PutOptions};
use support::{TestCluster, etcdctl_available};

/// Runs `kvnode snapshot ...`; returns (success, stdout, stderr).
fn kvnode_snapshot(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_kvnode")).arg("snapshot").args(args).output().expect("run kvnode");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// (done_bytes, total_bytes) of every progress line a non-terminal run logged.
fn progress_lines(log: &str) -> Vec<(u64, u64)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split(&format!("{name}=")).nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    log.lines()
        .filter(|l| l.contains("progress"))
        .filter_map(|l| Some((field(l, "done_bytes")?, field(l, "total_bytes")?)))
        .collect()
}

/// Asserts that `kvnode snapshot status` and `kvnode snapshot restore` both refuse `damaged`
/// saying `why`, and that the restore leaves no data dir (nor its staging dir) behind.
fn refused_by_status_and_restore(damaged: &Path, why: &str) {
    let (ok, _, err) = kvnode_snapshot(&["status", damaged.to_str().expect("utf8")]);
    assert!(!ok && err.contains(why), "status: {err}");
    let parent = damaged.parent().expect("in a dir");
    let target = parent.join("never");
    let (ok, _, err) = kvnode_snapshot(&[
        "restore",
        damaged.to_str().expect("utf8"),
        "--data-dir",
        target.to_str().expect("utf8"),
    ]);
    assert!(!ok && err.contains(why), "restore: {err}");
    assert!(!target.exists() && !parent.join("never.restoring").exists());
}

/// What `kvnode snapshot restore` draws on a terminal, run under `script -qc` (a pty); None
/// (and a note) where `script` is missing.
fn restore_at_a_terminal(file: &Path, data_dir: &Path) -> Option<String> {
    let command = format!(
        "{} snapshot restore {} --data-dir {}",
        env!("CARGO_BIN_EXE_kvnode"),
        file.display(),
        data_dir.display()
    );
    let Ok(out) = Command::new("script").args(["-qec", &command, "/dev/null"]).output() else {
        eprintln!("SKIPPED the terminal rendering: util-linux's script is not installed");
        return None;
    };
    let drawn = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && data_dir.join("member.redb").exists(), "{drawn}");
    Some(drawn)
}

fn json_number(json: &str, field: &str) -> i64 {
    json.split(&format!("\"{field}\":"))
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit() && c != '-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {json}"))
}

/// (key, value, create, mod, version, lease) of every key, at `revision` (0: now).
async fn everything(c: &mut etcd_client::Client, revision: i64) -> Vec<(String, String, i64, i64, i64, i64)> {
    let opts = GetOptions::new().with_range("\0").with_revision(revision);
    let resp = c.get("\0", Some(opts)).await.expect("range");
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf8").to_string(),
                kv.value_str().expect("utf8").to_string(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_saved_under_load_restores_into_a_new_cluster() {
    if !etcdctl_available() {
        return;
    }
    let source = TestCluster::start(3).await;
    let leader = source.wait_leader().await;
    let mut c = source.client().await;
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    for i in 0..200 {
        let opts = (i % 10 == 0).then(|| PutOptions::new().with_lease(lease));
        c.put(format!("k/{i:03}"), format!("v{i}"), opts).await.expect("put");
    }
    c.delete("k/1", Some(etcd_client::DeleteOptions::new().with_prefix())).await.expect("delete");
    c.compact(150, None).await.expect("compact");

    // Writers keep going while a follower streams the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (mut c, stop) = (c.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                c.put(format!("load/{}", n % 50), format!("{n}"), None).await.expect("put under load");
                n += 1;
            }
            n
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let follower = source.endpoint((leader + 1) % 3);
    let file_arg = file.to_str().expect("utf8 path").to_string();
    let saved = tokio::task::spawn_blocking(move || {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={follower}"))
            .args(["snapshot", "save", &file_arg])
            .output()
            .expect("etcdctl")
    })
    .await
    .expect("join");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    let said =
        format!("{}{}", String::from_utf8_lossy(&saved.stdout), String::from_utf8_lossy(&saved.stderr));
    assert!(saved.status.success() && said.contains("Snapshot saved at"), "{said}");
    assert!(writes > 0);

    let (ok, status, err) = kvnode_snapshot(&["status", file.to_str().expect("utf8"), "-w", "json"]);
    assert!(ok, "{err}");
    let (revision, hash) = (json_number(&status, "revision"), json_number(&status, "hash") as u32);
    // The backup is the source's state at its revision: same keys, same HashKV on every member.
    let expected = everything(&mut c, revision).await;
    assert!(expected.iter().any(|kv| kv.5 == lease), "leased keys are in the backup");
    for m in 0..3 {
        let hashed = source.client_of(m).await.hash_kv(revision).await.expect("hashkv");
        assert_eq!((hashed.hash(), hashed.compact_version()), (hash, 150), "member {m} at {revision}");
    }
    let (ok, table, _) = kvnode_snapshot(&["status", file.to_str().expect("utf8"), "-w", "table"]);
    assert!(ok && table.contains("TOTAL KEYS") && table.contains(&format!("{hash:08x}")), "{table}");

    // Restore into a new cluster: three data dirs from one file.
    let mut restored = TestCluster::prepare(3, |_| {}).await;
    let token = format!("restored-{}", std::process::id());
    for slot in &mut restored.slots {
        slot.flags.initial_cluster_token = token.clone();
        let f = &slot.flags;
        let (ok, out, err) = kvnode_snapshot(&[
            "restore",
            file.to_str().expect("utf8"),
            "--name",
            &f.name,
            "--data-dir",
            f.data_dir.to_str().expect("utf8"),
            "--initial-cluster",
            &f.initial_cluster,
            "--initial-cluster-token",
            &token,
            "--initial-advertise-peer-urls",
            &f.initial_advertise_peer_urls[0],
        ]);
        assert!(ok && out.contains(&format!("restored revision {revision}")), "{out}{err}");
        assert!(!Path::new(&format!("{}.restoring", f.data_dir.display())).exists());
        // Not at a terminal: progress is told in structured log lines, up to the whole file.
        let size = std::fs::metadata(&file).expect("backup size").len();
        let told = progress_lines(&err);
        assert!(!told.is_empty(), "progress lines in {err}");
        assert!(told.iter().all(|&(done, total)| total == 0 || done <= total), "{err}");
        assert!(told.contains(&(size, size)), "progress reaches the file's {size} bytes: {err}");
    }
    for i in 0..3 {
        restored.start_member(i).await;
    }
    restored.wait_leader().await;
    let mut r = restored.client().await;
    assert_eq!(everything(&mut r, 0).await, expected, "every key, with its revisions and lease");
    for m in 0..3 {
        let mut rc = restored.client_of(m).await;
        let hashed = rc.hash_kv(revision).await.expect("hashkv");
        assert_eq!(hashed.hash(), hash, "restored member {m}");
        assert_eq!(rc.get("k/000", None).await.expect("get").header().expect("header").revision(), revision);
    }
    let members = r.member_list().await.expect("members");
    assert_eq!(members.members().len(), 3);
    assert_ne!(
        members.header().expect("header").cluster_id(),
        c.member_list().await.expect("list").header().expect("h").cluster_id()
    );
    // The restored cluster takes writes from the backup's revision on, and keeps the lease.
    let put = r.put("after", "restore", None).await.expect("put");
    assert_eq!(put.header().expect("header").revision(), revision + 1);
    assert_eq!(r.lease_time_to_live(lease, None).await.expect("ttl").granted_ttl(), 600);

    // A damaged backup is refused by both commands, and leaves no data dir behind.
    let mut bytes = std::fs::read(&file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).expect("write");
    refused_by_status_and_restore(&damaged, "SHA-256 does not match");
    // Truncated.
    std::fs::write(&damaged, &std::fs::read(&file).expect("read")[..middle]).expect("write");
    refused_by_status_and_restore(&damaged, "truncated");

    // At a terminal (a pty from util-linux's `script`), one line redrawn in place instead.
    if let Some(drawn) = restore_at_a_terminal(&file, &dir.path().join("at-a-terminal")) {
        assert!(drawn.contains("\rrestoring: ") && drawn.contains("(100%)"), "{drawn:?}");
        assert!(!drawn.contains("done_bytes"), "{drawn:?}");
    }
    restored.shutdown().await;
    source.shutdown().await;
}
