//! Crash recovery: the daemon's journal of running jobs, and what a restarted daemon does with
//! the jobs an earlier instance left behind.
//!
//! ```text
//! <state>/lock               flock(LOCK_EX) held while a daemon runs: one daemon per state dir
//! <state>/jobs/<id>.json     one record per job, written *before* its cgroup or workspace exists,
//!                            removed after both are gone (write-ahead: nothing is created unrecorded)
//! <state>/lost/<id>.json     jobs found running at start: killed, cleaned up, kept for their owners
//! <state>/workspaces/        fresh workspaces (`stockade-ws-<id>`), created only by this daemon
//! ```
//!
//! At start, before accepting connections, [`Journal::recover`] takes every record in `jobs/`,
//! kills what is left in the job's cgroup (`cgroup.kill`, or the freezer loop on v1), waits for it
//! to empty, removes the cgroup and the fresh workspace, and turns the record into a `lost` result
//! for the job's owner. Only cgroups named by our own records are touched: a job group under the
//! same parent without a record belongs to someone else (a `stockade exec`, another daemon with
//! another state dir) and is only reported.
//!
//! Job records are renamed into place but not fsynced: they protect against a crash of the
//! daemon, and the page cache outlives the daemon. A host crash ends every job and empties
//! cgroupfs anyway; the one thing it can leave is a fresh workspace whose record never reached the
//! disk, and recovery removes every `stockade-ws-*` in `workspaces/` that no live record claims
//! (the lock guarantees no other daemon uses them). Lost records are fsynced: they are written
//! once per crash and must outlive the next one.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use stockade_protocol::{Cause, LostJob, ResultRecord, RESULT_VERSION};
use stockade_sandbox::cgroup::{CgroupManager, JobCgroup};

use crate::job;

/// Layout version of a job record.
pub const RECORD_VERSION: u32 = 1;
/// Lost records kept; older ones are deleted at start.
pub const MAX_LOST: usize = 1000;
/// How long recovery waits for a killed job's cgroup to empty.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What the daemon records about a running job, before creating anything for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEntry {
    /// [`RECORD_VERSION`].
    pub version: u32,
    pub job: String,
    /// SO_PEERCRED uid of the client that submitted it.
    pub owner_uid: u32,
    pub profile: String,
    pub argv: Vec<String>,
    /// The cgroup parent group (relative, as `--cgroup-parent`); the job's group is `<parent>/<job>`
    /// in each hierarchy.
    pub cgroup_parent: String,
    /// The fresh workspace the job gets (created and removed by the daemon), if it gets one.
    pub workspace: Option<PathBuf>,
    pub started_unix_ms: u64,
    /// The daemon that ran it.
    pub daemon_pid: u32,
}

/// A daemon's journal in its state directory. Holds the state directory's lock while alive.
#[derive(Debug)]
pub struct Journal {
    jobs: PathBuf,
    lost: PathBuf,
    workspaces: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn mkdir_0700(dir: &Path) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create {}", dir.display())),
    }
}

