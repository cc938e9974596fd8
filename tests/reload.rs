//! `stockade serve` reloads its profiles on SIGHUP: a good set replaces the old one atomically,
//! a bad set is refused whole (the old one stays, the log says why), and a running job keeps the
//! profile it started with.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Wait until the daemon log has `n` lines containing `needle`.
fn wait_log(d: &Daemon, needle: &str, n: usize) -> String {
    let until = Instant::now() + SETTLE_LIMIT;
    loop {
        let log = d.log_text();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            Instant::now() < until,
            "no {n}x {needle:?} in the daemon log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hup(d: &Daemon) {
    kill(Pid::from_raw(d.pid()), Signal::SIGHUP).unwrap();
}

#[test]
fn sighup_swaps_a_valid_set_keeps_the_old_one_on_errors_and_running_jobs_keep_theirs() {
    if !require_root(
        "sighup_swaps_a_valid_set_keeps_the_old_one_on_errors_and_running_jobs_keep_theirs",
    ) {
        return;
    }
    let uid = 61355;
    let env = TestEnv::new("reload", uid);
    let mut daemon = Daemon::start(&env);
    let old = |wall: u64| {
        profile_toml(
            "reload",
            uid,
            &ProfileOpts {
                wall_timeout_secs: wall,
                ..ProfileOpts::default()
            },
        )
    };

    // A profile added to the directory exists only after SIGHUP.
    env.write_profile("added", &old(30));
    let before = daemon.run_args(&["--profile", "added", "--json"], &["true"]);
    assert_eq!(before.code(), 125, "{}", before.describe());
    hup(&daemon);
    wait_log(&daemon, "SIGHUP: profiles reloaded", 1);
    let after = daemon.run_args(&["--profile", "added", "--json"], &["true"]);
    assert_eq!(after.code(), 0, "{}", after.describe());

    // A running job keeps its profile: `t` shrinks to a 1 s deadline while a 3 s job runs
    // under the old 120 s one; the job ends normally and its record has the old hash.
    let first_hash = daemon
        .run_args(&["--profile", PROFILE, "--json"], &["true"])
        .record()
        .profile_hash;
    let mut job = Proc::spawn(daemon.run_cmd(
        &["--profile", PROFILE, "--json"],
        &["sh", "-c", "echo started; sleep 3; echo finished"],
    ));
    job.wait_line("started", COMMAND_LIMIT);
    env.write_profile(PROFILE, &old(1));
    hup(&daemon);
    wait_log(&daemon, "SIGHUP: profiles reloaded", 2);
    let out = job.finish();
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout, "started\nfinished\n");
    assert_eq!(out.record().profile_hash, first_hash);
    let new = daemon.run_args(&["--profile", PROFILE, "--json"], &["sleep", "3"]);
    assert_eq!(
        new.code(),
        124,
        "the new 1 s deadline applies: {}",
        new.describe()
    );
    let new_hash = new.record().profile_hash;
    assert_ne!(new_hash, first_hash);

    // A bad set is refused whole: the good profiles stay as they were, the log names the error.
    env.write_profile(
        "broken",
        "[identity]\nuid = 0\ngid = 0\n[limits]\nwall_timeout_secs = 5\n",
    );
    env.write_profile(
        "added",
        &old(30).replace("wall_timeout_secs = 30", "wall_timeout_secs = 31"),
    );
    hup(&daemon);
    let log = wait_log(&daemon, "SIGHUP: reload refused, keeping the 2 profiles", 1);
    assert!(
        log.contains(&format!(
            "{}/broken.toml: identity.uid = 0: jobs never run as root",
            env.profiles.display()
        )),
        "{log}"
    );
    let still = daemon.run_args(&["--profile", PROFILE, "--json"], &["true"]);
    assert_eq!(
        still.record().profile_hash,
        new_hash,
        "the old set is still in force"
    );
    let gone = daemon.run_args(&["--profile", "broken", "--json"], &["true"]);
    assert_eq!(gone.code(), 125);
    assert!(daemon.is_running());
    drop(daemon);
    env.finish();
}
