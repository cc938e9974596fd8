//! `stockade doctor` on the real kernel: it launches a real job under each profile and reports
//! honestly, including a profile that cannot run.

mod common;

use std::process::Command;

use common::*;

fn doctor(env: &TestEnv) -> Outcome {
    let mut cmd = Command::new(STOCKADE);
    cmd.arg("doctor")
        .arg("--profiles")
        .arg(&env.profiles)
        .arg("--cgroup-parent")
        .arg(&env.cgroup_parent)
        .arg("--json")
        .env("TMPDIR", &env.scratch)
        .env_remove("STOCKADE_LOG");
    Proc::spawn(cmd).finish()
}

#[test]
fn doctor_reports_host_features_and_runs_each_profile() {
    if !require_root("doctor_reports_host_features_and_runs_each_profile") {
        return;
    }
    let env = TestEnv::new("doctor-ok", 61150);
    let out = doctor(&env);
    assert!(
        out.status.success(),
        "doctor failed: {}{}",
        out.stdout,
        out.stderr
    );
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("doctor --json");
    // What the kernel says, not a guess: this host has Landlock and every namespace kind.
    assert!(report["landlock_abi"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["seccomp_filter"], true);
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        assert_eq!(report["namespaces"][ns], true, "{ns}: {report}");
    }
    let profiles = report["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1, "{report}");
    assert_eq!(profiles[0]["profile"], PROFILE);
    assert_eq!(profiles[0]["runs"], true, "{report}");
    assert_eq!(
        profiles[0]["not_enforced"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    env.finish();
}

#[test]
fn doctor_fails_when_a_profile_cannot_run_here_and_says_why() {
    if !require_root("doctor_fails_when_a_profile_cannot_run_here_and_says_why") {
        return;
    }
    let env = TestEnv::new("doctor-broken", 61151);
    // A profile whose filesystem leaves out /usr: the job's root has no `true` to execute.
    let broken = profile_toml("doctor-broken", 61151, &ProfileOpts::default())
        + "\n[filesystem]\nread_exec = [\"/etc\"]\n";
    env.write_profile("broken", &broken);
    let out = doctor(&env);
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let report: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("doctor --json");
    let by_name = |n: &str| {
        report["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["profile"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in {report}"))
    };
    assert_eq!(by_name(PROFILE)["runs"], true, "{report}");
    let broken = by_name("broken");
    assert_eq!(broken["runs"], false, "{report}");
    let outcome = broken["outcome"].as_str().unwrap();
    assert_eq!(
        outcome,
        "cannot run: step exec: execve(true): command not found: true \
         (searched PATH=/usr/local/bin:/usr/bin:/bin)"
    );
    env.finish();
}
