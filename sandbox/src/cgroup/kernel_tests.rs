//! Real-kernel tests: root, the host's cgroup mounts, real processes.
//!
//! Skipped with a loud message when not root or when the host has no cgroup mounts; with
//! `STOCKADE_REQUIRE_PRIVILEGED=1` a skip is a failure. Each test uses its own parent group
//! (`stockade-test-<pid>-<n>`) and a [`Guard`] that kills its processes and removes its groups
//! even when an assertion fails.
//!
//! Besides the host's own layout, the tests drive the host's v1 mounts as a pure-v1 layout (the
//! freezer kill path) and its cgroup2 mount as a pure-v2 layout, where the host has them.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{geteuid, Pid};

use super::*;

const MIB64: u64 = 64 << 20;

/// The host's layout, or `None` after a loud skip message (a panic under
/// `STOCKADE_REQUIRE_PRIVILEGED=1`).
fn host_layout(test: &str) -> Option<Layout> {
    let why = if !geteuid().is_root() {
        "not running as root".to_owned()
    } else {
        match Layout::detect(Path::new("/proc/self/mountinfo")) {
            Ok(layout) => return Some(layout),
            Err(e) => format!("no usable cgroup mounts: {e}"),
        }
    };
    skip(test, &why);
    None
}

fn skip(test: &str, why: &str) {
    if std::env::var("STOCKADE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: cannot run ({why}) and STOCKADE_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!(
        "\n*** SKIPPED {test}: {why}; this real-kernel test did NOT run \
         (set STOCKADE_REQUIRE_PRIVILEGED=1 to make this a failure) ***\n"
    );
}

/// The test does not apply to this host's layout (say, the v1 freezer path on a pure-v2 host):
/// not a failure, even under `STOCKADE_REQUIRE_PRIVILEGED=1`, but said loudly.
fn not_applicable(test: &str, why: &str) {
    eprintln!("\n*** NOT APPLICABLE {test}: {why}; this real-kernel test did NOT run ***\n");
}

fn unique_parent() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "stockade-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every process and group a test made, cleaned up on drop (also when the test panics).
struct Guard {
    mgr: CgroupManager,
    jobs: Vec<String>,
    /// Each spawned child leads its own process group; its descendants stay in that group.
    children: Vec<Child>,
    /// Groups above a nested parent that the test made, removed last.
    outer_dirs: Vec<PathBuf>,
}

impl Guard {
    fn new(layout: Layout) -> Guard {
        Guard {
            mgr: CgroupManager::new(layout, &unique_parent()).unwrap(),
            jobs: Vec::new(),
            children: Vec::new(),
            outer_dirs: Vec::new(),
        }
    }

    fn create(&mut self, name: &str, limits: &Limits) -> JobCgroup {
        self.jobs.push(name.to_owned());
        self.mgr.create(name, limits).unwrap()
    }

    /// Spawn `cmd`, move it into `job` (every procs file, in order), and keep it for cleanup.
    /// Returns its index in `children`.
    fn spawn_into(&mut self, job: &JobCgroup, cmd: &mut Command) -> usize {
        become_subreaper();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        self.children.push(child);
        for file in job.procs_files() {
            fs::write(&file, &pid).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        self.children.len() - 1
    }

    /// Every place our parent group could be: must not exist after cleanup.
    fn parent_dirs(&self) -> Vec<PathBuf> {
        let layout = self.mgr.layout();
        let mut mounts: Vec<PathBuf> = layout.unified().map(Path::to_owned).into_iter().collect();
        if let Layout::Hybrid { v1, .. } | Layout::V1 { v1 } = layout {
            mounts.extend(v1.values().cloned());
        }
        mounts
            .into_iter()
            .map(|m| m.join(&self.mgr.parent))
            .collect()
    }

    fn cleanup(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.jobs {
            if let Ok(job) = self.mgr.open(name) {
                let _ = job.kill_all();
                poll(Duration::from_secs(5), || {
                    !job.is_populated().unwrap_or(false)
                });
                let _ = job.remove();
            }
        }
        for child in &self.children {
            reap_group(child.id() as i32, Duration::from_secs(5));
        }
        self.mgr.remove_parent_if_empty();
        for dir in &self.outer_dirs {
            let _ = fs::remove_dir(dir);
        }
    }

    /// Clean up and check that nothing of ours is left.
    fn finish(mut self) {
        self.cleanup();
        for dir in self.parent_dirs().iter().chain(&self.outer_dirs) {
            assert!(!dir.exists(), "left behind: {}", dir.display());
        }
        for child in &self.children {
            let pgid = child.id() as i32;
            assert_eq!(
                group_members(pgid),
                Vec::<i32>::new(),
                "left behind in group {pgid}"
            );
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Poll `done` every 5 ms for at most `limit`; whether it became true.
fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    done()
}

fn proc_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids of every process (zombies included) in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        let after_comm = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        if after_comm.split_whitespace().nth(2) == Some(&pgid.to_string()) {
            members.push(pid);
        }
    }
    members
}

/// Reap every process of group `pgid` as it becomes ours (we are a child subreaper; the
/// group's leader must have been waited for already); true once none is left, zombies
/// included.
fn reap_group(pgid: i32, limit: Duration) -> bool {
    poll(limit, || {
        while let Ok(status) = waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        group_members(pgid).is_empty()
    })
}

/// Make this test process a child subreaper, so that the processes orphaned when a job's shell
/// is killed are reparented to us and we can reap them (by process group, so as never to reap
/// another test's child): PID 1 of some hosts (this CI machine's) is slow or never reaps
/// orphans, which would leave zombies behind.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| nix::sys::prctl::set_child_subreaper(true).unwrap());
}

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("1000").stdin(Stdio::null());
    cmd
}

