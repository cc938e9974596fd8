//! The cgroup backend: one cgroup per job, under stockade's own parent group, on cgroup v2, v1
//! or systemd's hybrid layout.
//!
//! ```text
//! Layout::detect("/proc/self/mountinfo") ─▶ CgroupManager::new(layout, "stockade")
//!     ─▶ create("job-42", &limits) ─▶ JobCgroup
//!            procs_files()   the helper writes its pid into each, in order, before exec
//!            signal_all()    SIGTERM at cancel / deadline
//!            kill_all()      cgroup.kill (v2) or freeze + SIGKILL + thaw (v1)
//!            stats()         peak memory, cpu time, OOM kills
//!            remove()
//! ```
//!
//! # Rules
//! - Directories are created and removed only under `<hierarchy>/<parent>/`. The only file written
//!   outside a job's own directory is the parent's `cgroup.subtree_control` (cgroup v2, to let the
//!   parent's children use `memory` and `pids`). Nothing above the parent is ever written: a
//!   controller not enabled above us is an error with a hint. Nothing is ever remounted.
//! - Signals go only to pids read from a job's own `cgroup.procs`, and never to pid 0 or below
//!   (cgroup2 can list a process outside our pid namespace as 0, and `kill(0, ..)` would signal our
//!   own process group).
//! - Every write error is returned with the op, path, value and errno (cgroups-rs drops some;
//!   see docs/cgroups.md).
//!
//! # Compatibility
//! | layout | job directories | limits | kill | tracking, `is_populated` |
//! |---|---|---|---|---|
//! | v2 | `<root>/<parent>/<job>` | `memory.max`, `memory.swap.max`=0, `pids.max` | `cgroup.kill` (5.14+), else `cgroup.freeze` + SIGKILL | `cgroup.procs`, `cgroup.events` |
//! | hybrid | unified dir + v1 `memory` (+ v1 `pids` when limited) | `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`, `pids.max` | unified `cgroup.kill` | unified |
//! | v1 | `freezer`, `pids`, `memory`, `cpuacct` (those mounted) | as hybrid | `freezer.state` FROZEN + SIGKILL + THAWED, repeated | `freezer`, else `pids`, else `memory` |
//!
//! # Test strategy
//! Mountinfo parsing and the v2/v1 file logic are unit-tested against a temp-dir "cgroupfs" whose
//! `mkdir` populates control files like the kernel does (the private `FsOps` is the seam). The
//! real-kernel tests (root, skipped loudly otherwise, a failure under
//! `STOCKADE_REQUIRE_PRIVILEGED=1`) run `sleep` and forking shells in real job cgroups on the
//! host's layout and also drive its v1 mounts as a pure-v1 layout and its cgroup2 mount as a
//! pure-v2 layout.

mod error;
mod fsops;
mod layout;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use error::{CgroupError, Hint};
pub use layout::Layout;

use fsops::FsOps;

/// Resource limits written when a job cgroup is created. `None` leaves the kernel default (no
/// limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`); swap is disabled
    /// for the job where the kernel accounts it.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (`pids.max`).
    pub pids: Option<u64>,
}

/// What a job used, read best effort: `None` where the file is missing or unreadable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// v2 `memory.peak`, v1 `memory.max_usage_in_bytes`.
    pub peak_memory_bytes: Option<u64>,
    /// v2 `cpu.stat` `usage_usec` × 1000, v1 `cpuacct.usage`.
    pub cpu_usage_ns: Option<u64>,
    /// v2 `memory.events` `oom_kill`, v1 `memory.oom_control` `oom_kill`.
    pub oom_kills: Option<u64>,
    /// `pids.peak` (v1 `pids` hierarchy, else cgroup2 with the pids controller; Linux 6.1+
    /// on v2, and v1 kernels that have it).
    pub pids_peak: Option<u64>,
}

/// Whether a job with a memory limit may swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// No memory limit was asked for.
    NotLimited,
    /// Swap is off for the job: v2 `memory.swap.max` = 0, or v1 `memory.memsw.limit_in_bytes` =
    /// the memory limit.
    Disabled,
    /// The kernel does not account swap for this cgroup (this file is missing): the job's
    /// memory limit holds, but pages it swaps out are not counted.
    Unavailable(PathBuf),
}