/// Write `bytes` to `dir/name` atomically: a temp file in the same directory, renamed over.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let ctx = |what: &str, p: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| ctx("create", &tmp, e))?;
        f.write_all(bytes).map_err(|e| ctx("write", &tmp, e))?;
        if durable {
            f.sync_all().map_err(|e| ctx("fsync", &tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| ctx("rename to", &path, e))?;
        if durable {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ctx("fsync", dir, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(std::io::Error::new(
            e.kind(),
            format!("remove {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}

/// `<name>.json` files of a directory (temp files `.<name>.json.tmp` are not listed), sorted.
fn json_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let e = e.with_context(|| format!("list {}", dir.display()))?;
        if let Some(name) = e.file_name().to_str() {
            if !name.starts_with('.') && name.ends_with(".json") {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Journal {
    /// Lock the state directory (refusing one a live daemon holds) and create `jobs/` and
    /// `lost/` (mode 0700). `state_dir` and its `workspaces/` must exist.
    pub fn open(state_dir: &Path) -> anyhow::Result<Journal> {
        let lock_path = state_dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                anyhow::anyhow!(
                    "state directory {} is in use: flock({}) failed: {e}; another stockade serve \
                     runs with this --state-dir",
                    state_dir.display(),
                    lock_path.display()
                )
            })?;
        let jobs = state_dir.join("jobs");
        let lost = state_dir.join("lost");
        mkdir_0700(&jobs)?;
        mkdir_0700(&lost)?;
        Ok(Journal {
            jobs,
            lost,
            workspaces: state_dir.join("workspaces"),
            _lock: lock,
        })
    }

    /// Record a job before anything is created for it.
    pub fn begin(&self, entry: &JobEntry) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        write_atomic(&self.jobs, &format!("{}.json", entry.job), &bytes, false)
    }

    /// Forget a job whose cgroup and workspace are gone.
    pub fn end(&self, job: &str) -> std::io::Result<()> {
        remove_if_exists(&self.jobs.join(format!("{job}.json")))
    }

    /// Lost jobs recorded so far, oldest first (at most [`MAX_LOST`]; older records are deleted).
    pub fn load_lost(&self) -> anyhow::Result<Vec<LostJob>> {
        let mut lost = Vec::new();
        for name in json_files(&self.lost)? {
            let path = self.lost.join(&name);
            let parsed = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<LostJob>(&b).map_err(Into::into));
            match parsed {
                Ok(l) => lost.push(l),
                Err(e) => tracing::error!(
                    "lost-job record {} unreadable, ignored: {e}",
                    path.display()
                ),
            }
        }
        lost.sort_by_key(|l| (l.recovered_unix_ms, l.started_unix_ms));
        if lost.len() > MAX_LOST {
            for old in lost.drain(..lost.len() - MAX_LOST) {
                let path = self.lost.join(format!("{}.json", old.record.job));
                if let Err(e) = remove_if_exists(&path) {
                    tracing::warn!("prune lost-job record: {e}");
                }
            }
        }
        Ok(lost)
    }

    /// Clean up after every job an earlier daemon left running (see the module doc). Returns the
    /// jobs it recorded as lost now. Errors that stop one job's cleanup are logged and leave its
    /// record in `jobs/`, so the next start tries again; it is still reported lost.
    pub fn recover(&self, cgroups: &CgroupManager) -> anyhow::Result<Vec<LostJob>> {
        // Temp files of a record that was never renamed into place: nothing was created for them.
        for e in std::fs::read_dir(&self.jobs)
            .with_context(|| format!("list {}", self.jobs.display()))?
            .flatten()
        {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                remove_if_exists(&e.path())?;
            }
        }
        let mut found = Vec::new();
        for name in json_files(&self.jobs)? {
            let path = self.jobs.join(&name);
            let id = name.trim_end_matches(".json").to_string();
            let entry = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice::<JobEntry>(&b).map_err(Into::into));
            match entry {
                Ok(e) if e.job == id && e.version == RECORD_VERSION => found.push((id, Some(e))),
                Ok(e) => {
                    tracing::error!(record = %path.display(), "job record names job {} (version {}); recovering {id} by its file name", e.job, e.version);
                    found.push((id, None));
                }
                Err(err) => {
                    tracing::error!(record = %path.display(), "job record unreadable ({err}); recovering {id} by its file name");
                    found.push((id, None));
                }
            }
        }

        // Kill every job first, then wait: the kernel tears them down in parallel.
        let recovered_at = now_unix_ms();
        let mut killing = Vec::new();
        for (id, entry) in found {
            let parent = entry
                .as_ref()
                .map(|e| e.cgroup_parent.clone())
                .unwrap_or_else(|| cgroups.parent().display().to_string());
            let cgroup =
                CgroupManager::new(cgroups.layout().clone(), &parent).and_then(|m| {
                    match m.open(&id) {
                        Ok(cg) => Ok(Some(cg)),
                        Err(stockade_sandbox::cgroup::CgroupError::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                });
            let mut problems = Vec::new();
            let (cgroup, left) = match cgroup {
                Ok(Some(cg)) => {
                    let left = cg.pids().map(|p| p.len()).unwrap_or(0);
                    if let Err(e) = cg.kill_all() {
                        problems.push(format!("kill: {e}"));
                    }
                    (Some(cg), left)
                }
                Ok(None) => (None, 0),
                Err(e) => {
                    problems.push(format!("open cgroup {parent}/{id}: {e}"));
                    (None, 0)
                }
            };
            killing.push((id, entry, cgroup, left, problems));
        }

        // One deadline for all: a stuck job must not multiply the start-up delay.
        let until = Instant::now() + KILL_WAIT;
        let mut lost = Vec::new();
        for (id, entry, cgroup, left, mut problems) in killing {
            let mut stats = Default::default();
            if let Some(cg) = cgroup {
                if !wait_empty(&cg, until) {
                    problems.push(format!(
                        "processes still in the cgroup {KILL_WAIT:?} after SIGKILL"
                    ));
                } else {
                    stats = cg.stats();
                    if let Err(e) = cg.remove() {
                        problems.push(format!("remove cgroup: {e}"));
                    }
                }
            }
            let ws = job::fresh_workspace_path(&self.workspaces, &id);
            if let Some(recorded) = entry.as_ref().and_then(|e| e.workspace.as_ref()) {
                if *recorded != ws {
                    // Not a path this daemon creates: never remove what is not ours.
                    problems.push(format!(
                        "recorded workspace {} is not {}; left alone",
                        recorded.display(),
                        ws.display()
                    ));
                }
            }
            if problems.is_empty() {
                match std::fs::remove_dir_all(&ws) {
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        problems.push(format!("remove workspace {}: {e}", ws.display()))
                    }
                    _ => {}
                }
            }
            let job = self.lost_job(&id, entry.as_ref(), left, &stats, &problems, recovered_at);
            let bytes = serde_json::to_vec(&job)?;
            write_atomic(&self.lost, &format!("{id}.json"), &bytes, true)?;
            if problems.is_empty() {
                self.end(&id)?;
                tracing::warn!(job = %id, owner = ?job.owner_uid, processes_killed = left, "recovered a job lost in a daemon crash");
            } else {
                tracing::error!(job = %id, "incomplete recovery, retried at the next start: {}", problems.join("; "));
            }
            lost.push(job);
        }

        self.sweep_workspaces()?;
        // Job groups under our parent that no record of ours names: not ours to touch.
        match cgroups.leftovers() {
            Ok(names) if !names.is_empty() => tracing::warn!(
                groups = ?names,
                parent = %cgroups.parent().display(),
                "job cgroups under our parent that this daemon did not record: left alone (a \
                 stockade exec or another daemon may own them)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("list job cgroups: {e}"),
        }
        Ok(lost)
    }

    /// Remove fresh workspaces that no job record claims (left by a host crash; see module doc).
    fn sweep_workspaces(&self) -> anyhow::Result<()> {
        let claimed: BTreeSet<PathBuf> = json_files(&self.jobs)?
            .iter()
            .map(|n| job::fresh_workspace_path(&self.workspaces, n.trim_end_matches(".json")))
            .collect();
        let entries = match std::fs::read_dir(&self.workspaces) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("list {}", self.workspaces.display())),
        };
        for e in entries.flatten() {
            let path = e.path();
            let ours = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(job::FRESH_WORKSPACE_PREFIX));
            if ours && !claimed.contains(&path) {
                tracing::warn!(workspace = %path.display(), "removing a workspace no job record claims");
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("remove {}", path.display()))?;
            }
        }
        Ok(())
    }

    fn lost_job(
        &self,
        id: &str,
        entry: Option<&JobEntry>,
        left: usize,
        stats: &stockade_sandbox::cgroup::Stats,
        problems: &[String],
        recovered_at: u64,
    ) -> LostJob {
        let daemon = entry.map_or("an earlier daemon".to_string(), |e| {
            format!("the daemon (pid {})", e.daemon_pid)
        });
        let mut detail = format!(
            "{daemon} died while the job ran; at restart {left} of its processes were left in its \
             cgroup and were killed"
        );
        if problems.is_empty() {
            detail.push_str("; its cgroup and workspace were removed");
        } else {
            detail.push_str(&format!("; cleanup incomplete: {}", problems.join("; ")));
        }
        let started = entry.map_or(0, |e| e.started_unix_ms);
        let cause = Cause::Lost { detail };
        LostJob {
            owner_uid: entry.map(|e| e.owner_uid),
            argv: entry.map(|e| e.argv.clone()).unwrap_or_default(),
            started_unix_ms: started,
            recovered_unix_ms: recovered_at,
            record: ResultRecord {
                version: RESULT_VERSION,
                job: id.to_string(),
                profile: entry.map_or(String::new(), |e| e.profile.clone()),
                exit_code: cause.exit_code(),
                cause,
                wall_ms: if started > 0 {
                    recovered_at.saturating_sub(started)
                } else {
                    0
                },
                cpu_ms: stats.cpu_usage_ns.map(|ns| ns / 1_000_000),
                peak_memory_bytes: stats.peak_memory_bytes,
                uid: None,
                gid: None,
                enforcement: Vec::new(),
                pids_peak: stats.pids_peak,
                // The daemon that streamed the output died with it: what reached the client is
                // not known here.
                output_bytes: 0,
                output_truncated: false,
                // The journal names the profile, not the policy it had then.
                profile_hash: String::new(),
            },
        }
    }
}

/// Poll until the cgroup is empty, up to `until`.
fn wait_empty(cg: &JobCgroup, until: Instant) -> bool {
    loop {
        match cg.is_populated() {
            Ok(false) => return true,
            Ok(true) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
            Ok(true) => return false,
            Err(e) => {
                tracing::error!("read cgroup state: {e}");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(job: &str) -> JobEntry {
        JobEntry {
            version: RECORD_VERSION,
            job: job.into(),
            owner_uid: 1000,
            profile: "agent".into(),
            argv: vec!["sleep".into(), "9".into()],
            cgroup_parent: "stockade-unit".into(),
            workspace: None,
            started_unix_ms: 5,
            daemon_pid: 42,
        }
    }

    fn state() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("workspaces")).unwrap();
        dir
    }

    #[test]
    fn one_daemon_per_state_dir() {
        let dir = state();
        let first = Journal::open(dir.path()).unwrap();
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is in use") && err.contains("lock"), "{err}");
        drop(first);
        Journal::open(dir.path()).unwrap();
    }

    #[test]
    fn begin_and_end_leave_no_file_behind() {
        let dir = state();
        let j = Journal::open(dir.path()).unwrap();
        j.begin(&entry("j-1")).unwrap();
        let text = std::fs::read(dir.path().join("jobs/j-1.json")).unwrap();
        assert_eq!(
            serde_json::from_slice::<JobEntry>(&text).unwrap(),
            entry("j-1")
        );
        assert_eq!(json_files(&dir.path().join("jobs")).unwrap(), ["j-1.json"]);
        j.end("j-1").unwrap();
        j.end("j-1").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("jobs")).unwrap().count(),
            0
        );
    }

    #[test]
    fn lost_records_are_pruned_to_the_newest() {
        let dir = state();
        let j = Journal::open(dir.path()).unwrap();
        for i in 0..MAX_LOST + 3 {
            let mut l = j.lost_job(
                &format!("j-{i:05}"),
                Some(&entry("x")),
                0,
                &Default::default(),
                &[],
                i as u64,
            );
            l.record.job = format!("j-{i:05}");
            write_atomic(
                &j.lost,
                &format!("j-{i:05}.json"),
                &serde_json::to_vec(&l).unwrap(),
                false,
            )
            .unwrap();
        }
        let lost = j.load_lost().unwrap();
        assert_eq!(lost.len(), MAX_LOST);
        assert_eq!(lost[0].record.job, "j-00003");
        assert!(!dir.path().join("lost/j-00000.json").exists());
        assert!(matches!(lost[0].record.cause, Cause::Lost { .. }));
        assert_eq!(lost[0].record.exit_code, 125);
    }
}
