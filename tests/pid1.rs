//! `stockade serve` as PID 1 (of its own pid namespace, as in a container): orphaned job
//! processes are reparented to it and must be reaped by its orphan reaper, without it stealing
//! the exit status of the job processes it waits for itself; SIGTERM still
//! shuts it down cleanly (PID 1 gets no default signal actions).

mod common;

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The only child of `pid` (the daemon under `unshare --fork`).
fn only_child(pid: i32) -> i32 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let kids: Vec<i32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if kids.len() == 1 {
            return kids[0];
        }
        assert!(
            Instant::now() < until,
            "unshare {pid} has children {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_as_pid_1_reaps_orphans_and_keeps_exit_statuses() {
    if !require_root("serve_as_pid_1_reaps_orphans_and_keeps_exit_statuses") {
        return;
    }
    let uid = 61306;
    let env = TestEnv::new("pid1", uid);
    let state = env.dir.path().join("state");
    let socket = state.with_extension("sock");
    env.register_state_dir(state.clone());
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"])
        .arg(STOCKADE)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        .arg("--profiles")
        .arg(&env.profiles)
        .arg("--cgroup-parent")
        .arg(&env.cgroup_parent);
    let unshare = Proc::spawn(cmd);
    let daemon = only_child(unshare.pid());
    // CONTROL: the daemon is PID 1 of its namespace.
    let nspid = status_field(daemon, "NSpid:").unwrap();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "NSpid of the daemon: {nspid}"
    );
    let until = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < until, "daemon never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = |argv: &[&str]| {
        let mut c = Command::new(STOCKADE);
        c.arg("run")
            .arg("--socket")
            .arg(&socket)
            .args(["--profile", PROFILE, "--json", "--"])
            .args(argv);
        Proc::spawn(c)
    };
    // Several jobs at once, each leaving double-forked orphans (reparented to PID 1, the daemon)
    // and exiting with its own code, which must come back intact.
    let jobs: Vec<(i32, Proc)> = (1..=6)
        .map(|code| {
            let script = format!(
                "for i in 1 2 3; do (sleep 0.$i &); (true &); done; sleep 0.2; exit {code}"
            );
            (code, run(&["sh", "-c", &script]))
        })
        .collect();
    for (code, p) in jobs {
        let out = p.finish();
        assert_eq!(out.code(), code, "{}", out.describe());
        let rec = out.record();
        assert_eq!(
            rec.cause,
            stockade_protocol::Cause::Exited { code },
            "{}",
            out.describe()
        );
    }
    // Every orphan was reaped by the daemon: no process of the job's uid, zombies included.
    env.assert_nothing_left("after the jobs");
    kill(Pid::from_raw(daemon), Signal::SIGTERM).unwrap();
    let out = unshare.finish();
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(out.stderr.contains("stopped"), "{}", out.describe());
    env.finish();
}
