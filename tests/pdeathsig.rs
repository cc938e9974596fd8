//! The job dies with its supervisor: `stockade exec` is SIGKILLed (it cannot clean up), and the
//! job must be killed by the kernel through a chain of `PR_SET_PDEATHSIG`s: the monitor (the
//! helper, `stockade exec`'s child) dies with `stockade exec`, the pid namespace's init dies with
//! the monitor, and the kernel kills everything in the namespace when its init dies. Both the
//! monitor and init change their uid, which clears the signal, so each arms it again after; the
//! test fails if either re-arm is missing.
//!
//! Its own test binary: this process becomes a child subreaper so that the monitor and init are
//! reparented to it and reaped here, which must not disturb other tests' orphan checks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

#[test]
fn the_job_dies_when_its_supervisor_is_killed() {
    if !require_root("the_job_dies_when_its_supervisor_is_killed") {
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let uid = 61170;
    let env = TestEnv::new("pdeathsig", uid);
    let ws = env.shared_workspace("ws");
    // The job prints its pid (2 in its namespace), then becomes `sleep` (same pid) so nothing but
    // a parent-death signal can end it before its 1000 s.
    let mut exec = Proc::spawn(env.exec_cmd(
        &["--profile", PROFILE, "--workspace", ws.to_str().unwrap()],
        &["sh", "-c", "echo JOBPID $$; exec sleep 1000"],
    ));
    let line = exec.wait_line("JOBPID ", COMMAND_LIMIT);
    let ns_pid: i32 = line["JOBPID ".len()..].trim().parse().expect("job pid");
    let job = host_pid(uid, ns_pid);
    let parent = |pid: i32| status_field(pid, "PPid:").and_then(|p| p.parse::<i32>().ok());
    // CONTROL: the chain runs as the profile's uid: stockade exec -> monitor -> init -> job.
    let init = parent(job).expect("the job's parent");
    let monitor = parent(init).expect("init's parent");
    for (what, pid) in [("job", job), ("init", init), ("monitor", monitor)] {
        assert!(
            is_process_of_uid(pid, uid),
            "{what} {pid} is not running as {uid}"
        );
    }
    assert_eq!(
        parent(monitor),
        Some(exec.pid()),
        "the monitor's parent must be stockade exec"
    );

    // SIGKILL: stockade gets no chance to tear anything down.
    kill(Pid::from_raw(exec.pid()), Signal::SIGKILL).unwrap();
    let out = exec.finish();
    assert_eq!(
        out.status.code(),
        None,
        "stockade exec was killed\n{}",
        out.stderr
    );

    // The kernel kills the monitor and init, reparented to us (the subreaper): reap them and read
    // why they ended. The job is init's child: the namespace's teardown reaps it.
    for (what, pid) in [("monitor", monitor), ("init", init)] {
        let until = Instant::now() + SETTLE_LIMIT;
        let status = loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => break other,
            }
        };
        if matches!(status, Ok(WaitStatus::StillAlive)) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        assert_eq!(
            status,
            Ok(WaitStatus::Signaled(
                Pid::from_raw(pid),
                Signal::SIGKILL,
                false
            )),
            "the {what} must be SIGKILLed when its parent dies"
        );
    }
    assert!(
        proc_info(job).is_none(),
        "the job outlived its namespace's init: {:?}",
        proc_info(job)
    );

    // Nothing could remove the job's cgroup (crash recovery is the cgroups issue's): do it here.
    for dir in env.job_cgroups() {
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
    }
    env.finish();
}
