//! The exec helper: a small single-threaded process (`stockade __stockade-init`) that reads a
//! [`LaunchPlan`] from its control socket, applies the confinement steps in order, and `execve`s
//! the job. The supervisor never runs any of this in its own (multi-threaded) process.
//!
//! Control socket protocol: the supervisor passes one end of a `socketpair` as the helper's stdin.
//! The helper moves it to a close-on-exec descriptor and reads one plan frame. When every step is
//! applied it writes a [`HelperMessage::Started`] frame (what it applied) and `execve`s: the
//! kernel closes the socket, and the supervisor reads EOF after `Started`. If a step (or the
//! `execve`) fails it writes [`HelperMessage::Failed`] and exits with [`SETUP_FAILED_EXIT`]. EOF
//! without a frame means the helper died: the supervisor treats that as a setup failure too.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::mount::MsFlags;
use nix::sys::signal::Signal;

use crate::error::{SetupError, Step};
use crate::landlock::LandlockPlan;
use crate::plan::{LaunchPlan, Rlimit, RlimitResource};
use crate::report::{Applied, HelperMessage, Status};
use crate::seccomp::CompiledSeccomp;
use crate::{sys, wire};

/// Hidden subcommand that turns `stockade` into the exec helper.
pub const HELPER_ARG: &str = "__stockade-init";

/// Exit status of a helper that could not set the job up.
pub const SETUP_FAILED_EXIT: i32 = 125;

/// Hostname of a job with its own UTS namespace.
pub const JOB_HOSTNAME: &str = "stockade";

/// `PATH` searched when the plan's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The system calls the steps use: a seam so the order and arguments of the steps can be tested
/// without root against a recording double.
pub trait Sys {
    /// Close every descriptor above stderr except `keep`.
    fn close_fds_except(&mut self, keep: RawFd) -> Result<(), Errno>;
    /// `setsid()`.
    fn setsid(&mut self) -> Result<(), Errno>;
    /// `prctl(PR_SET_PDEATHSIG, sig)`.
    fn set_pdeathsig(&mut self, sig: Signal) -> Result<(), Errno>;
    /// Whether the process this one must die with is still there: the supervisor (`getppid()` is
    /// `supervisor`) or, inside a pid namespace, the monitor (where `getppid()` is always 0).
    /// `Err` says who is gone.
    fn parent_alive(&mut self, supervisor: i32) -> Result<(), String>;
    /// `getpid()`.
    fn getpid(&mut self) -> i32;
    /// Write `data` to an existing file (cgroupfs).
    fn write_file(&mut self, path: &Path, data: &str) -> Result<(), Errno>;
    /// `unshare(flags)`.
    fn unshare(&mut self, flags: nix::sched::CloneFlags) -> Result<(), Errno>;
    /// `sethostname(name)`.
    fn sethostname(&mut self, name: &str) -> Result<(), Errno>;
    /// After `unshare(CLONE_NEWPID)`: fork. The calling process stays outside as the job's
    /// monitor and never returns (see [`LinuxSys`]); the child, pid 1 of the new namespace,
    /// returns and goes on with the setup.
    fn enter_pid_namespace(&mut self, plan: &LaunchPlan) -> Result<(), SetupError>;
    /// Inside the pid namespace: fork the job. The calling process stays as the namespace's init
    /// (reaps orphans, passes the job's status to the monitor) and never returns; the child
    /// (pid 2) returns and goes on to `execve`.
    fn fork_job(&mut self) -> Result<(), SetupError>;
    /// `mount(source, target, fstype, flags, data)`.
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// What `path` is, without following a final symlink.
    fn lstat_kind(&mut self, path: &Path) -> Result<Kind, Errno>;
    /// Open `path` as `O_PATH | O_NOFOLLOW | O_CLOEXEC`.
    fn open_path(&mut self, path: &Path) -> Result<RawFd, Errno>;
    /// Create an empty file (a mount point for a file bind).
    fn create_file(&mut self, path: &Path) -> Result<(), Errno>;
    /// `symlink(target, link)`.
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno>;
    /// `pivot_root(".", ".")`.
    fn pivot_root_here(&mut self) -> Result<(), Errno>;
    /// `umount2(path, MNT_DETACH)`.
    fn umount_detach(&mut self, path: &Path) -> Result<(), Errno>;
    /// `mkdir -p path` (mode 0755).
    fn mkdir_all(&mut self, path: &Path) -> Result<(), Errno>;
    /// `close(fd)`.
    fn close(&mut self, fd: RawFd);
    /// `setrlimit(resource, soft, hard)`.
    fn setrlimit(&mut self, limit: Rlimit) -> Result<(), Errno>;
    /// Drop every capability from the bounding set and clear the ambient and inheritable sets.
    fn drop_bounding_ambient_inheritable(&mut self) -> Result<(), String>;
    /// `setgroups(gids)`.
    fn setgroups(&mut self, gids: &[u32]) -> Result<(), Errno>;
    /// `setresgid(gid, gid, gid)`.
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno>;
    /// `setresuid(uid, uid, uid)`.
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno>;
    /// Clear the permitted and effective sets, then verify all five sets are empty.
    fn clear_and_verify_caps(&mut self) -> Result<(), String>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&mut self) -> Result<(), Errno>;
    /// `umask(mask)`.
    fn umask(&mut self, mask: u32);
    /// `chdir(path)`.
    fn chdir(&mut self, path: &Path) -> Result<(), Errno>;
    /// Apply Landlock rules to this process; what was enforced.
    fn landlock(&mut self, plan: &LandlockPlan) -> Result<Vec<Applied>, SetupError>;
    /// Install seccomp filters (stacked, in order).
    fn seccomp(&mut self, filters: &CompiledSeccomp) -> Result<(), SetupError>;
    /// Send a frame to the supervisor on the control socket.
    fn report(&mut self, msg: &HelperMessage) -> Result<(), Errno>;
    /// `execve(path, argv, envp)`; returns only on failure.
    fn execve(&mut self, path: &CString, argv: &[CString], envp: &[CString]) -> Errno;
}