/// A shell that forks two `sleep`s once it reads a line (so the forks happen after it joined).
fn forking_shell() -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "read go; sleep 1000 & sleep 1000 & wait"])
        .stdin(Stdio::piped());
    cmd
}

fn v1_only(layout: &Layout) -> Option<Layout> {
    match layout {
        Layout::Hybrid { v1, .. } | Layout::V1 { v1 } => Some(Layout::V1 { v1: v1.clone() }),
        Layout::V2 { .. } => None,
    }
}

fn v2_only(layout: &Layout) -> Option<Layout> {
    layout.unified().map(|root| Layout::V2 {
        root: root.to_owned(),
    })
}

/// The job's tree (a shell and two forked `sleep`s) dies entirely with `kill_all`.
fn kill_tree(layout: Layout) {
    let mut g = Guard::new(layout);
    let job = g.create("tree", &Limits::default());
    let sh = g.spawn_into(&job, &mut forking_shell());
    writeln!(g.children[sh].stdin.take().unwrap(), "go").unwrap();
    assert!(
        poll(Duration::from_secs(5), || job.pids().unwrap().len() == 3),
        "shell and two sleeps in the job: {:?}",
        job.pids()
    );
    let sh_pid = g.children[sh].id() as i32;
    let pids = job.pids().unwrap();
    assert!(pids.contains(&sh_pid));
    assert!(job.is_populated().unwrap());

    job.kill_all().unwrap();
    let status = g.children[sh].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        reap_group(sh_pid, Duration::from_secs(5)),
        "grandchildren still there: {:?}",
        group_members(sh_pid)
    );
    for pid in pids {
        assert!(
            !proc_exists(pid),
            "process {pid} survived kill_all: {:?}",
            fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
    assert!(poll(Duration::from_secs(5), || !job
        .is_populated()
        .unwrap()));
    assert_eq!(job.pids().unwrap(), Vec::<i32>::new());

    let dirs: Vec<PathBuf> = job
        .procs_files()
        .iter()
        .map(|f| f.parent().unwrap().to_owned())
        .collect();
    job.remove().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    g.finish();
}

#[test]
fn kernel_kill_all_kills_a_forking_tree() {
    let Some(layout) = host_layout("kernel_kill_all_kills_a_forking_tree") else {
        return;
    };
    kill_tree(layout);
}

#[test]
fn kernel_kill_all_v1_freezer_path() {
    let name = "kernel_kill_all_v1_freezer_path";
    let Some(layout) = host_layout(name) else {
        return;
    };
    match v1_only(&layout) {
        Some(v1) if v1.v1_mount("freezer").is_some() => kill_tree(v1),
        _ => not_applicable(name, "the host has no v1 freezer hierarchy"),
    }
}

#[test]
fn kernel_kill_all_pure_v2_path() {
    let name = "kernel_kill_all_pure_v2_path";
    let Some(layout) = host_layout(name) else {
        return;
    };
    match v2_only(&layout) {
        Some(v2) => kill_tree(v2),
        None => not_applicable(name, "the host has no cgroup2 mount"),
    }
}

#[test]
fn kernel_limits_pids_signal_stats_remove() {
    let Some(layout) = host_layout("kernel_limits_pids_signal_stats_remove") else {
        return;
    };
    let mut g = Guard::new(layout.clone());
    let job = g.create(
        "limits",
        &Limits {
            memory_bytes: Some(MIB64),
            pids: Some(64),
        },
    );

    // Limits read back from the kernel.
    let (memory_dir, v1_memory) = job.memory_dir().unwrap();
    if v1_memory {
        let read = |f: &str| fs::read_to_string(memory_dir.join(f)).unwrap();
        assert_eq!(read("memory.limit_in_bytes").trim(), MIB64.to_string());
        if memory_dir.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read("memory.memsw.limit_in_bytes").trim(),
                MIB64.to_string()
            );
        }
    } else {
        let read = |f: &str| fs::read_to_string(memory_dir.join(f)).unwrap();
        assert_eq!(read("memory.max").trim(), MIB64.to_string());
    }
    let pids_dir = job.v1_dir("pids").or(job.cgroup2_dir()).unwrap();
    assert_eq!(
        fs::read_to_string(pids_dir.join("pids.max"))
            .unwrap()
            .trim(),
        "64"
    );

    assert!(!job.is_populated().unwrap());
    let a = g.spawn_into(&job, &mut sleeper());
    let b = g.spawn_into(&job, &mut sleeper());
    let (pa, pb) = (g.children[a].id() as i32, g.children[b].id() as i32);
    let mut pids = job.pids().unwrap();
    pids.sort_unstable();
    let mut want = vec![pa, pb];
    want.sort_unstable();
    assert_eq!(pids, want);
    assert!(job.is_populated().unwrap());

    let stats = job.stats();
    assert!(stats.peak_memory_bytes.is_some(), "{stats:?}");
    assert!(stats.cpu_usage_ns.is_some(), "{stats:?}");
    assert_eq!(stats.oom_kills, Some(0), "{stats:?}");

    assert_eq!(job.signal_all(Signal::SIGTERM).unwrap(), 2);
    use std::os::unix::process::ExitStatusExt;
    for i in [a, b] {
        let status = g.children[i].wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
    assert!(poll(Duration::from_secs(5), || !job
        .is_populated()
        .unwrap()));
    assert_eq!(job.signal_all(Signal::SIGTERM).unwrap(), 0);

    // Crash recovery view of the same job.
    assert_eq!(g.mgr.leftovers().unwrap(), vec!["limits"]);
    let reopened = g.mgr.open("limits").unwrap();
    assert_eq!(reopened.procs_files(), job.procs_files());
    let dirs: Vec<PathBuf> = job
        .procs_files()
        .iter()
        .map(|f| f.parent().unwrap().to_owned())
        .collect();
    job.remove().unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    assert_eq!(g.mgr.leftovers().unwrap(), Vec::<String>::new());
    g.finish();
}

