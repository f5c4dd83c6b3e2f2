//! The `kvnode` binary itself: what an operator sees when a member cannot start.

use std::process::Command;

/// A start error exits non-zero with a message naming the flag, and logs without terminal
/// colour codes when stderr is not a terminal (as under Docker, systemd or a log file).
#[test]
fn start_error_names_the_flag_in_plain_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kvnode"))
        .args(["--name", "x"])
        .arg("--data-dir")
        .arg(dir.path().join("x"))
        .args([
            "--listen-client-urls",
            "https://127.0.0.1:1",
            "--advertise-client-urls",
            "https://127.0.0.1:1",
        ])
        .output()
        .expect("run kvnode");
    assert!(!out.status.success(), "kvnode must refuse https:// client URLs without a certificate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cert-file"), "the error names the missing flag: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no ANSI escape codes when stderr is not a terminal: {stderr:?}");
}