/// Apply every confinement step of `plan` in order and exec the job. Returns only on failure.
///
/// `ctrl` is the control socket's descriptor: the only one above stderr that survives step 1, and
/// it is close-on-exec.
pub fn apply<S: Sys>(
    sys: &mut S,
    plan: &LaunchPlan,
    ctrl: RawFd,
) -> Result<Infallible, SetupError> {
    // Everything that can fail without side effects is prepared first (C strings, the PATH list),
    // so a malformed plan is refused before the process changes at all.
    let argv = c_strings(&plan.argv, "argv")?;
    let envp = c_strings(
        &plan
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        "environment",
    )?;
    let candidates = exec_candidates(plan)?;
    // The core limit is the helper's own (step 6): a plan cannot replace it.
    if plan
        .rlimits
        .iter()
        .any(|l| l.resource == RlimitResource::Core)
    {
        return Err(SetupError::other(
            Step::ReadPlan,
            "plan",
            "RLIMIT_CORE is fixed by the helper; the plan may not set it",
        ));
    }

    // 1. No inherited descriptor reaches the job, CLOEXEC or not (the caller may have leaked some).
    sys.close_fds_except(ctrl).map_err(|e| {
        SetupError::sys(
            Step::CloseFds,
            format!("close_range(3.., except {ctrl})"),
            e,
        )
    })?;
    // 2. A new session: no controlling terminal (TIOCSTI on the caller's tty is impossible), and
    //    the job cannot signal the supervisor's process group.
    sys.setsid()
        .map_err(|e| SetupError::sys(Step::NewSession, "setsid()", e))?;
    // 3. Die with the supervisor. Armed now to cover the privileged steps below; re-armed after
    //    setresuid, which clears it. The getppid check closes the race where the parent died
    //    before the prctl.
    arm_parent_death_signal(sys, plan)?;
    // 4. Join the job's cgroups while still root and before anything else runs in the job, so
    //    every process the job ever creates is accounted, limited and killable through them.
    let pid = sys.getpid().to_string();
    for procs in &plan.cgroup_procs {
        sys.write_file(procs, &pid).map_err(|e| {
            SetupError::sys(
                Step::JoinCgroup,
                format!("write \"{pid}\" to {}", procs.display()),
                e,
            )
        })?;
    }
    // 5. Namespaces, after the cgroup join so the cgroup namespace is rooted at the job's own
    //    cgroup, and while root (unshare needs CAP_SYS_ADMIN).
    let (flags, names) = plan.namespaces.flags();
    if !flags.is_empty() {
        sys.unshare(flags).map_err(|e| {
            SetupError::sys(Step::Namespaces, format!("unshare({})", names.join("|")), e)
        })?;
    }
    if plan.namespaces.uts {
        sys.sethostname(JOB_HOSTNAME).map_err(|e| {
            SetupError::sys(
                Step::Namespaces,
                format!("sethostname({JOB_HOSTNAME:?})"),
                e,
            )
        })?;
    }
    // 5a. unshare(CLONE_NEWPID) moves only children into the new pid namespace: fork. This
    //     process stays outside as the monitor (the supervisor's child: it drops every privilege
    //     and mirrors the job's exit status); the child is pid 1 inside and goes on. Before the
    //     mounts, because only a process inside the namespace can mount its /proc. fork cleared
    //     the parent-death signal: arm it again, now pointing at the monitor.
    if plan.namespaces.pid {
        sys.enter_pid_namespace(plan)?;
        arm_parent_death_signal(sys, plan)?;
    }
    // 5b. The job's root, inside the new mount namespace: propagation off, then a fresh tmpfs
    //     with only the profile's paths, the workspace, and a private /tmp and /dev/shm; pivot
    //     into it. Whatever the host has elsewhere (other workspaces, service sockets, state
    //     directories) does not exist for the job.
    if plan.namespaces.mount {
        minimal_root(sys, plan)?;
    }
    // 6. Resource limits while root (raising a hard limit needs CAP_SYS_RESOURCE). Core dumps
    //    are always off: no job memory lands on disk. RLIMIT_CORE is 1, not 0: a pipe
    //    core_pattern (systemd-coredump, apport) ignores the limit except exactly 1 ("RLIMIT_CORE
    //    is set to 1, aborting core", fs/coredump.c), and a file dump needs at least one page.
    //    seccomp (step 14) keeps the job from lowering it to 0.
    let core = Rlimit {
        resource: RlimitResource::Core,
        soft: 1,
        hard: 1,
    };
    for limit in std::iter::once(&core).chain(plan.rlimits.iter()) {
        sys.setrlimit(*limit).map_err(|e| {
            SetupError::sys(
                Step::Rlimits,
                format!(
                    "setrlimit({}, {}, {})",
                    limit.resource.name(),
                    limit.soft,
                    limit.hard
                ),
                e,
            )
        })?;
    }
    // 7. Bounding, ambient and inheritable sets go while we still hold CAP_SETPCAP; after the uid
    //    change we could no longer shrink the bounding set.
    sys.drop_bounding_ambient_inheritable().map_err(|m| {
        SetupError::other(Step::DropBoundingCaps, "prctl(PR_CAPBSET_DROP)/capset", m)
    })?;
    // 8. Identity: groups first (needs CAP_SETGID), then gid, then uid last (after it we are no
    //    longer privileged to change the others).
    sys.setgroups(&plan.supplementary_gids).map_err(|e| {
        SetupError::sys(
            Step::Identity,
            format!("setgroups({:?})", plan.supplementary_gids),
            e,
        )
    })?;
    sys.setresgid(plan.gid).map_err(|e| {
        SetupError::sys(
            Step::Identity,
            format!("setresgid({0}, {0}, {0})", plan.gid),
            e,
        )
    })?;
    sys.setresuid(plan.uid).map_err(|e| {
        SetupError::sys(
            Step::Identity,
            format!("setresuid({0}, {0}, {0})", plan.uid),
            e,
        )
    })?;
    // 9. The credential change cleared the parent-death signal: arm it again.
    arm_parent_death_signal(sys, plan)?;
    // 10. The uid change already emptied permitted and effective; clear them explicitly anyway and
    //    verify every set is empty, so a kernel or securebits surprise fails closed.
    sys.clear_and_verify_caps()
        .map_err(|m| SetupError::other(Step::DropCaps, "capset/capget", m))?;
    // 11. No execve may ever grant privileges again (setuid binaries, file capabilities).
    sys.set_no_new_privs()
        .map_err(|e| SetupError::sys(Step::NoNewPrivs, "prctl(PR_SET_NO_NEW_PRIVS, 1)", e))?;
    // 12. Enter the workspace as the job's user, so its permissions are checked as the job's.
    sys.umask(plan.umask);
    sys.chdir(&plan.cwd).map_err(|e| {
        SetupError::sys(Step::Workspace, format!("chdir({})", plan.cwd.display()), e)
    })?;
    // 13. Landlock: from here on only the listed paths, ports and own-domain signals and abstract
    //     sockets are reachable. After no_new_privs (the kernel requires it, or CAP_SYS_ADMIN which
    //     we no longer have) and after chdir (the workspace is a listed path anyway).
    let mut applied = applied(plan);
    if let Some(ll) = &plan.landlock {
        applied.extend(sys.landlock(ll)?);
    }
    // 13b. With a pid namespace, this process is its init: fork the job (pid 2) and stay to reap.
    //     Init keeps the job's uid, no capabilities, no_new_privs and Landlock domain, and ignores
    //     every signal from inside the namespace (pid 1 without handlers). Before seccomp, so the
    //     reaping loop does not depend on what an allow-list profile permits.
    //     The job then starts a session of its own inside the namespace: it leads its session
    //     and process group (kill(0, ...) reaches its own processes only), still with no
    //     controlling terminal.
    if plan.namespaces.pid {
        sys.fork_job()?;
        sys.setsid()
            .map_err(|e| SetupError::sys(Step::NewSession, "setsid() in the pid namespace", e))?;
    }
    // 14. seccomp last, so none of stockade's own setup needs to be allowed by the filter and as
    //     little as possible runs under it.
    if let Some(filters) = &plan.seccomp {
        sys.seccomp(filters)?;
        applied.push(Applied::enforced(
            "seccomp",
            format!(
                "{} filters, {} instructions, hash {}",
                filters.filters.len(),
                filters.instruction_count(),
                filters.hash
            ),
        ));
    }
    // 15. Tell the supervisor what is in force, then exec.
    sys.report(&HelperMessage::Started(applied))
        .map_err(|e| SetupError::sys(Step::Exec, "write(control socket)", e))?;
    Err(exec_first(sys, plan, &candidates, &argv, &envp))
}

