//! `stockade profiles check|explain` as operators run them, and the profile hash in every result
//! record (a real job on the real kernel).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn stockade(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(STOCKADE);
    cmd.args(args).env_remove("STOCKADE_LOG");
    Proc::spawn(cmd).finish()
}

fn shipped_defaults() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles/defaults")
        .display()
        .to_string()
}

#[test]
fn check_passes_on_the_shipped_defaults_and_the_embedded_set() {
    for args in [
        vec!["profiles", "check"],
        vec!["profiles", "check", &shipped_defaults()],
    ] {
        let out = stockade(&args);
        assert_eq!(out.code(), 0, "{args:?}: {}", out.describe());
        for name in ["agent", "build", "git"] {
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("ok {name} sha256:"))),
                "{args:?}: {}",
                out.describe()
            );
        }
        assert!(
            out.stdout.contains("3 profiles, no errors"),
            "{}",
            out.describe()
        );
    }
}

#[test]
fn check_lists_every_error_of_every_file_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("one.toml"),
        "[identity]\nuid = 0\ngid = 61350\n[limits]\nwall_timeout_secs = 0\n",
    )
    .unwrap();
    std::fs::write(d.join("two.toml"), "extends = \"nowhere\"\n").unwrap();
    std::fs::write(
        d.join("three.toml"),
        "extends = \"agent\"\n[filesystem]\nread_only = [\"etc\"]\n",
    )
    .unwrap();
    std::fs::write(d.join("fine.toml"), "extends = \"agent\"\n").unwrap();
    let out = stockade(&["profiles", "check", &d.display().to_string()]);
    assert_eq!(out.code(), 1, "{}", out.describe());
    let p = d.display();
    let want = format!(
        "{p}/one.toml: identity.uid = 0: jobs never run as root\n  hint: pick an unused id from a dedicated range such as 61000-61999\n\
         {p}/one.toml: limits.wall_timeout_secs = 0: must be between 1 and 604800 (a week)\n\
         {p}/three.toml: filesystem.read_only = \"etc\": must be an absolute path without `..`\n  hint: paths are absolute: did you mean \"/etc\"?\n\
         {p}/two.toml: extends = \"nowhere\": unknown parent profile \"nowhere\" (chain: two -> nowhere)\n  hint: known profiles: agent, build, fine, git, one, three, two\n\
         4 errors in 3 files\n"
    );
    assert_eq!(out.stderr, want);
    assert_eq!(out.stdout, "");
}

#[test]
fn explain_shows_the_inherited_plan_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ci.toml"),
        "extends = \"build\"\ndescription = \"ci\"\n[limits]\nwall_timeout_secs = 120\n\
         [env]\nallow = [\"...\", \"CI\"]\n[network]\ntcp_connect = [443]\n",
    )
    .unwrap();
    let d = dir.path().display().to_string();
    let text = stockade(&["profiles", "explain", "ci", "--profiles", &d]);
    assert_eq!(text.code(), 0, "{}", text.describe());
    for want in [
        "profile ci\n  ci\nextends build\nhash sha256:",
        "\n  wall_timeout  120s\n",
        "\n  memory        8192 MiB\n",
        "\n  allow  TERM TZ LC_ALL CC CXX CFLAGS CXXFLAGS LDFLAGS MAKEFLAGS RUSTFLAGS CARGO_TERM_COLOR CI\n",
        "\n  read_exec  /usr\n",
        "\nnetwork tcp_connect: 443; tcp_bind: none\n",
        "\nseccomp required program ",
        "\n  deny ptrace (",
    ] {
        assert!(text.stdout.contains(want), "missing {want:?} in:\n{}", text.stdout);
    }
    let json = stockade(&["profiles", "explain", "ci", "--profiles", &d, "--json"]);
    assert_eq!(json.code(), 0, "{}", json.describe());
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["extends"], serde_json::json!(["build"]));
    assert_eq!(v["policy"]["limits"]["wall_timeout_secs"], 120);
    assert_eq!(v["policy"]["tcp_connect"], serde_json::json!([443]));
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    assert!(text
        .stdout
        .contains(&format!("hash sha256:{}\n", v["hash"].as_str().unwrap())));

    let unknown = stockade(&["profiles", "explain", "nope", "--profiles", &d]);
    assert_eq!(unknown.code(), 125, "{}", unknown.describe());
    assert!(
        unknown
            .stderr
            .contains(&format!("unknown profile \"nope\" (profiles from {d}: ci)")),
        "{}",
        unknown.describe()
    );
}

/// The result record names the policy a job ran under: the same hash `explain` prints.
#[test]
fn the_result_record_carries_the_profile_hash() {
    if !require_root("the_result_record_carries_the_profile_hash") {
        return;
    }
    let env = TestEnv::new("profiles-hash", 61350);
    let out = env.exec(&["true"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let rec = out.record();
    let explain = stockade(&[
        "profiles",
        "explain",
        PROFILE,
        "--profiles",
        &env.profiles.display().to_string(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&explain.stdout).unwrap();
    assert_eq!(rec.profile, PROFILE);
    assert_eq!(rec.profile_hash, v["hash"].as_str().unwrap());
    // A request refused before any profile was found has no hash.
    let refused = env.exec_args(&["--profile", "nope", "--json"], &["true"]);
    assert_eq!(refused.code(), 125);
    assert_eq!(refused.record().profile_hash, "");
    env.finish();
}
