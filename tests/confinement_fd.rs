//! Hostile-job battery, leaked descriptor: the caller holds a secret file open on descriptor 9
//! without close-on-exec, and a job under the shipped `agent` profile tries to use it, directly
//! and through /proc/self/fd/9.
//!
//! Its own test binary with a single test (see tests/fd_inherit.rs): the descriptor is put on the
//! test process itself, so every child spawned meanwhile inherits it; in a binary with parallel
//! tests it would leak into theirs.

mod common;

use std::os::fd::RawFd;
use std::process::{Command, Stdio};

use common::*;
use stockade_protocol::Cause;

const FD: RawFd = 9;
const SECRET: &str = "fd-nine-secret-3e1f";

/// Tries fd 9 every way a job could: read(9), fstat(9), open("/proc/self/fd/9"), readlink of it;
/// one `RESULT <name> <OK|ERRNO>` line each.
const PROBE: &str = r#"
import errno, os
def attempt(name, f):
    try:
        out = f()
        print("RESULT", name, "OK", out, flush=True)
    except OSError as e:
        print("RESULT", name, errno.errorcode[e.errno], flush=True)
attempt("read_fd", lambda: os.read(9, 100).decode())
attempt("fstat_fd", lambda: os.fstat(9).st_size)
attempt("proc_self_fd", lambda: open("/proc/self/fd/9").read())
attempt("readlink_proc_self_fd", lambda: os.readlink("/proc/self/fd/9"))
print("FDS", " ".join(sorted(os.listdir("/proc/self/fd"), key=int)), flush=True)
"#;

fn result<'a>(out: &'a Outcome, name: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("RESULT {name} ")))
        .unwrap_or_else(|| panic!("no RESULT {name}\n{}", out.describe()))
}

fn assert_fd_unusable(out: &Outcome, how: &str) {
    assert_eq!(out.code(), 0, "{how}\n{}", out.describe());
    assert_eq!(out.record().cause, Cause::Exited { code: 0 }, "{how}");
    assert!(
        !out.stdout.contains(SECRET) && !out.stdout.contains("fd9-file"),
        "{how}: the job used the leaked descriptor\n{}",
        out.describe()
    );
    // Not open in the job at all: EBADF for the descriptor, ENOENT for its /proc entry.
    for (name, want) in [
        ("read_fd", "EBADF"),
        ("fstat_fd", "EBADF"),
        ("proc_self_fd", "ENOENT"),
        ("readlink_proc_self_fd", "ENOENT"),
    ] {
        assert_eq!(result(out, name), want, "{how}: {name}\n{}", out.describe());
    }
    // python's own listing: stdin, stdout, stderr and the directory it is reading.
    let fds = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("FDS "))
        .unwrap_or_default();
    assert_eq!(fds, "0 1 2 3", "{how}: descriptors of the job");
}

#[test]
fn a_leaked_descriptor_9_is_unusable_in_the_job() {
    if !require_root("a_leaked_descriptor_9_is_unusable_in_the_job") {
        return;
    }
    let uid = 61164;
    let env = TestEnv::new("confine-fd", uid);
    env.write_profile("agent", &agent_profile_toml(uid));
    let file = env.dir.path().join("fd9-file");
    std::fs::write(&file, SECRET).unwrap();

    // Put the file on fd 9 of this process, without close-on-exec (closed again on drop).
    let _leaked = LeakedFd::open(&file, FD);

    // CONTROL: a plain child inherits fd 9 and reads the secret through both ways.
    let mut control = Command::new("/usr/bin/python3");
    control.args(["-c", PROBE]).stdin(Stdio::null());
    let control = Proc::spawn(control).finish();
    assert_eq!(control.code(), 0, "{}", control.describe());
    assert_eq!(
        result(&control, "read_fd"),
        format!("OK {SECRET}"),
        "control: a plain child must read fd {FD}\n{}",
        control.describe()
    );
    // The offset is shared: the first read consumed it, the /proc reopen starts fresh.
    assert_eq!(result(&control, "proc_self_fd"), format!("OK {SECRET}"));

    let argv = ["/usr/bin/python3", "-c", PROBE];
    let out = env.exec_args(&["--profile", "agent", "--json"], &argv);
    assert_fd_unusable(&out, "stockade exec");
    env.assert_nothing_left("after exec");

    let d = Daemon::start(&env);
    let out = d.run_args(&["--profile", "agent", "--json"], &argv);
    assert_fd_unusable(&out, "stockade run");
    assert!(d.stop().success());
    env.finish();
}