/// The report of the steps above, all of which are mandatory (any failure stopped the launch).
fn applied(plan: &LaunchPlan) -> Vec<Applied> {
    let rlimits: Vec<String> = std::iter::once("RLIMIT_CORE=1".to_string())
        .chain(
            plan.rlimits
                .iter()
                .map(|l| format!("{}={}", l.resource.name(), l.hard)),
        )
        .collect();
    let mut applied = vec![
        Applied::enforced(
            "identity",
            format!(
                "uid {} gid {} groups {:?}",
                plan.uid, plan.gid, plan.supplementary_gids
            ),
        ),
        Applied::enforced(
            "capabilities",
            "bounding, ambient, inheritable, permitted, effective: empty",
        ),
        Applied::enforced("no_new_privs", "set"),
        Applied::enforced(
            "descriptors",
            "stdin /dev/null; none above stderr inherited",
        ),
        Applied::enforced("session", "new session, no controlling terminal"),
        Applied::enforced("parent_death_signal", "SIGKILL"),
        Applied::enforced(
            "cgroup.join",
            format!("{} hierarchies", plan.cgroup_procs.len()),
        ),
        Applied::enforced("rlimits", rlimits.join(" ")),
    ];
    let ns = plan.namespaces;
    for (on, name, detail) in [
        (
            ns.net,
            "namespace.net",
            "own network namespace: no interfaces up, no network",
        ),
        (ns.ipc, "namespace.ipc", "own IPC namespace"),
        (
            ns.uts,
            "namespace.uts",
            "own UTS namespace, hostname stockade",
        ),
        (
            ns.cgroup,
            "namespace.cgroup",
            "own cgroup namespace rooted at the job's cgroup",
        ),
        (
            ns.mount,
            "namespace.mount",
            "own mount namespace, nothing propagates to the host",
        ),
        (
            ns.pid,
            "namespace.pid",
            "own pid namespace: the job is pid 2 under a reaping init, sees only its own processes",
        ),
    ] {
        applied.push(if on {
            Applied::enforced(name, detail)
        } else {
            Applied {
                name: name.into(),
                status: Status::NotRequested,
                detail: "host's".into(),
            }
        });
    }
    if ns.mount {
        let writable = plan.mounts.binds.iter().filter(|b| b.writable).count();
        applied.push(Applied::enforced(
            "mount.root",
            format!(
                "own root: {} host paths ({writable} read-write), nothing else of the host",
                plan.mounts.binds.len()
            ),
        ));
        if plan.mounts.proc {
            applied.push(Applied::enforced(
                "mount.proc",
                "/proc: fresh procfs of the job's pid namespace, read-only, nosuid nodev noexec",
            ));
        }
        for t in &plan.mounts.tmpfs {
            let noexec = if t.noexec { " noexec" } else { "" };
            let owner = match t.owner {
                Some((uid, gid)) => format!(", owned by {uid}:{gid}"),
                None => String::new(),
            };
            let detail = format!(
                "{}: private tmpfs of {} bytes, nosuid nodev{noexec}{owner}",
                t.target.display(),
                t.size_bytes
            );
            applied.push(Applied::enforced("mount.tmpfs", detail));
        }
    }
    applied
}

