//! Shared helpers of stockade's real-kernel integration tests.
//!
//! Every test gets its own [`TestEnv`]: its own uid/gid (so "no process of the job's uid is left"
//! is exact even when tests run in parallel), its own profile directory, its own cgroup parent
//! `stockade-it-<name>` (so "no job cgroup is left" is exact), and its own scratch directory for
//! fresh workspaces. [`TestEnv::finish`] asserts that nothing is left behind and removes the
//! (empty) cgroup parents.
//!
//! Privileged tests call [`require_root`] first: without root they skip loudly, unless
//! `STOCKADE_REQUIRE_PRIVILEGED=1`, where a skip is a failure.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stockade_protocol::ResultRecord;

/// The `stockade` binary under test.
pub const STOCKADE: &str = env!("CARGO_BIN_EXE_stockade");

/// Name of the profile every [`TestEnv`] writes.
pub const PROFILE: &str = "t";

/// Upper bound for one `stockade` command in a test (a hang is a failure, not a stuck CI job).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// How long "nothing is left behind" may take to become true after a job ended (process teardown
/// in the kernel, a daemon that cancels on disconnect). Leaks never resolve by themselves.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Root check for privileged tests. Returns whether the test can run.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("STOCKADE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("privileged test cannot run: not root ({test}; STOCKADE_REQUIRE_PRIVILEGED=1)");
    }
    // Straight to the stderr descriptor: libtest captures `eprintln!` of passing tests, and a
    // skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: needs root; set STOCKADE_REQUIRE_PRIVILEGED=1 to make this a failure ***\n"
    );
    false
}

/// Profile limits a test may change.
#[derive(Debug, Clone)]
pub struct ProfileOpts {
    pub wall_timeout_secs: u64,
    pub grace_secs: u64,
    pub memory_mib: u64,
    pub pids: u64,
    /// More `[limits]` lines, verbatim (e.g. `"cpu_secs = 30\n"`).
    pub extra_limits: String,
    /// More sections at the end of the profile, verbatim (e.g. `"[mechanisms]\n..."`).
    pub extra_sections: String,
}

impl Default for ProfileOpts {
    fn default() -> Self {
        ProfileOpts {
            wall_timeout_secs: 120,
            grace_secs: 1,
            memory_mib: 256,
            pids: 128,
            extra_limits: String::new(),
            extra_sections: String::new(),
        }
    }
}

/// One test's private world: uid, profiles, cgroup parent, scratch directory.
#[derive(Debug)]
pub struct TestEnv {
    pub name: String,
    pub uid: u32,
    pub dir: tempfile::TempDir,
    pub profiles: PathBuf,
    /// TMPDIR of `stockade exec`: where it creates fresh workspaces.
    pub scratch: PathBuf,
    pub cgroup_parent: String,
    /// Processes of `uid` that existed before the test (left by an earlier run): not this run's.
    pre_procs: BTreeSet<i32>,
    /// Job cgroup directories that existed before the test (left by an earlier run).
    pre_cgroups: BTreeSet<PathBuf>,
    /// State directories of daemons started in this test (their `workspaces/` must end empty).
    state_dirs: std::cell::RefCell<Vec<PathBuf>>,
}

impl TestEnv {
    pub fn new(name: &str, uid: u32) -> TestEnv {
        Self::with_profile(name, uid, ProfileOpts::default())
    }