#[test]
fn kernel_memory_limit_oom_kills_and_is_counted() {
    let Some(layout) = host_layout("kernel_memory_limit_oom_kills_and_is_counted") else {
        return;
    };
    let mut g = Guard::new(layout);
    let job = g.create(
        "oom",
        &Limits {
            memory_bytes: Some(32 << 20),
            pids: None,
        },
    );
    // The shell holds 128 MiB of command substitution output in memory.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "read go; x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo ${#x}",
    ])
    .stdin(Stdio::piped());
    let sh = g.spawn_into(&job, &mut cmd);
    writeln!(g.children[sh].stdin.take().unwrap(), "go").unwrap();
    let status = g.children[sh].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(poll(Duration::from_secs(5), || !job
        .is_populated()
        .unwrap()));
    let stats = job.stats();
    assert!(stats.oom_kills.unwrap() >= 1, "{stats:?}");
    assert!(stats.peak_memory_bytes.unwrap() <= 32 << 20, "{stats:?}");
    job.remove().unwrap();
    g.finish();
}

#[test]
fn kernel_pure_v2_refuses_a_controller_not_enabled_above_the_parent() {
    let name = "kernel_pure_v2_refuses_a_controller_not_enabled_above_the_parent";
    let Some(layout) = host_layout(name) else {
        return;
    };
    let Some(v2) = v2_only(&layout) else {
        return not_applicable(name, "the host has no cgroup2 mount");
    };
    let root = v2.unified().unwrap().to_owned();
    // Parent `<outer>/inner`: stockade creates <outer> but never writes its subtree_control
    // (that is above the parent), so `inner` gets no controllers whatever the host enables.
    let outer = unique_parent();
    let mut g = Guard::new(v2.clone());
    g.mgr = CgroupManager::new(v2, &format!("{outer}/inner")).unwrap();
    g.outer_dirs.push(root.join(&outer));
    let err = g
        .mgr
        .create(
            "refused",
            &Limits {
                memory_bytes: None,
                pids: Some(10),
            },
        )
        .unwrap_err();
    let msg = err.to_string();
    let outer_dir = root.join(&outer);
    assert!(
        msg.starts_with(&format!(
            "controller pids is not available in {}/inner/cgroup.controllers",
            outer_dir.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "hint: enable it in {}/cgroup.subtree_control",
            outer_dir.display()
        )),
        "{msg}"
    );
    assert_eq!(
        fs::read_to_string(outer_dir.join("cgroup.subtree_control")).unwrap(),
        "",
        "nothing written above the parent"
    );
    assert_eq!(g.mgr.leftovers().unwrap(), Vec::<String>::new());
    g.finish();
}