/// Where the new root's tmpfs is mounted before `pivot_root`: only in the job's own mount
/// namespace, after every bind source is held by a descriptor (a workspace under the host's
/// `/tmp` stays reachable through it).
const NEW_ROOT: &str = "/tmp";

/// What a bind source is, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// Anything else that can be bind-mounted onto a file (regular file, device node, socket).
    File,
    /// A symlink, with its target (recreated as a symlink in the new root).
    Symlink(PathBuf),
}

enum Entry<'a> {
    Bind(&'a crate::plan::Bind, Held),
    Tmpfs(&'a crate::plan::Tmpfs),
    Proc,
}

enum Held {
    Fd(RawFd, bool),
    Link(PathBuf),
}

impl Entry<'_> {
    fn path(&self) -> &Path {
        match self {
            Entry::Bind(b, _) => &b.path,
            Entry::Tmpfs(t) => &t.target,
            Entry::Proc => Path::new("/proc"),
        }
    }
}

/// Build the job's root: a tmpfs with only the plan's binds and tmpfs mounts, then `pivot_root`
/// into it and detach the old root. Parents are mounted before children, so a workspace below
/// `/tmp` lands on the private `/tmp`, not under it.
fn minimal_root<S: Sys>(sys: &mut S, plan: &LaunchPlan) -> Result<(), SetupError> {
    let fail = |call: String, e: Errno| SetupError::sys(Step::Mounts, call, e);
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    sys.mount(None, Path::new("/"), None, private, None)
        .map_err(|e| fail("mount(/, MS_REC|MS_PRIVATE)".into(), e))?;
    // 1. Hold every bind source before anything covers it.
    let mut entries = Vec::new();
    for b in &plan.mounts.binds {
        let kind = sys
            .lstat_kind(&b.path)
            .map_err(|e| fail(format!("lstat({})", b.path.display()), e))?;
        let held = match kind {
            Kind::Symlink(target) => Held::Link(target),
            kind => {
                let fd = sys
                    .open_path(&b.path)
                    .map_err(|e| fail(format!("open({}, O_PATH)", b.path.display()), e))?;
                Held::Fd(fd, kind == Kind::Dir)
            }
        };
        entries.push(Entry::Bind(b, held));
    }
    entries.extend(plan.mounts.tmpfs.iter().map(Entry::Tmpfs));
    if plan.mounts.proc {
        entries.push(Entry::Proc);
    }
    entries.sort_by_key(|e| e.path().components().count());
    let result = populate_root(sys, &entries);
    for e in &entries {
        if let Entry::Bind(_, Held::Fd(fd, _)) = e {
            sys.close(*fd);
        }
    }
    result?;
    // 4. Enter it. pivot_root(".", ".") stacks the old root on the new one; detaching "." then
    //    drops the old root from this namespace for good.
    let new_root = Path::new(NEW_ROOT);
    sys.chdir(new_root)
        .map_err(|e| fail(format!("chdir({NEW_ROOT})"), e))?;
    sys.pivot_root_here()
        .map_err(|e| fail("pivot_root(., .)".into(), e))?;
    sys.umount_detach(Path::new("."))
        .map_err(|e| fail("umount2(., MNT_DETACH)".into(), e))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| fail("chdir(/)".into(), e))
}

fn populate_root<S: Sys>(sys: &mut S, entries: &[Entry<'_>]) -> Result<(), SetupError> {
    let fail = |call: String, e: Errno| SetupError::sys(Step::Mounts, call, e);
    // 2. The new root: a small tmpfs, root-owned 0755 (the job cannot create files at `/`).
    let (nosuid, nodev) = (MsFlags::MS_NOSUID, MsFlags::MS_NODEV);
    let root_opts = "size=1m,mode=0755";
    sys.mount(
        Some(Path::new("tmpfs")),
        Path::new(NEW_ROOT),
        Some("tmpfs"),
        nosuid | nodev,
        Some(root_opts),
    )
    .map_err(|e| fail(format!("mount(tmpfs, {NEW_ROOT}, {root_opts})"), e))?;
    // 3. Every entry at its own path below it, parents first.
    for entry in entries {
        let target =
            Path::new(NEW_ROOT).join(entry.path().strip_prefix("/").unwrap_or(entry.path()));
        if let Some(parent) = target.parent() {
            sys.mkdir_all(parent)
                .map_err(|e| fail(format!("mkdir -p {}", parent.display()), e))?;
        }
        match entry {
            Entry::Proc => {
                // This process is pid 1 of the job's namespace: the new procfs lists the job's
                // processes only. Read-only like the host /proc bind it replaces: the job's own
                // /proc files (oom_score_adj, comm, attr) cannot be written either.
                sys.mkdir_all(&target)
                    .map_err(|e| fail(format!("mkdir -p {}", target.display()), e))?;
                sys.mount(
                    Some(Path::new("proc")),
                    &target,
                    Some("proc"),
                    nosuid | nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                    None,
                )
                .map_err(|e| fail("mount(proc, /proc, ro nosuid nodev noexec)".into(), e))?;
            }
            Entry::Tmpfs(t) => {
                sys.mkdir_all(&target)
                    .map_err(|e| fail(format!("mkdir -p {}", target.display()), e))?;
                let mut flags = nosuid | nodev;
                if t.noexec {
                    flags |= MsFlags::MS_NOEXEC;
                }
                let data = match t.owner {
                    Some((uid, gid)) => {
                        format!("size={},mode=0700,uid={uid},gid={gid}", t.size_bytes)
                    }
                    None => format!("size={},mode=1777", t.size_bytes),
                };
                sys.mount(
                    Some(Path::new("tmpfs")),
                    &target,
                    Some("tmpfs"),
                    flags,
                    Some(&data),
                )
                .map_err(|e| fail(format!("mount(tmpfs, {}, {data})", t.target.display()), e))?;
            }
            Entry::Bind(_, Held::Link(to)) => {
                sys.symlink(to, &target).map_err(|e| {
                    fail(
                        format!("symlink({}, {})", to.display(), target.display()),
                        e,
                    )
                })?;
            }
            Entry::Bind(b, Held::Fd(fd, is_dir)) => {
                let made = if *is_dir {
                    sys.mkdir_all(&target)
                } else {
                    sys.create_file(&target)
                };
                made.map_err(|e| fail(format!("create mount point {}", target.display()), e))?;
                let source = PathBuf::from(format!("/proc/self/fd/{fd}"));
                let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                sys.mount(Some(&source), &target, None, bind, None)
                    .map_err(|e| {
                        fail(
                            format!("mount(--rbind {}, {})", b.path.display(), target.display()),
                            e,
                        )
                    })?;
                if !b.writable {
                    // Not MS_NODEV: read-only device nodes (/dev/urandom) must stay usable.
                    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | nosuid;
                    sys.mount(None, &target, None, ro, None).map_err(|e| {
                        fail(format!("mount(-o remount,bind,ro {})", b.path.display()), e)
                    })?;
                }
            }
        }
    }
    Ok(())
}

fn arm_parent_death_signal<S: Sys>(sys: &mut S, plan: &LaunchPlan) -> Result<(), SetupError> {
    sys.set_pdeathsig(Signal::SIGKILL).map_err(|e| {
        SetupError::sys(
            Step::ParentDeathSignal,
            "prctl(PR_SET_PDEATHSIG, SIGKILL)",
            e,
        )
    })?;
    sys.parent_alive(plan.parent_pid)
        .map_err(|m| SetupError::other(Step::ParentDeathSignal, "getppid()", m))
}

fn c_strings(items: &[String], what: &str) -> Result<Vec<CString>, SetupError> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| {
                SetupError::other(
                    Step::ReadPlan,
                    "plan",
                    format!("{what} entry {s:?} contains a NUL byte"),
                )
            })
        })
        .collect()
}