    pub fn with_profile(name: &str, uid: u32, opts: ProfileOpts) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix(&format!("stockade-it-{name}-"))
            .tempdir()
            .expect("create the test's temp dir");
        // Jobs run as `uid` and must traverse to their workspace below this directory.
        chmod(dir.path(), 0o711);
        let profiles = dir.path().join("profiles");
        std::fs::create_dir(&profiles).unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        chmod(&scratch, 0o711);
        let cgroup_parent = format!("stockade-it-{name}");
        std::fs::write(
            profiles.join(format!("{PROFILE}.toml")),
            profile_toml(name, uid, &opts),
        )
        .unwrap();
        let pre_procs: BTreeSet<i32> = uid_procs(uid).iter().map(|p| p.pid).collect();
        if !pre_procs.is_empty() {
            eprintln!(
                "WARNING {name}: processes of uid {uid} exist before the test (left by an earlier \
                 run?), ignored: {:?}",
                uid_procs(uid)
            );
        }
        let pre_cgroups = job_cgroups_under(&cgroup_parent);
        if !pre_cgroups.is_empty() {
            eprintln!(
                "WARNING {name}: job cgroups exist before the test (left by an earlier run?), \
                 ignored: {pre_cgroups:?}"
            );
        }
        TestEnv {
            name: name.to_string(),
            uid,
            dir,
            profiles,
            scratch,
            cgroup_parent,
            pre_procs,
            pre_cgroups,
            state_dirs: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Write (or replace) profile `name` in this test's profile directory.
    pub fn write_profile(&self, name: &str, toml: &str) {
        std::fs::write(self.profiles.join(format!("{name}.toml")), toml).unwrap();
    }

    /// A fresh directory under the test dir, mode 0777 so the job's uid can write in it.
    pub fn shared_workspace(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir(&p).unwrap();
        chmod(&p, 0o777);
        p
    }

    /// `stockade exec --profiles .. --cgroup-parent .. ARGS -- ARGV`, TMPDIR = the scratch dir.
    pub fn exec_cmd(&self, args: &[&str], argv: &[&str]) -> Command {
        let mut c = Command::new(STOCKADE);
        c.arg("exec")
            .arg("--profiles")
            .arg(&self.profiles)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(args)
            .arg("--")
            .args(argv)
            .env("TMPDIR", &self.scratch)
            .env_remove("STOCKADE_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `stockade exec --profile t --json -- ARGV`, run to its end.
    pub fn exec(&self, argv: &[&str]) -> Outcome {
        Proc::spawn(self.exec_cmd(&["--profile", PROFILE, "--json"], argv)).finish()
    }

    /// `stockade exec ARGS -- ARGV`, run to its end.
    pub fn exec_args(&self, args: &[&str], argv: &[&str]) -> Outcome {
        Proc::spawn(self.exec_cmd(args, argv)).finish()
    }

    /// Every job cgroup directory under this test's parent, in every mounted hierarchy.
    pub fn job_cgroups(&self) -> BTreeSet<PathBuf> {
        job_cgroups_under(&self.cgroup_parent)
    }

    /// `/sys/fs/cgroup/<hierarchy>/<parent>` of every hierarchy (existing or not).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        cgroup_parents(&self.cgroup_parent)
    }

    /// Job cgroup directories of job `id`, if any is left.
    pub fn cgroups_of_job(&self, id: &str) -> Vec<PathBuf> {
        self.cgroup_parents()
            .into_iter()
            .map(|p| p.join(id))
            .filter(|p| p.exists())
            .collect()
    }

    /// Remember a daemon state directory: its `workspaces/` must be empty at the end.
    pub fn register_state_dir(&self, dir: PathBuf) {
        self.state_dirs.borrow_mut().push(dir);
    }

    /// Processes of this test's uid that were not there before the test.
    pub fn new_procs(&self) -> Vec<ProcInfo> {
        uid_procs(self.uid)
            .into_iter()
            .filter(|p| !self.pre_procs.contains(&p.pid))
            .collect()
    }

    /// What is left behind right now: processes of the uid (zombies included), job cgroups,
    /// workspaces in the scratch dir or a daemon's workspaces dir. Empty = nothing.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.new_procs() {
            out.push(format!("process of uid {}: {p:?}", self.uid));
        }
        for cg in self.job_cgroups() {
            if !self.pre_cgroups.contains(&cg) {
                out.push(format!("cgroup {}", cg.display()));
            }
        }
        let mut ws_dirs = vec![self.scratch.clone()];
        ws_dirs.extend(
            self.state_dirs
                .borrow()
                .iter()
                .map(|d| d.join("workspaces")),
        );
        for d in ws_dirs {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    out.push(format!("workspace {}", e.path().display()));
                }
            }
        }
        out
    }

    /// Assert (within [`SETTLE_LIMIT`]) that no process, cgroup or workspace is left.
    pub fn assert_nothing_left(&self, context: &str) {
        // A job process whose parent is PID 1 escaped stockade: orphans must be reparented to
        // stockade (a child subreaper) and reaped by it. PID 1 on some hosts never reaps them, on
        // others it does eventually, which would hide the bug from the wait below: fail at once.
        self.assert_no_orphans_of_init(context);
        let until = Instant::now() + SETTLE_LIMIT;
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= until {
                panic!(
                    "{}: {context}: left behind {SETTLE_LIMIT:?} after the job ended:\n  {}",
                    self.name,
                    left.join("\n  ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// No process of this test's uid (zombies included) has PID 1 as its parent.
    pub fn assert_no_orphans_of_init(&self, context: &str) {
        let orphans: Vec<ProcInfo> = self
            .new_procs()
            .into_iter()
            .filter(|p| p.ppid == 1)
            .collect();
        assert!(
            orphans.is_empty(),
            "{}: {context}: job processes were orphaned to PID 1 instead of being reaped by \
             stockade (zombies count): {orphans:#?}",
            self.name
        );
    }

    /// End of test: nothing left behind, then remove the (empty) cgroup parents.
    pub fn finish(self) {
        self.assert_nothing_left("end of test");
        self.remove_cgroup_parents();
        let still: Vec<_> = self
            .cgroup_parents()
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        assert!(
            still.is_empty() || !self.pre_cgroups.is_empty(),
            "{}: cgroup parents could not be removed: {still:?}",
            self.name
        );
    }

    fn remove_cgroup_parents(&self) {
        for p in self.cgroup_parents() {
            if p.exists() {
                let _ = std::fs::remove_dir(&p);
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Best effort on a failed test; `finish` asserts it on a passing one.
        self.remove_cgroup_parents();
    }
}

/// `/sys/fs/cgroup/<hierarchy>/<parent>` for every hierarchy (existing or not), plus
/// `/sys/fs/cgroup/<parent>` for a pure cgroup2 host.
pub fn cgroup_parents(parent: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![root.join(parent)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                && e.file_name() != std::ffi::OsStr::new(parent)
            {
                out.push(e.path().join(parent));
            }
        }
    }
    out
}

/// Every job cgroup directory under `parent`, in every mounted hierarchy.
pub fn job_cgroups_under(parent: &str) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for dir in cgroup_parents(parent) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.insert(e.path());
                }
            }
        }
    }
    out
}

