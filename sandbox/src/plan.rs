//! The launch plan: everything the exec helper needs, fully resolved by the supervisor.
//!
//! The helper does no policy work: it parses nothing but this plan, looks nothing up but the
//! command in the plan's `PATH`, and applies the steps in [`crate::helper`] in order.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::landlock::LandlockPlan;
use crate::seccomp::CompiledSeccomp;

/// A fully resolved description of one job launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// Job identifier, for error messages only.
    pub job_id: String,
    /// Command and arguments. `argv[0]` is searched in the plan's `PATH` unless it contains `/`.
    pub argv: Vec<String>,
    /// The job's complete environment; nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory (the workspace), entered after the identity change.
    pub cwd: PathBuf,
    /// Unprivileged uid the job runs as (never 0).
    pub uid: u32,
    /// Unprivileged gid the job runs as (never 0).
    pub gid: u32,
    /// Supplementary groups (usually empty).
    pub supplementary_gids: Vec<u32>,
    /// File mode creation mask.
    pub umask: u32,
    /// Resource limits, applied while still root (soft and hard).
    pub rlimits: Vec<Rlimit>,
    /// `cgroup.procs` files the helper writes its own pid into, in order.
    pub cgroup_procs: Vec<PathBuf>,
    /// Pid of the supervisor; if the helper's parent is no longer this pid, it gives up.
    pub parent_pid: i32,
    /// Namespaces the job gets of its own.
    pub namespaces: Namespaces,
    /// Private mounts (only with `namespaces.mount`).
    pub mounts: Mounts,
    /// Landlock rules, applied after `no_new_privs`; `None`: not requested.
    pub landlock: Option<LandlockPlan>,
    /// Compiled seccomp filters, installed last before `execve`; `None`: not requested.
    pub seccomp: Option<CompiledSeccomp>,
}

/// The job's root file system, built in its own mount namespace: a fresh tmpfs holding only
/// these bind mounts and tmpfs mounts, each at its host path. Nothing else of the host exists
/// in the job's view.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mounts {
    /// Host paths made visible at the same path (directories, files or symlinks).
    pub binds: Vec<Bind>,
    /// Size-limited tmpfs mounts (`nosuid`, `nodev`, mode 1777), e.g. `/tmp`, `/dev/shm`.
    pub tmpfs: Vec<Tmpfs>,
    /// A fresh procfs at `/proc` (`nosuid`, `nodev`, `noexec`) for the job's own pid namespace:
    /// it lists the job's processes only. Mounted by the namespace's init, so it needs
    /// [`Namespaces::pid`]; without it the profile's `/proc` bind (the host's) is used.
    pub proc: bool,
}

/// One host path in the job's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// Host path, absolute; visible at the same path. A symlink is recreated as a symlink.
    pub path: PathBuf,
    /// Read-write (otherwise remounted read-only).
    pub writable: bool,
}

/// One private tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Where (must exist on the host).
    pub target: PathBuf,
    /// Size limit in bytes: a job that fills it gets ENOSPC, the host's memory is not exhausted.
    pub size_bytes: u64,
    /// Also `noexec`.
    pub noexec: bool,
    /// `Some((uid, gid))`: the tmpfs root belongs to them, mode 0700 (a job's fresh workspace
    /// with a byte budget); `None`: root-owned, mode 1777 (`/tmp`, `/dev/shm`).
    pub owner: Option<(u32, u32)>,
}

/// Namespaces a job gets of its own (each `false` shares the host's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Namespaces {
    /// Own network namespace: no interface but a loopback that is down; no network at all.
    pub net: bool,
    /// Own IPC namespace: no System V IPC objects or POSIX message queues of the host.
    pub ipc: bool,
    /// Own UTS namespace, hostname `stockade`.
    pub uts: bool,
    /// Own cgroup namespace rooted at the job's cgroup: `/proc/self/cgroup` reveals nothing of the host.
    pub cgroup: bool,
    /// Own mount namespace (private `/tmp`, `/dev/shm`; nothing propagates to the host).
    pub mount: bool,
    /// Own pid namespace: the job sees and signals only its own processes. The helper forks a
    /// small init (pid 1 inside) that reaps orphans, and the job runs as pid 2; when the job
    /// exits, the kernel kills whatever else is left in the namespace.
    pub pid: bool,
}

impl Namespaces {
    /// The `CLONE_NEW*` flags and names of the namespaces asked for.
    pub fn flags(&self) -> (nix::sched::CloneFlags, Vec<&'static str>) {
        use nix::sched::CloneFlags;
        let mut flags = CloneFlags::empty();
        let mut names = Vec::new();
        for (on, flag, name) in [
            (self.net, CloneFlags::CLONE_NEWNET, "net"),
            (self.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
            (self.uts, CloneFlags::CLONE_NEWUTS, "uts"),
            (self.cgroup, CloneFlags::CLONE_NEWCGROUP, "cgroup"),
            (self.mount, CloneFlags::CLONE_NEWNS, "mount"),
            (self.pid, CloneFlags::CLONE_NEWPID, "pid"),
        ] {
            if on {
                flags |= flag;
                names.push(name);
            }
        }
        (flags, names)
    }

    /// The namespaces asked for that the running kernel does not have (no `/proc/self/ns/<name>`).
    pub fn missing_in_kernel(&self) -> Vec<&'static str> {
        self.missing_under(Path::new("/proc/self/ns"))
    }

    /// [`Namespaces::missing_in_kernel`] against another `ns` directory (for tests).
    pub fn missing_under(&self, ns_dir: &Path) -> Vec<&'static str> {
        let (_, names) = self.flags();
        names
            .into_iter()
            .filter(|name| {
                // The mount namespace's entry is called `mnt`.
                let entry = if *name == "mount" { "mnt" } else { name };
                !ns_dir.join(entry).exists()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespaces_are_named_by_their_profile_key() {
        let dir = tempfile::tempdir().unwrap();
        for entry in ["mnt", "net", "uts"] {
            std::fs::write(dir.path().join(entry), "").unwrap();
        }
        let all = Namespaces {
            net: true,
            ipc: true,
            uts: true,
            cgroup: true,
            mount: true,
            pid: true,
        };
        assert_eq!(all.missing_under(dir.path()), ["ipc", "cgroup", "pid"]);
        let some = Namespaces {
            net: true,
            mount: true,
            ..Namespaces::default()
        };
        assert!(some.missing_under(dir.path()).is_empty());
        // This kernel has them all (the tests run on Linux 5.6+).
        assert!(all.missing_in_kernel().is_empty());
    }
}

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Which limit.
    pub resource: RlimitResource,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit (the job can lower, never raise it).
    pub hard: u64,
}

/// Resource limits a plan may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RlimitResource {
    /// Core file size (always 0 in stockade: no job memory lands on disk).
    Core,
    /// Open files.
    NoFile,
    /// Largest file the job may write, in bytes.
    FSize,
    /// Stack size in bytes.
    Stack,
    /// CPU seconds of one process (the cgroup accounts the whole job).
    Cpu,
}

impl RlimitResource {
    /// The name used in errors and docs.
    pub fn name(self) -> &'static str {
        match self {
            RlimitResource::Core => "RLIMIT_CORE",
            RlimitResource::NoFile => "RLIMIT_NOFILE",
            RlimitResource::FSize => "RLIMIT_FSIZE",
            RlimitResource::Stack => "RLIMIT_STACK",
            RlimitResource::Cpu => "RLIMIT_CPU",
        }
    }
}