/// The paths `execve` is tried on, in order: argv[0] itself if it has a `/`, else each `PATH`
/// entry of the job's environment joined with it.
fn exec_candidates(plan: &LaunchPlan) -> Result<Vec<CString>, SetupError> {
    let Some(cmd) = plan.argv.first() else {
        return Err(SetupError::other(Step::ReadPlan, "plan", "empty command"));
    };
    if cmd.is_empty() {
        return Err(SetupError::other(
            Step::ReadPlan,
            "plan",
            "empty command name",
        ));
    }
    let paths: Vec<String> = if cmd.contains('/') {
        vec![cmd.clone()]
    } else {
        let path = plan
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
            .collect()
    };
    c_strings(&paths, "command path")
}

fn exec_first<S: Sys>(
    sys: &mut S,
    plan: &LaunchPlan,
    candidates: &[CString],
    argv: &[CString],
    envp: &[CString],
) -> SetupError {
    // Like execvpe: ENOENT/ENOTDIR move on to the next PATH entry; EACCES is remembered (a later
    // entry may still work); anything else is final.
    let mut saw_eacces = None;
    for path in candidates {
        match sys.execve(path, argv, envp) {
            Errno::ENOENT | Errno::ENOTDIR => continue,
            Errno::EACCES => {
                saw_eacces.get_or_insert_with(|| path.to_string_lossy().into_owned());
            }
            e => {
                return SetupError::sys(
                    Step::Exec,
                    format!("execve({})", path.to_string_lossy()),
                    e,
                )
            }
        }
    }
    let cmd = &plan.argv[0];
    match saw_eacces {
        Some(path) => SetupError {
            step: Step::Exec,
            syscall: format!("execve({path})"),
            errno: Errno::EACCES as i32,
            message: format!("permission denied executing {path} as uid {}", plan.uid),
        },
        None => SetupError {
            step: Step::Exec,
            syscall: format!("execve({cmd})"),
            errno: Errno::ENOENT as i32,
            message: if cmd.contains('/') {
                format!("command not found: {cmd}")
            } else {
                let path = plan
                    .env
                    .iter()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.as_str());
                format!(
                    "command not found: {cmd} (searched PATH={})",
                    path.unwrap_or(DEFAULT_PATH)
                )
            },
        },
    }
}

/// The real system calls.
#[derive(Debug)]
pub struct LinuxSys {
    /// The control socket (close-on-exec); `None` in the monitor and init, which let go of it.
    ctrl: Option<File>,
    /// Inside a pid namespace: the write end of the pipe to the monitor (close-on-exec). Init
    /// writes the job's exit status to it; its POLLERR says the monitor is gone.
    monitor: Option<std::os::fd::OwnedFd>,
    /// Inside a pid namespace, until the job is forked: the read end on which the monitor says
    /// it has dropped its privileges (close-on-exec).
    monitor_ready: Option<std::os::fd::OwnedFd>,
}

