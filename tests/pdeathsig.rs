//! The job dies with its supervisor: `stockade exec` is SIGKILLed (it cannot clean up), and the
//! job's process must be killed by the kernel through `PR_SET_PDEATHSIG`, which the helper arms
//! again after `setresuid` (a credential change clears it).
//!
//! Its own test binary: this process becomes a child subreaper so that the killed job is
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
    // The job's main process is the helper itself after execve: print its pid, then become
    // `sleep` (same pid) so nothing but PDEATHSIG can end it before its 1000 s.
    let mut exec = Proc::spawn(env.exec_cmd(
        &["--profile", PROFILE, "--workspace", ws.to_str().unwrap()],
        &["sh", "-c", "echo JOBPID $$; exec sleep 1000"],
    ));
    let line = exec.wait_line("JOBPID ", COMMAND_LIMIT);
    let job: i32 = line["JOBPID ".len()..].trim().parse().expect("job pid");
    // CONTROL: the job runs, as the profile's uid, as a child of `stockade exec`.
    assert!(
        is_process_of_uid(job, uid),
        "job {job} is not running as {uid}"
    );
    assert_eq!(
        status_field(job, "PPid:").and_then(|p| p.parse::<i32>().ok()),
        Some(exec.pid()),
        "the job's parent must be stockade exec"
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

    // The kernel kills the job (reparented to us, the subreaper): reap it and read why it ended.
    let until = Instant::now() + SETTLE_LIMIT;
    let status = loop {
        match waitpid(Pid::from_raw(job), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => break other,
        }
    };
    if matches!(status, Ok(WaitStatus::StillAlive)) {
        let _ = kill(Pid::from_raw(job), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(job), None);
    }
    assert_eq!(
        status,
        Ok(WaitStatus::Signaled(
            Pid::from_raw(job),
            Signal::SIGKILL,
            false
        )),
        "the job must be SIGKILLed when its supervisor dies"
    );

    // Nothing could remove the job's cgroup (crash recovery is the cgroups issue's): do it here.
    for dir in env.job_cgroups() {
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
    }
    env.finish();
}