/// One hierarchy a job may live in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    /// The mount point of the hierarchy.
    mount: PathBuf,
    /// `None` for cgroup2; the co-mounted controllers for a v1 hierarchy.
    v1: Option<Vec<String>>,
}

/// Creates, finds and opens job cgroups under stockade's parent group.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    layout: Layout,
    parent: PathBuf,
    ops: FsOps,
}

impl CgroupManager {
    /// A manager for job cgroups under `parent` (a relative path such as `stockade` or
    /// `system.slice/stockade.service/jobs`) in each hierarchy of `layout`. Touches nothing.
    pub fn new(layout: Layout, parent: &str) -> Result<Self, CgroupError> {
        Self::with_ops(layout, parent, FsOps::KERNEL)
    }

    pub(crate) fn with_ops(layout: Layout, parent: &str, ops: FsOps) -> Result<Self, CgroupError> {
        let parent = validate_parent(parent)?;
        Ok(CgroupManager {
            layout,
            parent,
            ops,
        })
    }

    /// The layout this manager works on.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The parent group, relative to each hierarchy's mount (validated).
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// Every hierarchy a job of this layout may use, in the order its first process joins them.
    fn sites(&self) -> Vec<Site> {
        let v1_wanted: &[&str] = match self.layout {
            Layout::V2 { .. } => &[],
            Layout::Hybrid { .. } => &["memory", "pids"],
            Layout::V1 { .. } => &["freezer", "pids", "memory", "cpuacct"],
        };
        let mut sites = Vec::new();
        // The unified hierarchy first: once a process is in it, cgroup.kill reaches it.
        if let Some(root) = self.layout.unified() {
            sites.push(Site {
                mount: root.to_owned(),
                v1: None,
            });
        }
        for controller in v1_wanted {
            if let Some(mount) = self.layout.v1_mount(controller) {
                if !sites.iter().any(|s| s.mount == mount) {
                    sites.push(Site {
                        mount: mount.to_owned(),
                        v1: Some(self.layout.v1_controllers_at(mount)),
                    });
                }
            }
        }
        sites
    }