impl Sys for LinuxSys {
    fn close_fds_except(&mut self, keep: RawFd) -> Result<(), Errno> {
        if keep > 3 {
            sys::close_range(3, (keep - 1) as libc::c_uint)?;
        }
        sys::close_from(keep.max(2) + 1)
    }
    fn setsid(&mut self) -> Result<(), Errno> {
        nix::unistd::setsid().map(drop)
    }
    fn set_pdeathsig(&mut self, sig: Signal) -> Result<(), Errno> {
        nix::sys::prctl::set_pdeathsig(sig)
    }
    fn parent_alive(&mut self, supervisor: i32) -> Result<(), String> {
        match &self.monitor {
            // The monitor holds the read end of this pipe for as long as it lives: a pipe with no
            // reader polls as POLLERR.
            Some(link) => {
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                let mut fds = [PollFd::new(link.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::ZERO) {
                    Ok(_) => match fds[0].revents() {
                        Some(r) if r.contains(PollFlags::POLLERR) => {
                            Err("the pid namespace's monitor is gone".into())
                        }
                        _ => Ok(()),
                    },
                    Err(e) => Err(format!("poll(monitor pipe): {e}")),
                }
            }
            None => {
                let ppid = nix::unistd::getppid().as_raw();
                if ppid == supervisor {
                    Ok(())
                } else {
                    Err(format!(
                        "supervisor pid {supervisor} is gone (parent is now {ppid})"
                    ))
                }
            }
        }
    }
    fn getpid(&mut self) -> i32 {
        nix::unistd::getpid().as_raw()
    }
    fn write_file(&mut self, path: &Path, data: &str) -> Result<(), Errno> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_errno)?;
        f.write_all(data.as_bytes()).map_err(io_errno)
    }
    fn unshare(&mut self, flags: nix::sched::CloneFlags) -> Result<(), Errno> {
        nix::sched::unshare(flags)
    }
    fn sethostname(&mut self, name: &str) -> Result<(), Errno> {
        nix::unistd::sethostname(name)
    }
    fn enter_pid_namespace(&mut self, plan: &LaunchPlan) -> Result<(), SetupError> {
        use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
        let fail = |call: &str, e: Errno| SetupError::sys(Step::Namespaces, call, e);
        let (status_rd, status_wr) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail("pipe2(O_CLOEXEC)", e))?;
        // The monitor says on this one that it holds no privilege any more; init waits for that
        // before it forks the job.
        let (ready_rd, ready_wr) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail("pipe2(O_CLOEXEC)", e))?;
        // Blocked across the fork, so that a TERM arriving before the monitor ignores it cannot
        // kill the monitor (and, through init's parent-death signal, the job without its grace).
        let mut old = SigSet::empty();
        sigprocmask(
            SigmaskHow::SIG_BLOCK,
            Some(&monitor_ignored()),
            Some(&mut old),
        )
        .map_err(|e| fail("sigprocmask(SIG_BLOCK)", e))?;
        match sys::fork_in_helper().map_err(|e| fail("fork() into the pid namespace", e))? {
            nix::unistd::ForkResult::Child => {
                drop(status_rd);
                drop(ready_wr);
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)
                    .map_err(|e| fail("sigprocmask(SIG_SETMASK)", e))?;
                self.monitor = Some(status_wr);
                self.monitor_ready = Some(ready_rd);
                Ok(())
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(status_wr);
                drop(ready_rd);
                self.run_monitor(plan, child, status_rd, ready_wr, &old)
            }
        }
    }
    fn fork_job(&mut self) -> Result<(), SetupError> {
        // No job process exists while the monitor may still hold root: wait for its word (EOF
        // means it failed to drop its privileges and is killing init).
        if let Some(ready) = self.monitor_ready.take() {
            let mut byte = [0u8; 1];
            let got = loop {
                match nix::unistd::read(ready.as_raw_fd(), &mut byte) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            if got != Ok(1) {
                return Err(SetupError::other(
                    Step::Namespaces,
                    "read(monitor pipe)",
                    "the pid namespace's monitor did not drop its privileges",
                ));
            }
        }
        match sys::fork_in_helper()
            .map_err(|e| SetupError::sys(Step::Namespaces, "fork() of the job", e))?
        {
            // The job keeps the control socket to report `Started` (it is close-on-exec).
            nix::unistd::ForkResult::Child => Ok(()),
            nix::unistd::ForkResult::Parent { child } => {
                // The supervisor must see EOF once the job has exec'd: init lets go of it.
                self.ctrl = None;
                run_init(child, self.monitor.take())
            }
        }
    }
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, target, fstype, flags, data)
    }
    fn lstat_kind(&mut self, path: &Path) -> Result<Kind, Errno> {
        let meta = std::fs::symlink_metadata(path).map_err(io_errno)?;
        Ok(if meta.file_type().is_symlink() {
            Kind::Symlink(std::fs::read_link(path).map_err(io_errno)?)
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        })
    }
    fn open_path(&mut self, path: &Path) -> Result<RawFd, Errno> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())
    }
    fn create_file(&mut self, path: &Path) -> Result<(), Errno> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
            .map_err(io_errno)
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno> {
        std::os::unix::fs::symlink(target, link).map_err(io_errno)
    }
    fn pivot_root_here(&mut self) -> Result<(), Errno> {
        nix::unistd::pivot_root(".", ".")
    }
    fn umount_detach(&mut self, path: &Path) -> Result<(), Errno> {
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
    }
    fn mkdir_all(&mut self, path: &Path) -> Result<(), Errno> {
        use std::os::unix::fs::DirBuilderExt;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o755);
        builder.create(path).map_err(io_errno)
    }
    fn close(&mut self, fd: RawFd) {
        drop(sys::take_fd(fd));
    }
    fn setrlimit(&mut self, limit: Rlimit) -> Result<(), Errno> {
        use nix::sys::resource::Resource;
        let resource = match limit.resource {
            RlimitResource::Core => Resource::RLIMIT_CORE,
            RlimitResource::NoFile => Resource::RLIMIT_NOFILE,
            RlimitResource::FSize => Resource::RLIMIT_FSIZE,
            RlimitResource::Stack => Resource::RLIMIT_STACK,
            RlimitResource::Cpu => Resource::RLIMIT_CPU,
        };
        nix::sys::resource::setrlimit(resource, limit.soft, limit.hard)
    }
    fn drop_bounding_ambient_inheritable(&mut self) -> Result<(), String> {
        use caps::CapSet;
        // Every capability the running kernel knows (probed with PR_CAPBSET_READ), not just the
        // ones this crate was compiled with.
        for cap in caps::runtime::thread_all_supported() {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("drop {cap} from the bounding set: {e}"))?;
        }
        caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient set: {e}"))?;
        caps::clear(None, CapSet::Inheritable).map_err(|e| format!("clear inheritable set: {e}"))
    }
    fn setgroups(&mut self, gids: &[u32]) -> Result<(), Errno> {
        let gids: Vec<_> = gids
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&gids)
    }
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
        let g = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
    }
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
        let u = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
    }
    fn clear_and_verify_caps(&mut self) -> Result<(), String> {
        use caps::CapSet;
        caps::clear(None, CapSet::Effective).map_err(|e| format!("clear effective set: {e}"))?;
        caps::clear(None, CapSet::Permitted).map_err(|e| format!("clear permitted set: {e}"))?;
        for set in [
            CapSet::Effective,
            CapSet::Permitted,
            CapSet::Inheritable,
            CapSet::Ambient,
            CapSet::Bounding,
        ] {
            let held = caps::read(None, set).map_err(|e| format!("read {set:?} set: {e}"))?;
            if !held.is_empty() {
                return Err(format!("{set:?} set still holds {held:?}"));
            }
        }
        Ok(())
    }
    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        nix::sys::prctl::set_no_new_privs()
    }
    fn umask(&mut self, mask: u32) {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }
    fn landlock(&mut self, plan: &LandlockPlan) -> Result<Vec<Applied>, SetupError> {
        match crate::landlock::apply(plan) {
            Ok(report) => Ok(report.applied()),
            Err(e) => Err(SetupError {
                step: Step::Landlock,
                syscall: "landlock_create_ruleset/add_rule/restrict_self".into(),
                errno: e.errno(),
                message: e.to_string(),
            }),
        }
    }
    fn seccomp(&mut self, filters: &CompiledSeccomp) -> Result<(), SetupError> {
        crate::seccomp::install(filters).map_err(|e| SetupError {
            step: Step::Seccomp,
            syscall: "seccomp(SECCOMP_SET_MODE_FILTER)".into(),
            errno: e.errno().map_or(0, |e| e as i32),
            message: e.to_string(),
        })
    }
    fn report(&mut self, msg: &HelperMessage) -> Result<(), Errno> {
        let frame = wire::encode(msg).map_err(|_| Errno::EMSGSIZE)?;
        let ctrl = self.ctrl.as_mut().ok_or(Errno::EBADF)?;
        ctrl.write_all(&frame).map_err(io_errno)
    }
    fn execve(&mut self, path: &CString, argv: &[CString], envp: &[CString]) -> Errno {
        match nix::unistd::execve(path, argv, envp) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }
}