/// The profile every test uses: its own uid/gid, short grace.
pub fn profile_toml(name: &str, uid: u32, o: &ProfileOpts) -> String {
    format!(
        r#"description = "integration test {name}"

[identity]
uid = {uid}
gid = {uid}

[limits]
wall_timeout_secs = {wall}
grace_secs = {grace}
memory_mib = {mem}
pids = {pids}
nofile = 256
fsize_mib = 64
{extra_limits}
[env]
set = {{ PATH = "/usr/local/bin:/usr/bin:/bin", LANG = "C.UTF-8" }}
allow = ["TERM"]
{extra_sections}"#,
        wall = o.wall_timeout_secs,
        grace = o.grace_secs,
        mem = o.memory_mib,
        pids = o.pids,
        extra_limits = o.extra_limits,
        extra_sections = o.extra_sections,
    )
}

/// The shipped `agent` profile (profiles/defaults/agent.toml of this repository) with only
/// `identity.uid` and `identity.gid` changed to `uid`: what operators get, under a test's own ids.
pub fn agent_profile_toml(uid: u32) -> String {
    shipped_profile_toml("agent", uid)
}

/// The shipped profile `name` (profiles/defaults/NAME.toml) with only `identity.uid` and
/// `identity.gid` changed to `uid`.
pub fn shipped_profile_toml(name: &str, uid: u32) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../profiles/defaults/{name}.toml"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut section = String::new();
    let mut replaced = Vec::new();
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with('[') {
                section = t.to_string();
            }
            let key = t.split('=').next().unwrap_or("").trim();
            if section == "[identity]" && (key == "uid" || key == "gid") && t.contains('=') {
                replaced.push(key.to_string());
                format!("{key} = {uid}")
            } else {
                line.to_string()
            }
        })
        .collect();
    replaced.sort();
    assert_eq!(
        replaced,
        ["gid", "uid"],
        "{}: expected one identity.uid and one identity.gid line",
        path.display()
    );
    out.join("\n") + "\n"
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