#[test]
fn kernel_v1_signal_and_populated_track_the_freezer() {
    let name = "kernel_v1_signal_and_populated_track_the_freezer";
    let Some(layout) = host_layout(name) else {
        return;
    };
    let Some(v1) = v1_only(&layout) else {
        return not_applicable(name, "the host has no v1 hierarchies");
    };
    let mut g = Guard::new(v1);
    let job = g.create(
        "sig",
        &Limits {
            memory_bytes: Some(MIB64),
            pids: Some(16),
        },
    );
    assert_eq!(job.cgroup2_dir(), None);
    let a = g.spawn_into(&job, &mut sleeper());
    assert_eq!(job.pids().unwrap(), vec![g.children[a].id() as i32]);
    assert!(job.is_populated().unwrap());
    assert!(job.stats().cpu_usage_ns.is_some());
    assert_eq!(job.signal_all(Signal::SIGTERM).unwrap(), 1);
    g.children[a].wait().unwrap();
    assert!(poll(Duration::from_secs(5), || !job
        .is_populated()
        .unwrap()));
    job.remove().unwrap();
    g.finish();
}

/// `clone3(CLONE_INTO_CGROUP)` (crate::spawn): the child starts in the job's cgroup2 group
/// (never in ours), with default signal dispositions and an empty signal mask whatever the
/// caller had, only its three descriptors, and exec errors come back as errors with nothing left.
#[test]
fn clone_into_cgroup_starts_the_helper_in_its_group_clean() {
    use crate::spawn::{spawn_helper_into_cgroup, SpawnError};
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;

    let test = "clone_into_cgroup_starts_the_helper_in_its_group_clean";
    let Some(layout) = host_layout(test) else {
        return;
    };
    if layout.unified().is_none() {
        not_applicable(test, "no cgroup2 hierarchy");
        return;
    }
    let mut g = Guard::new(layout);
    let job = g.create("into", &Limits::default());
    let dir = job.cgroup2_dir().unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("fake-helper");
    fs::write(
        &script,
        "#!/bin/sh\ngrep '^0::' /proc/self/cgroup\ngrep -E '^Sig(Blk|Ign)' /proc/self/status\n\
         echo args \"$@\"\nls /proc/self/fd | tr '\\n' ' '\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

    // CONTROL: this thread blocks SIGUSR1, and the test harness ignores SIGPIPE; neither may
    // reach the child.
    let mut block = SigSet::empty();
    block.add(Signal::SIGUSR1);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old)).unwrap();
    let spawned = spawn_helper_into_cgroup(&script, &dir);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
    let h = spawned.unwrap_or_else(|e| panic!("{e:?}"));
    let mut out = String::new();
    fs::File::from(h.stdout).read_to_string(&mut out).unwrap();
    let status = waitid(Id::PIDFd(h.pidfd.as_fd()), WaitPidFlag::WEXITED).unwrap();
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?}\n{out}"
    );
    let parent = g.mgr.parent().display().to_string();
    assert!(
        out.contains(&format!("0::/{parent}/into\n")),
        "not started in its group:\n{out}"
    );
    assert!(out.contains("SigBlk:\t0000000000000000\n"), "{out}");
    assert!(out.contains("SigIgn:\t0000000000000000\n"), "{out}");
    assert!(out.contains("args __stockade-init\n"), "{out}");
    // 0, 1, 2, ls's own directory descriptor, and whatever this test process itself holds
    // without close-on-exec (the helper closes those in its step 1): nothing of the spawn.
    let inheritable: Vec<i32> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd: &i32| {
            nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_GETFD)
                .is_ok_and(|f| f & libc::FD_CLOEXEC == 0)
        })
        .collect();
    let child_fds: Vec<i32> = out
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let extra: Vec<i32> = child_fds
        .iter()
        .copied()
        .filter(|fd| *fd > 2 && !inheritable.contains(fd))
        .collect();
    assert!(
        extra.len() <= 1,
        "descriptors leaked into the child: {extra:?} ({out:?})"
    );
    drop(h.ctrl);

    // A helper that cannot be executed: an error naming the call, no process left behind.
    let missing = tmp.path().join("missing");
    match spawn_helper_into_cgroup(&missing, &dir) {
        Err(SpawnError::Failed(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains("CLONE_INTO_CGROUP"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !job.is_populated().unwrap(),
        "the failed child is still in the group"
    );
    // Not a cgroup directory: refused, never silently started elsewhere.
    match spawn_helper_into_cgroup(&script, tmp.path()) {
        Err(SpawnError::Failed(e)) => assert!(e.to_string().contains("EBADF"), "{e}"),
        other => panic!("{other:?}"),
    }
}