/// Signals the monitor ignores: what the supervisor sends the whole cgroup on cancel or deadline
/// (`SIGTERM`), and what a terminal or a stray `kill` might send. The job gets them; the
/// monitor stays until the job is gone. Only `SIGKILL` ends it early (the cgroup kill, or the
/// parent-death signal when the supervisor dies), and init's parent-death signal then takes the
/// whole namespace down.
fn monitor_ignored() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
        Signal::SIGALRM,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        set.add(sig);
    }
    set
}

/// The job's exit status as init passes it to the monitor: two bytes, `[0, code]` or
/// `[1, signal]`.
fn encode_status(status: libc::c_int) -> Option<[u8; 2]> {
    if libc::WIFEXITED(status) {
        Some([0, libc::WEXITSTATUS(status) as u8])
    } else if libc::WIFSIGNALED(status) {
        // Any signal, real-time ones included (up to 64).
        Some([1, libc::WTERMSIG(status) as u8])
    } else {
        None
    }
}

impl LinuxSys {
    /// The monitor: outside the job's pid namespace, the supervisor's child for the job's whole
    /// life. It drops every privilege (the same steps as the job), waits for init, and ends the
    /// way the job ended, so the supervisor sees the job's own status. Never returns.
    fn run_monitor(
        &mut self,
        plan: &LaunchPlan,
        init: nix::unistd::Pid,
        status: std::os::fd::OwnedFd,
        ready: std::os::fd::OwnedFd,
        old_mask: &nix::sys::signal::SigSet,
    ) -> ! {
        use nix::sys::signal::{kill, sigprocmask, SigmaskHow, Signal};
        use nix::sys::wait::waitpid;
        // Init reports setup failures itself, on the control socket: the monitor must not hold it
        // (the supervisor waits for EOF) nor write to it.
        self.ctrl = None;
        let ignored = monitor_ignored()
            .iter()
            .try_for_each(|sig| sys::set_signal_ignored(sig, true));
        let dropped = ignored
            .map_err(|e| format!("ignore signals: {e}"))
            .and_then(|()| {
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None)
                    .map_err(|e| format!("sigprocmask: {e}"))
            })
            .and_then(|()| self.drop_monitor_privileges(plan));
        if dropped.is_err() {
            // A monitor that kept root would outlive the setup; end the job instead (init has
            // not forked it: it waits on `ready`).
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
            std::process::exit(SETUP_FAILED_EXIT);
        }
        // Unprivileged now: init may fork the job. (If init is already gone, nothing to say.)
        let _ = nix::unistd::write(&ready, &[1]);
        drop(ready);
        let init_status = loop {
            match sys::waitpid_raw(init.as_raw()) {
                Ok((_, status)) => break Some(status),
                Err(Errno::EINTR) => continue,
                Err(_) => break None,
            }
        };
        // Every write end is closed by now (init exited; the job's copy went with its execve),
        // so this read returns init's report or EOF at once.
        let mut buf = [0u8; 2];
        let job = match nix::unistd::read(status.as_raw_fd(), &mut buf) {
            Ok(2) => Some(buf),
            _ => None,
        };
        // No report: init itself failed (a setup error, already reported on the control socket)
        // or was killed. Its status is the job's.
        match job.or_else(|| init_status.and_then(encode_status)) {
            Some([0, code]) => std::process::exit(i32::from(code)),
            Some([_, sig]) => die_by_signal(i32::from(sig)),
            None => std::process::exit(SETUP_FAILED_EXIT),
        }
    }

    /// The job's own privilege drop, for the monitor: bounding/ambient/inheritable, groups, gid,
    /// uid, parent-death signal (re-armed, the supervisor checked), every set empty,
    /// no_new_privs, no core file (the same 1-byte limit as the job's).
    fn drop_monitor_privileges(&mut self, plan: &LaunchPlan) -> Result<(), String> {
        self.drop_bounding_ambient_inheritable()?;
        self.setgroups(&plan.supplementary_gids)
            .map_err(|e| format!("setgroups: {e}"))?;
        self.setresgid(plan.gid)
            .map_err(|e| format!("setresgid: {e}"))?;
        self.setresuid(plan.uid)
            .map_err(|e| format!("setresuid: {e}"))?;
        self.set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
        self.parent_alive(plan.parent_pid)?;
        self.clear_and_verify_caps()?;
        self.set_no_new_privs()
            .map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
        nix::sys::prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
        self.setrlimit(Rlimit {
            resource: RlimitResource::Core,
            soft: 1,
            hard: 1,
        })
        .map_err(|e| format!("RLIMIT_CORE: {e}"))
    }
}