/// One process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    /// State letter (`Z` = zombie).
    pub state: String,
    pub name: String,
    pub uids: Vec<u32>,
    pub cmdline: String,
}

/// /proc/<pid>/status of a process, parsed; `None` if there is no such process.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        ppid: field("PPid:").parse().unwrap_or(-1),
        state: field("State:"),
        name: field("Name:"),
        uids: field("Uid:")
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect(),
        cmdline: cmdline.trim().to_string(),
    })
}

/// A named field of /proc/<pid>/status (`None` if there is no such process or field).
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

/// The session id of a process (field 6 of /proc/<pid>/stat).
pub fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Whether `pid` is a process (zombies included) with any of its uids equal to `uid`.
pub fn is_process_of_uid(pid: i32, uid: u32) -> bool {
    proc_info(pid).is_some_and(|p| p.uids.contains(&uid))
}

/// The host pid of the process of `uid` that is `ns_pid` inside its own pid namespace (jobs print
/// `$$`, which is their pid there), waiting (bounded) for it to appear. The innermost `NSpid`
/// entry is compared, so it also works for a job in the host's pid namespace. Panics unless
/// exactly one process matches: a test's uid runs one job at a time where this is used.
pub fn host_pid(uid: u32, ns_pid: i32) -> i32 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<i32> = uid_procs(uid)
            .iter()
            .map(|p| p.pid)
            .filter(|&pid| {
                status_field(pid, "NSpid:")
                    .and_then(|v| v.split_whitespace().last()?.parse::<i32>().ok())
                    == Some(ns_pid)
            })
            .collect();
        match found.as_slice() {
            [one] => return *one,
            [] if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => panic!("process {ns_pid} of uid {uid} (in its pid namespace): found {found:?}"),
        }
    }
}

/// Host pids of `ns_pids` (pids the job printed inside its own pid namespace), for a uid that runs
/// one job: waits (bounded) until every one is found, then returns them in the same order.
pub fn host_pids(uid: u32, ns_pids: &[i32]) -> Vec<i32> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let mut map = std::collections::HashMap::new();
        for p in uid_procs(uid) {
            let inner = status_field(p.pid, "NSpid:")
                .and_then(|v| v.split_whitespace().last()?.parse::<i32>().ok());
            if let Some(inner) = inner {
                map.entry(inner).or_insert_with(Vec::new).push(p.pid);
            }
        }
        let found: Vec<Option<i32>> = ns_pids
            .iter()
            .map(|n| match map.get(n).map(Vec::as_slice) {
                Some([one]) => Some(*one),
                _ => None,
            })
            .collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
        assert!(
            Instant::now() < until,
            "not all of {ns_pids:?} (uid {uid}) found exactly once: {map:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every process (zombies included) with any uid equal to `uid`.
pub fn uid_procs(uid: u32) -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_info)
        .filter(|p| p.uids.contains(&uid))
        .collect()
}

