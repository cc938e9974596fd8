//! Secrets on the real kernel: a job gets its profile's secret in its environment, and whatever
//! it prints of it (whole, split across writes, base64) reaches the client as `[REDACTED:name]`;
//! the value is in neither the result record nor the daemon's log. A secret file that became
//! readable by others refuses the job, naming the file and its mode.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

const VALUE: &str = "s3cr3t-T0ken/with+chars";
/// base64 of VALUE, as `base64` prints it.
const VALUE_B64: &str = "czNjcjN0LVQwa2VuL3dpdGgrY2hhcnM=";

/// Prints the secret whole, split across two writes with a pause between them, base64-encoded
/// and on stderr; and its length, to show the job got the real value.
const SCRIPT: &str = r#"printf 'whole:%s\n' "$API_TOKEN"
printf 'split:%.6s' "$API_TOKEN"; sleep 0.3; printf '%s\n' "${API_TOKEN#??????}"
printf 'b64:'; printf '%s' "$API_TOKEN" | base64
printf 'err:%s\n' "$API_TOKEN" >&2
printf 'len:%s\n' "${#API_TOKEN}""#;

const WANT_STDOUT: &str =
    "whole:[REDACTED:api]\nsplit:[REDACTED:api]\nb64:[REDACTED:api]\nlen:23\n";

fn setup(name: &str, uid: u32) -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new(name, uid);
    let secret = env.dir.path().join("api-token");
    std::fs::write(&secret, format!("{VALUE}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.write_profile(
        "s",
        &format!(
            "{}\n[secrets]\napi = {{ file = {:?}, env = \"API_TOKEN\" }}\n",
            agent_profile_toml(uid),
            secret.display().to_string()
        ),
    );
    (env, secret)
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(VALUE), "{what} contains the secret:\n{text}");
    assert!(
        !text.contains(VALUE_B64),
        "{what} contains the secret in base64:\n{text}"
    );
}

#[test]
fn exec_redacts_secrets_from_the_jobs_output_and_keeps_them_out_of_the_record() {
    if !require_root("exec_redacts_secrets_from_the_jobs_output_and_keeps_them_out_of_the_record") {
        return;
    }
    let (env, _) = setup("secrets-exec", 61352);
    let out = env.exec_args(&["--profile", "s", "--json"], &["sh", "-c", SCRIPT]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout, WANT_STDOUT, "{}", out.describe());
    assert!(
        out.stderr.starts_with("err:[REDACTED:api]\n"),
        "{}",
        out.describe()
    );
    assert_no_secret("exec's stderr (with the result record)", &out.stderr);
    let rec = out.record();
    assert_no_secret("the result record", &serde_json::to_string(&rec).unwrap());
    env.finish();
}

#[test]
fn run_redacts_secrets_and_the_daemon_never_logs_them() {
    if !require_root("run_redacts_secrets_and_the_daemon_never_logs_them") {
        return;
    }
    let (env, secret) = setup("secrets-run", 61353);
    let daemon = Daemon::start_with(&env, &[("STOCKADE_LOG", "debug")]);
    let out = daemon.run_args(&["--profile", "s", "--json"], &["sh", "-c", SCRIPT]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout, WANT_STDOUT, "{}", out.describe());
    assert!(
        out.stderr.starts_with("err:[REDACTED:api]\n"),
        "{}",
        out.describe()
    );
    assert_no_secret("run's stderr (with the result record)", &out.stderr);

    // A secret file that became readable by others refuses the next job, naming file and mode.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = daemon.run_args(&["--profile", "s", "--json"], &["true"]);
    assert_eq!(refused.code(), 125, "{}", refused.describe());
    let rec = refused.record();
    let want = format!(
        "secret api of profile s: {}: has mode 0644: group or others may access it",
        secret.display()
    );
    match &rec.cause {
        stockade_protocol::Cause::Rejected { reason } => assert_eq!(reason, &want),
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(rec.profile_hash.len(), 64);

    let log = daemon.log_text();
    assert!(log.contains("submit"), "the log is the daemon's: {log}");
    assert_no_secret("the daemon log", &log);
    drop(daemon);
    env.finish();
}

/// The secret is read when the job starts: a profile naming a missing file fails at load.
#[test]
fn a_missing_secret_file_fails_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        "extends = \"agent\"\n[secrets]\napi = { file = \"/nonexistent/stockade-secret\", env = \"API_TOKEN\" }\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(STOCKADE);
    cmd.args(["profiles", "check"]).arg(dir.path());
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 1, "{}", out.describe());
    assert_eq!(
        out.stderr,
        format!(
            "{}: secrets.api.file = \"/nonexistent/stockade-secret\": cannot stat: No such file or directory (os error 2)\n  hint: secret files are regular files owned by root with mode 0600 or 0400 (chown root:root; chmod 600)\n1 error in 1 file\n",
            Path::new(dir.path()).join("s.toml").display()
        )
    );
}

/// A sibling job of the same uid, under a profile without the secret, running while a job with
/// the secret sleeps, finds the secret in no `/proc/*/environ` it can read (its pid namespace
/// and /proc hold only its own processes), though it can read its own environment.
#[test]
fn a_sibling_job_of_the_same_uid_cannot_read_the_secret_from_proc() {
    if !require_root("a_sibling_job_of_the_same_uid_cannot_read_the_secret_from_proc") {
        return;
    }
    let (env, _) = setup("secrets-sibling", 61356);
    env.write_profile("plain", &agent_profile_toml(61356));
    let daemon = Daemon::start(&env);
    let mut holder = Proc::spawn(daemon.run_cmd(
        &["--profile", "s", "--json"],
        &["sh", "-c", "echo holding; sleep 3; echo released"],
    ));
    holder.wait_line("holding", COMMAND_LIMIT);
    let probe = r#"n=0; for f in /proc/[0-9]*/environ; do n=$((n+1)); tr '\0' '\n' < "$f"; done > /tmp/all
echo "readable:$n"; grep -c "^LANG=" /tmp/all; grep -c "^API_TOKEN=" /tmp/all; grep -c "s3cr3t" /tmp/all; true"#;
    let out = daemon.run_args(
        &["--profile", "plain", "--env", "TERM=probe"],
        &["sh", "-c", probe],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    // It read environments (its own processes', LANG is in every one), none with the secret.
    assert!(
        lines[0].starts_with("readable:") && lines[0] != "readable:0",
        "{}",
        out.describe()
    );
    assert_ne!(lines[1], "0", "{}", out.describe());
    assert_eq!(&lines[2..], ["0", "0"], "{}", out.describe());
    let held = holder.finish();
    assert_eq!(held.stdout, "holding\nreleased\n", "{}", held.describe());
    drop(daemon);
    env.finish();
}