/// End this process by `sig`, as the job ended, so the supervisor's wait status is the job's.
fn die_by_signal(sig: i32) -> ! {
    sys::raise_with_default_action(sig);
    // Only reached for a signal whose default action does not terminate (none ends a process).
    std::process::exit(128 + sig)
}

/// Pid 1 of the job's namespace: reap every process that ends up here until the job (pid 2)
/// itself exits, pass its status to the monitor, and exit, which makes the kernel kill whatever
/// is left in the namespace. It installs no signal handler, so no signal from inside the
/// namespace reaches it (pid 1 drops signals it has no handler for). Never returns.
fn run_init(job: nix::unistd::Pid, monitor: Option<std::os::fd::OwnedFd>) -> ! {
    // Init changed its uid from root, which already made it non-dumpable where the host's
    // fs.suid_dumpable is 0; say so explicitly, whatever the host's setting: the job (same uid)
    // must never ptrace init or read its memory, even under a profile whose seccomp allows it.
    let _ = nix::sys::prctl::set_dumpable(false);
    loop {
        match sys::waitpid_raw(-1) {
            Ok((pid, status)) if pid == job.as_raw() => {
                if let (Some(link), Some(bytes)) = (&monitor, encode_status(status)) {
                    let _ = nix::unistd::write(link, &bytes);
                }
                std::process::exit(0);
            }
            // An orphan reaped (any status, real-time signals included), or interrupted.
            Ok(_) | Err(Errno::EINTR) => {}
            // ECHILD cannot happen while the job is unreaped; anything else: keep reaping.
            Err(Errno::ECHILD) => std::process::exit(SETUP_FAILED_EXIT),
            Err(_) => {}
        }
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Entry point of the helper process. Call it first thing in `main` when `argv[1]` is
/// [`HELPER_ARG`], before any thread or runtime exists. Never returns.
pub fn helper_main() -> ! {
    // Move the control socket off stdin to a close-on-exec descriptor, then give the job
    // /dev/null as stdin. If either fails there is nobody to tell but our exit status.
    let ctrl_fd = match fcntl(0, FcntlArg::F_DUPFD_CLOEXEC(3)) {
        Ok(fd) => fd,
        Err(_) => std::process::exit(SETUP_FAILED_EXIT),
    };
    let mut ctrl = File::from(sys::take_fd(ctrl_fd));
    let plan = stdin_devnull().and_then(|()| read_plan(&mut ctrl));
    let mut sys = LinuxSys {
        ctrl: Some(ctrl),
        monitor: None,
        monitor_ready: None,
    };
    let err = match plan.and_then(|plan| apply(&mut sys, &plan, ctrl_fd)) {
        Ok(never) => match never {},
        Err(err) => err,
    };
    let _ = sys.report(&HelperMessage::Failed(err));
    std::process::exit(SETUP_FAILED_EXIT)
}

/// The command that starts the exec helper from `exe` (normally `/proc/self/exe`), and the
/// supervisor's end of its control socket. The environment is cleared: nothing of the
/// supervisor's reaches the helper, let alone the job. Both socket ends are close-on-exec in the
/// supervisor, so a concurrent spawn can never inherit them; `Command` moves the child end to the
/// helper's stdin.
pub fn helper_command(exe: &Path) -> std::io::Result<(std::process::Command, UnixStream)> {
    let (parent, child) = UnixStream::pair()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(HELPER_ARG)
        .env_clear()
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(child)));
    Ok((cmd, parent))
}

fn stdin_devnull() -> Result<(), SetupError> {
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        .map_err(|e| SetupError::sys(Step::CloseFds, "open(/dev/null)", e))?;
    let null = sys::take_fd(null);
    nix::unistd::dup2(null.as_raw_fd(), 0)
        .map_err(|e| SetupError::sys(Step::CloseFds, "dup2(/dev/null, 0)", e))?;
    Ok(())
}

fn read_plan(ctrl: &mut File) -> Result<LaunchPlan, SetupError> {
    let fail = |m: String| SetupError::other(Step::ReadPlan, "read(control socket)", m);
    let mut header = [0u8; 4];
    ctrl.read_exact(&mut header)
        .map_err(|e| fail(format!("plan header: {e}")))?;
    let len = wire::check_len(header).map_err(fail)?;
    let mut body = vec![0u8; len];
    ctrl.read_exact(&mut body)
        .map_err(|e| fail(format!("plan body: {e}")))?;
    wire::decode(&body).map_err(|e| fail(format!("decode plan: {e}")))
}

#[cfg(test)]
mod tests;
