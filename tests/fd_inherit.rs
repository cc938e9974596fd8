//! An inherited, non-close-on-exec descriptor of the caller never reaches the job.
//!
//! Its own test binary with a single test: it puts a file on descriptor 7 of the test process
//! itself (no `pre_exec`, no unsafe), which every child spawned meanwhile inherits. In a binary
//! with other tests running in parallel that would clobber or leak into their descriptors.

mod common;

use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use stockade_protocol::Cause;

const FD: RawFd = 7;
const SECRET: &str = "fd-seven-secret-content";

/// Lists the job's descriptors (`ls /proc/self/fd`), says whether the shell itself has fd 7, and
/// tries to read from it. With `wait_for_go`, first waits (bounded) for a file `go` in its
/// working directory, so the test can look at stockade's own descriptors meanwhile.
fn probe_script(wait_for_go: bool) -> String {
    let wait = if wait_for_go {
        "i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
    } else {
        ""
    };
    format!(
        "{wait}echo fds-begin; ls /proc/self/fd; echo fds-end; \
         if [ -e /proc/$$/fd/{FD} ]; then echo fd{FD}-present; else echo fd{FD}-absent; fi; \
         cat <&{FD} 2>/dev/null || echo fd{FD}-unreadable"
    )
}

fn listed_fds(stdout: &str) -> Vec<i32> {
    stdout
        .lines()
        .skip_while(|l| *l != "fds-begin")
        .skip(1)
        .take_while(|l| *l != "fds-end")
        .map(|l| l.trim().parse().unwrap_or_else(|_| panic!("fd {l:?}")))
        .collect()
}

fn assert_job_did_not_get_fd(out: &Outcome, how: &str) {
    assert_eq!(out.code(), 0, "{how}\n{}", out.describe());
    let fds = listed_fds(&out.stdout);
    assert!(
        !fds.contains(&FD),
        "{how}: the job sees fd {FD}: {fds:?}\n{}",
        out.describe()
    );
    // Only stdin, stdout, stderr, and ls's own directory descriptor: nothing inherited at all.
    assert!(
        fds.iter().all(|fd| (0..=3).contains(fd)),
        "{how}: unexpected descriptors in the job: {fds:?}"
    );
    assert!(out.stdout.contains(&format!("fd{FD}-absent")), "{how}");
    assert!(out.stdout.contains(&format!("fd{FD}-unreadable")), "{how}");
    assert!(!out.stdout.contains(SECRET), "{how}: the job read the file");
    assert_eq!(out.record().cause, Cause::Exited { code: 0 }, "{how}");
}

fn fd_target(pid: i32, fd: RawFd) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}

#[test]
fn inherited_fd_7_does_not_reach_the_job() {
    if !require_root("inherited_fd_7_does_not_reach_the_job") {
        return;
    }
    let env = TestEnv::new("fd-inherit", 61130);
    let file = env.dir.path().join("fd7-file");
    std::fs::write(&file, SECRET).unwrap();

    // Put the file on fd 7 of this process, without close-on-exec (closed again on drop).
    let _leaked = LeakedFd::open(&file, FD);

    // Control: a plain child sees fd 7 and can read the file through it, so the probe works.
    let mut control = std::process::Command::new("sh");
    control.args(["-c", &probe_script(false)]);
    let control = Proc::spawn(control).finish();
    assert!(
        listed_fds(&control.stdout).contains(&FD)
            && control.stdout.contains(&format!("fd{FD}-present"))
            && control.stdout.contains(SECRET),
        "control: a plain child must inherit fd {FD}\n{}",
        control.describe()
    );

    // stockade exec: it inherits fd 7 itself (checked while the job waits), the job does not.
    let ws = env.shared_workspace("ws");
    let job = Proc::spawn(env.exec_cmd(
        &[
            "--profile",
            PROFILE,
            "--json",
            "--workspace",
            ws.to_str().unwrap(),
        ],
        &["sh", "-c", &probe_script(true)],
    ));
    let until = Instant::now() + Duration::from_secs(30);
    while fd_target(job.pid(), FD).as_deref() != Some(Path::new(&file)) {
        assert!(
            Instant::now() < until,
            "stockade exec (pid {}) should have inherited fd {FD}: {:?}",
            job.pid(),
            fd_target(job.pid(), FD)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(ws.join("go"), "").unwrap();
    assert_job_did_not_get_fd(&job.finish(), "stockade exec");
    env.assert_nothing_left("after exec");

    // Through the daemon: the daemon inherited fd 7 from this process; its jobs do not get it.
    let d = Daemon::start(&env);
    assert_eq!(
        fd_target(d.pid(), FD).as_deref(),
        Some(Path::new(&file)),
        "the daemon should have inherited fd {FD}"
    );
    let out = d.run(&["sh", "-c", &probe_script(false)]);
    assert_job_did_not_get_fd(&out, "stockade run");
    assert!(d.stop().success());
    env.finish();
}