    /// Create the job cgroup `<parent>/<name>` in every hierarchy it needs, write the limits, and
    /// return it. Creates the parent if missing (and leaves it: it is shared by all jobs). On any
    /// failure removes every job directory it created and returns the first error; if that
    /// cleanup fails too, the error says both.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<JobCgroup, CgroupError> {
        validate_component("job name", name)?;
        // Decide everything before the first mkdir.
        let plan = self.plan(limits)?;
        let mut created = Vec::new();
        match self.create_planned(name, limits, &plan, &mut created) {
            Ok(job) => Ok(job),
            Err(error) => {
                let cleanup: Vec<CgroupError> = created
                    .iter()
                    .rev()
                    .filter_map(|dir| fsops::rmdir_tree(self.ops, dir).err())
                    .collect();
                if cleanup.is_empty() {
                    Err(error)
                } else {
                    Err(CgroupError::CleanupFailed {
                        error: Box::new(error),
                        cleanup,
                    })
                }
            }
        }
    }

    /// Which hierarchies a job with these limits uses, and which controllers it must (or, for
    /// stats, would like to) enable in the cgroup2 parent.
    fn plan(&self, limits: &Limits) -> Result<Plan, CgroupError> {
        let unified = self.layout.unified().is_some();
        let mut plan = Plan::default();
        for (controller, limited) in [
            ("memory", limits.memory_bytes.is_some()),
            ("pids", limits.pids.is_some()),
        ] {
            let in_v1 = self.layout.v1_mount(controller).is_some();
            if in_v1 {
                continue;
            }
            if limited && !unified {
                return Err(CgroupError::ControllerNotMounted {
                    controller: controller.to_owned(),
                    layout: self.layout.describe(),
                });
            }
            if limited {
                plan.v2_needed.push(controller);
            } else if controller == "memory" && unified {
                // memory.peak and memory.events for every job, where the parent can have them.
                plan.v2_wanted.push(controller);
            }
        }
        for site in self.sites() {
            let use_it = match (&self.layout, &site.v1) {
                (_, None) => true,
                (Layout::Hybrid { .. }, Some(controllers)) => {
                    controllers.iter().any(|c| c == "memory")
                        || (limits.pids.is_some() && controllers.iter().any(|c| c == "pids"))
                }
                (_, Some(_)) => true,
            };
            if use_it {
                plan.sites.push(site);
            }
        }
        let tracks = |c: &str| self.layout.v1_mount(c).is_some();
        if let Layout::V1 { .. } = self.layout {
            if !(tracks("freezer") || tracks("pids") || tracks("memory")) {
                return Err(CgroupError::ControllerNotMounted {
                    controller: "freezer, pids or memory (to track a job's processes)".to_owned(),
                    layout: self.layout.describe(),
                });
            }
        }
        Ok(plan)
    }

    fn create_planned(
        &self,
        name: &str,
        limits: &Limits,
        plan: &Plan,
        created: &mut Vec<PathBuf>,
    ) -> Result<JobCgroup, CgroupError> {
        let mut unified = None;
        let mut v1 = Vec::new();
        for site in &plan.sites {
            let parent_dir = self.ensure_parent(&site.mount)?;
            if site.v1.is_none() {
                self.enable_v2_controllers(&parent_dir, &plan.v2_needed, &plan.v2_wanted)?;
            }
            let dir = parent_dir.join(name);
            fsops::mkdir(self.ops, &dir, false)?;
            created.push(dir.clone());
            match &site.v1 {
                None => unified = Some(dir),
                Some(controllers) => v1.push(V1Dir {
                    controllers: controllers.clone(),
                    dir,
                }),
            }
        }
        let mut job = JobCgroup::new(name, unified, v1, self.ops, &self.parent)?;
        job.swap = job.write_limits(limits)?;
        Ok(job)
    }

    /// `mkdir -p <mount>/<parent>`, one component at a time (EEXIST is fine: another job may be
    /// creating it right now).
    fn ensure_parent(&self, mount: &Path) -> Result<PathBuf, CgroupError> {
        let mut dir = mount.to_owned();
        for component in self.parent.components() {
            dir.push(component);
            fsops::mkdir(self.ops, &dir, true)?;
        }
        Ok(dir)
    }

    /// Make `needed` (and those of `wanted` that are available) usable by the parent's children
    /// by writing `+controller` to the parent's own `cgroup.subtree_control`. A needed controller
    /// that the group above has not given the parent is an error: we never write above it.
    fn enable_v2_controllers(
        &self,
        parent_dir: &Path,
        needed: &[&str],
        wanted: &[&str],
    ) -> Result<(), CgroupError> {
        if needed.is_empty() && wanted.is_empty() {
            return Ok(());
        }
        let controllers_file = parent_dir.join("cgroup.controllers");
        let available = fsops::read(&controllers_file)?;
        let is_available = |c: &str| available.split_whitespace().any(|a| a == c);
        if let Some(missing) = needed.iter().find(|c| !is_available(c)) {
            return Err(CgroupError::ControllerUnavailable {
                controller: (*missing).to_owned(),
                controllers_file,
                available: available.trim().to_owned(),
                above: parent_dir.parent().unwrap_or(parent_dir).to_owned(),
            });
        }
        let subtree_file = parent_dir.join("cgroup.subtree_control");
        let enabled = fsops::read(&subtree_file)?;
        let is_enabled = |c: &str| {
            enabled
                .split_whitespace()
                .any(|e| e.trim_start_matches('+') == c)
        };
        let to_enable: Vec<String> = needed
            .iter()
            .chain(wanted.iter().filter(|c| is_available(c)))
            .filter(|c| !is_enabled(c))
            .map(|c| format!("+{c}"))
            .collect();
        if to_enable.is_empty() {
            return Ok(());
        }
        fsops::write(&subtree_file, &to_enable.join(" "))
    }

    /// Names of the job cgroups that exist under our parent in any hierarchy (for crash
    /// recovery), sorted. Names that stockade could not have created are left out.
    pub fn leftovers(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for site in self.sites() {
            for name in fsops::subdirs(&site.mount.join(&self.parent))? {
                if validate_component("job name", &name).is_ok() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Open an existing job cgroup by name (for crash recovery): every hierarchy in which
    /// `<parent>/<name>` exists.
    pub fn open(&self, name: &str) -> Result<JobCgroup, CgroupError> {
        validate_component("job name", name)?;
        let mut unified = None;
        let mut v1 = Vec::new();
        let sites = self.sites();
        for site in &sites {
            let dir = site.mount.join(&self.parent).join(name);
            if !dir.is_dir() {
                continue;
            }
            match &site.v1 {
                None => unified = Some(dir),
                Some(controllers) => v1.push(V1Dir {
                    controllers: controllers.clone(),
                    dir,
                }),
            }
        }
        JobCgroup::new(name, unified, v1, self.ops, &self.parent).map_err(|_| {
            CgroupError::NotFound {
                name: name.to_owned(),
                parent: sites
                    .first()
                    .map(|s| s.mount.join(&self.parent))
                    .unwrap_or_else(|| self.parent.clone()),
            }
        })
    }

    /// `rmdir` the parent in each hierarchy if it is empty. Errors are ignored: ENOENT (already
    /// gone), EBUSY and ENOTEMPTY (jobs still there) are the expected ones.
    pub fn remove_parent_if_empty(&self) {
        for site in self.sites() {
            let _ = (self.ops.rmdir)(&site.mount.join(&self.parent));
        }
    }
}

#[derive(Debug, Default)]
struct Plan {
    sites: Vec<Site>,
    v2_needed: Vec<&'static str>,
    v2_wanted: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct V1Dir {
    controllers: Vec<String>,
    dir: PathBuf,
}

/// One job's cgroup, in every hierarchy it uses. Dropping it leaves the directories in place
/// (call [`JobCgroup::remove`]; after a crash, [`CgroupManager::leftovers`] finds them).
#[derive(Debug)]
pub struct JobCgroup {
    name: String,
    unified: Option<PathBuf>,
    /// In join order.
    v1: Vec<V1Dir>,
    /// Where the job's processes are listed: the cgroup2 directory, else freezer, pids, memory.
    tracking: PathBuf,
    ops: FsOps,
    /// What became of swap when the memory limit was written.
    swap: Swap,
}

/// Bounds of `kill_all` on v1: freeze/kill/thaw rounds, how long to wait for FROZEN, and how long
/// to wait after a round for the killed processes to leave the group.
const KILL_ROUNDS: u32 = 20;
const FREEZE_WAIT: Duration = Duration::from_secs(1);
const EXIT_WAIT: Duration = Duration::from_millis(250);
const POLL: Duration = Duration::from_millis(2);

impl JobCgroup {
    fn new(
        name: &str,
        unified: Option<PathBuf>,
        v1: Vec<V1Dir>,
        ops: FsOps,
        parent: &Path,
    ) -> Result<Self, CgroupError> {
        let v1_dir = |c: &str| {
            v1.iter()
                .find(|d| d.controllers.iter().any(|x| x == c))
                .map(|d| d.dir.clone())
        };
        let tracking = unified
            .clone()
            .or_else(|| v1_dir("freezer"))
            .or_else(|| v1_dir("pids"))
            .or_else(|| v1_dir("memory"))
            .or_else(|| v1.first().map(|d| d.dir.clone()))
            .ok_or_else(|| CgroupError::NotFound {
                name: name.to_owned(),
                parent: parent.to_owned(),
            })?;
        Ok(JobCgroup {
            name: name.to_owned(),
            unified,
            v1,
            tracking,
            ops,
            swap: Swap::NotLimited,
        })
    }

    /// The job's name (its directory name in each hierarchy).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every `cgroup.procs` file the job's first process must write its pid into, in order: the
    /// cgroup2 directory first (from then on `cgroup.kill` reaches it), then v1 `freezer`,
    /// `pids`, `memory`, `cpuacct` as used.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The cgroup2 directory, if there is one (v2, or hybrid's unified hierarchy), for
    /// `clone3(CLONE_INTO_CGROUP)`.
    pub fn cgroup2_dir(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.unified
            .as_deref()
            .into_iter()
            .chain(self.v1.iter().map(|d| d.dir.as_path()))
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.dir.as_path())
    }

    /// The directory that holds the memory controller's files: v1 `memory` if used, else cgroup2.
    fn memory_dir(&self) -> Option<(&Path, bool)> {
        match self.v1_dir("memory") {
            Some(dir) => Some((dir, true)),
            None => self.unified.as_deref().map(|d| (d, false)),
        }
    }

    /// What became of swap when the memory limit was written (see [`Swap`]).
    pub fn swap(&self) -> &Swap {
        &self.swap
    }

    fn write_limits(&self, limits: &Limits) -> Result<Swap, CgroupError> {
        let mut swap = Swap::NotLimited;
        if let Some(bytes) = limits.memory_bytes {
            let value = bytes.to_string();
            match self.memory_dir() {
                Some((dir, true)) => {
                    fsops::write(&dir.join("memory.limit_in_bytes"), &value)?;
                    // After limit_in_bytes: the kernel requires memsw >= limit. Same value = no
                    // swap. The file exists only when the kernel accounts swap.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    swap = if fsops::exists(&memsw) {
                        fsops::write(&memsw, &value)?;
                        Swap::Disabled
                    } else {
                        Swap::Unavailable(memsw)
                    };
                }
                Some((dir, false)) => {
                    fsops::write(&dir.join("memory.max"), &value)?;
                    let file = dir.join("memory.swap.max");
                    swap = if fsops::exists(&file) {
                        fsops::write(&file, "0")?;
                        Swap::Disabled
                    } else {
                        Swap::Unavailable(file)
                    };
                }
                None => unreachable_dir(&self.tracking, "memory")?,
            }
        }
        if let Some(pids) = limits.pids {
            match self.v1_dir("pids").or(self.unified.as_deref()) {
                Some(dir) => fsops::write(&dir.join("pids.max"), &pids.to_string())?,
                None => unreachable_dir(&self.tracking, "pids")?,
            }
        }
        Ok(swap)
    }

    /// The pids of the job's processes, from the tracking hierarchy (cgroup2, else v1 freezer,
    /// pids or memory), including any child groups. Never contains 0 or negative values.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        collect_pids(&self.tracking, true, &mut pids)?;
        Ok(pids)
    }

    /// `kill(pid, sig)` for every pid listed now. ESRCH (already gone) is not an error. Returns
    /// how many were signaled. Processes forked meanwhile may be missed: use
    /// [`kill_all`](Self::kill_all) for a sure kill.
    pub fn signal_all(&self, sig: Signal) -> Result<usize, CgroupError> {
        signal_pids(&self.pids()?, sig)
    }

    /// Kill every process of the job, including ones forking concurrently.
    ///
    /// cgroup2 (v2 and hybrid): write `1` to `cgroup.kill`; the kernel SIGKILLs every member and
    /// every process forked into it meanwhile. Returns at once: poll
    /// [`is_populated`](Self::is_populated) to see them gone. Kernels before 5.14 have no
    /// `cgroup.kill`; there `cgroup.freeze` is used like the v1 freezer below.
    ///
    /// Pure v1: freeze (`freezer.state` FROZEN, waiting until it reads FROZEN), SIGKILL every
    /// pid, thaw, and repeat until no pid is listed, for a bounded number of rounds. Without a
    /// freezer hierarchy, SIGKILL rounds alone (a fork between listing and killing survives a
    /// round, the next round gets it).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Some(dir) = &self.unified {
            match fsops::write(&dir.join("cgroup.kill"), "1") {
                Ok(()) => return Ok(()),
                Err(e) if e.errno() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        let freezer = match (self.v1_dir("freezer"), &self.unified) {
            (Some(dir), _) => Freezer::V1(dir.to_owned()),
            (None, Some(dir)) if fsops::exists(&dir.join("cgroup.freeze")) => {
                Freezer::V2(dir.clone())
            }
            _ => Freezer::None,
        };
        for _round in 0..KILL_ROUNDS {
            freezer.freeze()?;
            let killed = self.pids().and_then(|pids| {
                signal_pids(&pids, Signal::SIGKILL)?;
                Ok(pids.len())
            });
            // Thaw even if listing or killing failed: never leave a job frozen.
            let thawed = freezer.thaw();
            let killed = match (killed, thawed) {
                (Ok(n), Ok(())) => n,
                (Err(e), Ok(())) | (Ok(_), Err(e)) => return Err(e),
                (Err(e), Err(t)) => {
                    return Err(CgroupError::CleanupFailed {
                        error: Box::new(e),
                        cleanup: vec![t],
                    })
                }
            };
            if killed == 0 || wait_until(EXIT_WAIT, || Ok(self.pids()?.is_empty()))? {
                return Ok(());
            }
        }
        Err(CgroupError::KillIncomplete {
            path: self.tracking.clone(),
            remaining: self.pids()?.len(),
            rounds: KILL_ROUNDS,
        })
    }

    /// Whether any process is in the job: cgroup2 `cgroup.events` `populated 1`, else any pid
    /// listed in the v1 tracking hierarchy.
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        match &self.unified {
            Some(dir) => Ok(fsops::read_key(&dir.join("cgroup.events"), "populated")? != 0),
            None => Ok(!self.pids()?.is_empty()),
        }
    }

    /// What the job used so far, best effort (see [`Stats`]). cgroup2's `cpu.stat` needs no
    /// controller, so hybrid hosts get CPU time from the unified hierarchy.
    pub fn stats(&self) -> Stats {
        let (peak, oom) = match self.memory_dir() {
            Some((dir, true)) => (
                fsops::read_u64(&dir.join("memory.max_usage_in_bytes")).ok(),
                fsops::read_key(&dir.join("memory.oom_control"), "oom_kill").ok(),
            ),
            Some((dir, false)) => (
                fsops::read_u64(&dir.join("memory.peak")).ok(),
                fsops::read_key(&dir.join("memory.events"), "oom_kill").ok(),
            ),
            None => (None, None),
        };
        let cpu = self
            .unified
            .as_deref()
            .and_then(|dir| fsops::read_key(&dir.join("cpu.stat"), "usage_usec").ok())
            .and_then(|usec| usec.checked_mul(1000))
            .or_else(|| {
                self.v1_dir("cpuacct")
                    .and_then(|dir| fsops::read_u64(&dir.join("cpuacct.usage")).ok())
            });
        let pids_peak = self
            .v1_dir("pids")
            .or(self.unified.as_deref())
            .and_then(|dir| fsops::read_u64(&dir.join("pids.peak")).ok());
        Stats {
            peak_memory_bytes: peak,
            cpu_usage_ns: cpu,
            oom_kills: oom,
            pids_peak,
        }
    }

    /// CPU time used so far by every process of the job, in nanoseconds: cgroup2 `cpu.stat`
    /// `usage_usec` (a core file, no controller needed), else v1 `cpuacct.usage`. Unlike
    /// `RLIMIT_CPU` (per process, reset by every fork), this counts the whole tree, exited
    /// processes included. An error names the file.
    pub fn cpu_usage_ns(&self) -> Result<u64, CgroupError> {
        match (&self.unified, self.v1_dir("cpuacct")) {
            (Some(dir), _) => {
                Ok(fsops::read_key(&dir.join("cpu.stat"), "usage_usec")?.saturating_mul(1000))
            }
            (None, Some(dir)) => fsops::read_u64(&dir.join("cpuacct.usage")),
            (None, None) => Err(CgroupError::ControllerNotMounted {
                controller: "cpuacct (to account CPU time)".to_owned(),
                layout: format!(
                    "no cgroup2 and no cpuacct next to {}",
                    self.tracking.display()
                ),
            }),
        }
    }

    /// `rmdir` every job directory (child groups first). EBUSY is retried a few times with short
    /// sleeps (a group stays busy for a moment after its last process exits); ENOENT is fine.
    /// Tries every directory and returns the first error.
    pub fn remove(self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs() {
            if let Err(e) = fsops::rmdir_tree(self.ops, dir) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn unreachable_dir(tracking: &Path, controller: &str) -> Result<(), CgroupError> {
    // plan() refuses a limit whose controller has no hierarchy, so this is a bug if reached.
    Err(CgroupError::ControllerNotMounted {
        controller: controller.to_owned(),
        layout: format!("no hierarchy for it next to {}", tracking.display()),
    })
}

/// Read `dir/cgroup.procs` and, recursively, those of child groups. A child group that vanishes
/// meanwhile is skipped; the job's own directory must be readable.
fn collect_pids(dir: &Path, top: bool, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let text = match fsops::read(&procs) {
        Ok(text) => text,
        Err(e) if !top && e.errno() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid: i32 = line
            .parse()
            .map_err(|_| fsops::parse_error(&procs, &text))?;
        // 0 is a process outside our pid namespace; kill(0, ..) would hit our own group.
        if pid > 0 && !out.contains(&pid) {
            out.push(pid);
        }
    }
    for child in fsops::subdirs(dir)? {
        collect_pids(&dir.join(child), false, out)?;
    }
    Ok(())
}

/// Signal each pid; ESRCH is skipped. Tries all, returns the count signaled or the first error.
fn signal_pids(pids: &[i32], sig: Signal) -> Result<usize, CgroupError> {
    let mut count = 0;
    let mut first = None;
    for &pid in pids.iter().filter(|p| **p > 0) {
        match kill(Pid::from_raw(pid), sig) {
            Ok(()) => count += 1,
            Err(Errno::ESRCH) => {}
            Err(source) => {
                first.get_or_insert(CgroupError::Signal {
                    pid,
                    signal: sig,
                    source,
                });
            }
        }
    }
    first.map_or(Ok(count), Err)
}

/// Poll `done` every few ms until it is true (returns true) or `limit` passes (returns false).
fn wait_until(
    limit: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        thread::sleep(POLL);
    }
}

/// The freezer `kill_all` uses where there is no `cgroup.kill`.
enum Freezer {
    /// v1 `freezer.state` in this directory.
    V1(PathBuf),
    /// cgroup2 `cgroup.freeze` in this directory.
    V2(PathBuf),
    None,
}

impl Freezer {
    /// Freeze and wait (bounded) until the kernel reports the group frozen. If it does not get
    /// there in time (a task stuck in uninterruptible sleep), go on: SIGKILL still lands, and
    /// the kill loop repeats.
    fn freeze(&self) -> Result<(), CgroupError> {
        match self {
            Freezer::V1(dir) => {
                let state = dir.join("freezer.state");
                fsops::write(&state, "FROZEN")?;
                wait_until(FREEZE_WAIT, || Ok(fsops::read(&state)?.trim() == "FROZEN"))?;
            }
            Freezer::V2(dir) => {
                fsops::write(&dir.join("cgroup.freeze"), "1")?;
                let events = dir.join("cgroup.events");
                wait_until(FREEZE_WAIT, || Ok(fsops::read_key(&events, "frozen")? == 1))?;
            }
            Freezer::None => {}
        }
        Ok(())
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        match self {
            Freezer::V1(dir) => fsops::write(&dir.join("freezer.state"), "THAWED"),
            Freezer::V2(dir) => fsops::write(&dir.join("cgroup.freeze"), "0"),
            Freezer::None => Ok(()),
        }
    }
}

/// A job name, or one component of the parent path: what `mkdir` in cgroupfs accepts and a
/// reader of logs can trust.
fn validate_component(what: &'static str, value: &str) -> Result<(), CgroupError> {
    let reason = if value.is_empty() {
        Some("empty")
    } else if value.len() > 255 {
        Some("longer than 255 bytes")
    } else if value == "." || value == ".." {
        Some("\".\" and \"..\" are not allowed")
    } else if value.starts_with('.') {
        Some("must not start with a dot")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        Some("only ASCII letters, digits, '-', '_', '.' and '@' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CgroupError::InvalidName {
            what,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_parent(parent: &str) -> Result<PathBuf, CgroupError> {
    let invalid = |reason| CgroupError::InvalidName {
        what: "parent",
        value: parent.to_owned(),
        reason,
    };
    if parent.is_empty() {
        return Err(invalid("empty"));
    }
    if parent.starts_with('/') {
        return Err(invalid(
            "must be relative to each hierarchy's root, e.g. \"stockade\"",
        ));
    }
    for component in parent.split('/') {
        match component {
            "" => return Err(invalid("empty path component")),
            ".." => return Err(invalid("\"..\" is not allowed")),
            _ => validate_component("parent", component).map_err(|e| match e {
                CgroupError::InvalidName { reason, .. } => invalid(reason),
                other => other,
            })?,
        }
    }
    Ok(PathBuf::from(parent))
}