/// A spawned `stockade` (or control) process whose output is collected by threads, with stdout
/// also delivered line by line.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// How a process ended and what it wrote.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut all = String::new();
            let mut r = BufReader::new(out);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return all,
                    Ok(_) => {
                        let s = String::from_utf8_lossy(&line).into_owned();
                        all.push_str(&s);
                        let _ = tx.send(s.trim_end_matches('\n').to_string());
                    }
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        Proc {
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// End a process a test gives up on: SIGTERM first, so that a `stockade exec` or `run`
    /// cancels its job and cleans up (a SIGKILLed `exec` leaves the job's forked processes
    /// behind until crash recovery exists), then SIGKILL if it has not exited within 30 s.
    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).unwrap_or_else(|e| panic!("kill {sig}: {e}"));
    }

    /// The next stdout line starting with `prefix` (earlier lines are skipped), within `limit`.
    pub fn wait_line(&mut self, prefix: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => {
                    self.stop();
                    panic!("no stdout line starting with {prefix:?} within {limit:?} ({e})");
                }
            }
        }
    }

    /// Wait (at most [`COMMAND_LIMIT`]) for the process to end; collect its output.
    pub fn finish(self) -> Outcome {
        self.finish_within(COMMAND_LIMIT)
    }

    pub fn finish_within(mut self, limit: Duration) -> Outcome {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() >= until {
                self.stop();
                panic!("process {} did not end within {limit:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The pipes reach EOF when every holder is gone; a job process that outlived stockade
        // would keep them open, so this is bounded too.
        let join = |h: JoinHandle<String>, what: &str| {
            let until = Instant::now() + SETTLE_LIMIT;
            while !h.is_finished() {
                if Instant::now() >= until {
                    panic!("{what} of the process still open {SETTLE_LIMIT:?} after it exited: something inherited it");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            h.join().unwrap()
        };
        let stdout = join(self.stdout.take().unwrap(), "stdout");
        let stderr = join(self.stderr.take().unwrap(), "stderr");
        Outcome {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A test that panicked part-way must not leave its stockade running.
        self.stop();
    }
}

impl Outcome {
    /// Exit code; panics (with the output) if a signal ended the process.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(c) => c,
            None => panic!(
                "process was killed by signal {:?}\n{}",
                self.status.signal(),
                self.describe()
            ),
        }
    }

    /// The `--json` result record: the last line of stderr.
    pub fn record(&self) -> ResultRecord {
        let last = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("no stderr at all\n{}", self.describe()));
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "last stderr line is not a result record ({e}): {last:?}\n{}",
                self.describe()
            )
        })
    }

    /// The record as a JSON value, with the fields that differ between runs of the same job
    /// (job id, timings, memory) masked.
    pub fn masked_record(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.record()).unwrap();
        for k in ["job", "wall_ms", "cpu_ms", "peak_memory_bytes"] {
            v[k] = serde_json::Value::String("<masked>".into());
        }
        v
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    pub fn describe(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A `stockade serve` on a temporary socket, stopped (SIGTERM, then a bounded wait) on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Start a daemon for `env` and wait (bounded) until its socket accepts connections.
    pub fn start(env: &TestEnv) -> Daemon {
        Self::start_with(env, &[])
    }

    /// As [`Daemon::start`], with extra environment for the daemon process.
    pub fn start_with(env: &TestEnv, vars: &[(&str, &str)]) -> Daemon {
        let n = env.state_dirs.borrow().len();
        Self::start_in(env, &env.dir.path().join(format!("state{n}")), vars)
    }

    /// As [`Daemon::start_with`], with `--state-dir state_dir` (it need not exist yet) and the
    /// socket next to it (`<state_dir>.sock`). Jobs of a daemon whose state directory and socket
    /// are under the host's `/tmp` cannot see them at all (private `/tmp`); elsewhere they are
    /// visible, as in production, and only Landlock and DAC keep jobs out.
    pub fn start_in(env: &TestEnv, state_dir: &Path, vars: &[(&str, &str)]) -> Daemon {
        let n = env.state_dirs.borrow().len();
        let state_dir = state_dir.to_path_buf();
        let socket = state_dir.with_extension("sock");
        let log = env.dir.path().join(format!("daemon{n}.log"));
        let logfile = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(STOCKADE);
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--profiles")
            .arg(&env.profiles)
            .arg("--cgroup-parent")
            .arg(&env.cgroup_parent)
            // Clients of a test daemon may use workspaces in the test's own directories.
            .arg("--workspace-root")
            .arg(env.dir.path())
            .arg("--workspace-root")
            .arg(state_dir.parent().expect("state dir has a parent"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(logfile.try_clone().unwrap()))
            .stderr(Stdio::from(logfile));
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn stockade serve");
        env.register_state_dir(state_dir.clone());
        let mut d = Daemon {
            child: Some(child),
            socket,
            state_dir,
            log,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "stockade serve exited ({st:?}) before accepting:\n{}",
                    self.log_text()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if Instant::now() >= until {
                panic!(
                    "stockade serve did not accept on {} within 30 s:\n{}",
                    self.socket.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `stockade run --socket S ARGS -- ARGV` (not yet spawned).
    pub fn run_cmd(&self, args: &[&str], argv: &[&str]) -> Command {
        let mut c = Command::new(STOCKADE);
        c.arg("run")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .arg("--")
            .args(argv)
            .env_remove("STOCKADE_LOG")
            .stdin(Stdio::null());
        c
    }

    /// `stockade run --profile t --json -- ARGV`, run to its end.
    pub fn run(&self, argv: &[&str]) -> Outcome {
        Proc::spawn(self.run_cmd(&["--profile", PROFILE, "--json"], argv)).finish()
    }

    /// `stockade run ARGS -- ARGV`, run to its end.
    pub fn run_args(&self, args: &[&str], argv: &[&str]) -> Outcome {
        Proc::spawn(self.run_cmd(args, argv)).finish()
    }

    /// `stockade <sub> --socket S ARGS...` (ps, cancel), run to its end.
    pub fn client(&self, sub: &str, args: &[&str]) -> Outcome {
        let mut c = Command::new(STOCKADE);
        c.arg(sub)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null());
        Proc::spawn(c).finish()
    }

    /// The id of the running job whose command line contains `marker`, from `stockade ps`.
    pub fn job_id_from_ps(&self, marker: &str) -> String {
        let ps = self.client("ps", &[]);
        assert_eq!(ps.code(), 0, "stockade ps failed\n{}", ps.describe());
        let ids: Vec<&str> = ps
            .stdout
            .lines()
            .skip(1)
            .filter(|l| l.contains(marker))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "expected one job with {marker:?} in stockade ps:\n{}",
            ps.stdout
        );
        ids[0].to_string()
    }

    /// SIGTERM, then wait (bounded) for the daemon to exit; returns its status.
    pub fn stop(mut self) -> ExitStatus {
        let st = self.terminate();
        st.unwrap_or_else(|| panic!("daemon did not exit after SIGTERM:\n{}", self.log_text()))
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A shell script for `sh -c` that creates a double-forked, `setsid`, SIGTERM-ignoring process
/// tree and prints the pid of every process it creates, one `<role> <pid>` line each:
/// - `main`: the job's main process (`exec sleep`), dies on SIGTERM;
/// - `child`: `setsid` into a new session, ignores SIGTERM (`exec sleep` keeps the disposition);
/// - `grandchild`: the child's child, ignores SIGTERM;
/// - `orphan`: forked by a subshell of the child that exits at once (a true double fork), so it
///   is reparented while the job runs; ignores SIGTERM.
///
/// `marker` ends up in the first line of the command line, so `stockade ps` can find the job.
pub fn escaping_tree_script(marker: &str) -> String {
    format!(
        r#": {marker}
echo main $$
setsid sh -c '
trap "" TERM
sh -c "trap \"\" TERM; echo grandchild \$\$; exec sleep 1000" &
(sh -c "trap \"\" TERM; echo orphan \$\$; exec sleep 1000" &)
echo child $$
exec sleep 1000
' &
exec sleep 1000
"#
    )
}

pub const TREE_ROLES: [&str; 4] = ["main", "child", "grandchild", "orphan"];

/// Read the `<role> <pid>` lines of [`escaping_tree_script`] from a running job's stdout, and
/// return each role with its host pid (the job printed its pid-namespace pids).
pub fn read_tree_pids(p: &mut Proc, uid: u32) -> Vec<(String, i32)> {
    read_tree_ns_pids(p)
        .into_iter()
        .map(|(role, pid)| (role, host_pid(uid, pid)))
        .collect()
}

fn read_tree_ns_pids(p: &mut Proc) -> Vec<(String, i32)> {
    // The roles print in any order; collect until all four are seen.
    let mut seen: Vec<(String, i32)> = Vec::new();
    let until = Instant::now() + Duration::from_secs(30);
    while seen.len() < TREE_ROLES.len() {
        let left = until.saturating_duration_since(Instant::now());
        let line = match p.lines.recv_timeout(left) {
            Ok(l) => l,
            Err(e) => panic!("job did not print all its pids within 30 s ({e}); got {seen:?}"),
        };
        let mut parts = line.split_whitespace();
        if let (Some(role), Some(pid)) = (parts.next(), parts.next()) {
            if TREE_ROLES.contains(&role) && !seen.iter().any(|(r, _)| r == role) {
                seen.push((role.to_string(), pid.parse().expect("pid")));
            }
        }
    }
    seen
}

/// The cgroup2 path of a process as this (host) process sees it: the `0::` line of
/// /proc/<pid>/cgroup.
pub fn unified_cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Before canceling: every process of the tree is alive, runs as `uid`, the child left the main
/// process's session, the three survivors ignore SIGTERM, and all of them are still in one job
/// cgroup under `cgroup_parent`. So the test proves something. Returns that cgroup's path.
pub fn check_tree_is_escaping(pids: &[(String, i32)], uid: u32, cgroup_parent: &str) -> String {
    let pid = |role: &str| pids.iter().find(|(r, _)| r == role).unwrap().1;
    for (role, p) in pids {
        // `exec sleep` may still be on its way: wait (bounded) until each is the sleep.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let info = proc_info(*p).unwrap_or_else(|| panic!("{role} {p} is not running"));
            assert!(info.uids.contains(&uid), "{role} {p} runs as {info:?}");
            if info.name == "sleep" {
                break;
            }
            assert!(
                Instant::now() < until,
                "{role} {p} never became sleep: {info:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_ne!(
        session_of(pid("child")),
        session_of(pid("main")),
        "the setsid child must be in its own session"
    );
    for role in ["child", "grandchild", "orphan"] {
        let ign = status_field(pid(role), "SigIgn:").unwrap();
        let mask = u64::from_str_radix(&ign, 16).unwrap();
        assert!(
            mask & (1 << (libc::SIGTERM - 1)) != 0,
            "{role} must ignore SIGTERM (SigIgn {ign})"
        );
    }
    let cgroup = unified_cgroup_of(pid("main")).expect("main's cgroup");
    assert!(
        cgroup.starts_with(&format!("/{cgroup_parent}/")),
        "the job must be in a cgroup under /{cgroup_parent}: {cgroup}"
    );
    for (role, p) in pids {
        assert_eq!(
            unified_cgroup_of(*p).as_deref(),
            Some(cgroup.as_str()),
            "{role} must still be in the job's cgroup"
        );
    }
    cgroup
}

/// After the job ended: every pid it reported is gone, or (pid reuse) not a process of `uid`.
pub fn assert_pids_gone(pids: &[(String, i32)], uid: u32) {
    // Reparented to PID 1 = escaped stockade's reaping (see `assert_no_orphans_of_init`).
    let orphans: Vec<_> = pids
        .iter()
        .filter_map(|(r, p)| proc_info(*p).map(|i| (r, i)))
        .filter(|(_, i)| i.uids.contains(&uid) && i.ppid == 1)
        .collect();
    assert!(
        orphans.is_empty(),
        "job processes were orphaned to PID 1 instead of being reaped by stockade (zombies \
         count): {orphans:#?}"
    );
    let until = Instant::now() + SETTLE_LIMIT;
    loop {
        let left: Vec<_> = pids
            .iter()
            .filter(|(_, p)| is_process_of_uid(*p, uid))
            .map(|(r, p)| (r.clone(), proc_info(*p)))
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= until {
            panic!("job processes still exist {SETTLE_LIMIT:?} after the job ended (zombies count): {left:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file put on a fixed descriptor of the test process *without* close-on-exec, as a careless
/// caller would leak it; closed again on drop. Only for test binaries that run no other test
/// concurrently that could be disturbed by a fixed descriptor number.
pub struct LeakedFd(std::os::fd::RawFd);

impl LeakedFd {
    pub fn open(file: &Path, target: std::os::fd::RawFd) -> LeakedFd {
        use nix::fcntl::{fcntl, open, FcntlArg, FdFlag, OFlag};
        assert!(
            fcntl(target, FcntlArg::F_GETFD).is_err(),
            "fd {target} is already open in the test process; cannot run this test"
        );
        let fd = open(file, OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).unwrap();
        assert_eq!(nix::unistd::dup2(fd, target).unwrap(), target);
        nix::unistd::close(fd).unwrap();
        let flags = FdFlag::from_bits_truncate(fcntl(target, FcntlArg::F_GETFD).unwrap());
        assert!(
            !flags.contains(FdFlag::FD_CLOEXEC),
            "fd {target} must be inheritable"
        );
        LeakedFd(target)
    }
}

impl Drop for LeakedFd {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}
