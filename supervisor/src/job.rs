//! One job's life: workspace, cgroup, exec helper, output, deadline, teardown, result record.
//!
//! This is the code path below the socket that `stockade serve` and `stockade exec` share.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helper_proc::{Attach, AttachMode, HelperChild};
use nix::sys::signal::Signal;
use stockade_profiles::{Overrides, Profile, ProfileSet, Requirement};
use stockade_protocol::{
    Cause, Enforcement, JobRequest, Mechanism, ResultRecord, Stream, RESULT_VERSION,
};
use stockade_sandbox::cgroup::{CgroupManager, JobCgroup, Limits, Swap};
use stockade_sandbox::landlock::{FsAccess, FsRule, LandlockPlan};
use stockade_sandbox::{
    wire, Applied, Bind, HelperMessage, LaunchPlan, Mounts, Rlimit, RlimitResource, Status, Tmpfs,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::limits::{JobLimits, OutputMeter};

/// Size of one output chunk read from a job's pipe.
const CHUNK: usize = 64 * 1024;
/// How long teardown waits for the cgroup to empty after SIGKILL before reporting a leak.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long output readers may take to reach EOF once every job process is gone (a slow
/// client can hold a reader on its last chunk); then they are abandoned.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Everything that does not change from job to job.
#[derive(Debug)]
pub struct Launcher {
    /// The binary re-executed as the exec helper (normally `/proc/self/exe`).
    pub helper_exe: PathBuf,
    /// Creates per-job cgroups under stockade's parent group.
    pub cgroups: CgroupManager,
    /// Where fresh workspaces are created when a request names none.
    pub scratch_root: PathBuf,
    /// Directories below which a request may name its workspace; `None`: anywhere (`exec`, the
    /// operator's own command line).
    pub workspace_roots: Option<Vec<PathBuf>>,
    /// How the exec helper enters the job's cgroup.
    pub attach: AttachMode,
}

/// A chunk of output from a running job.
#[derive(Debug)]
pub struct Output {
    /// Which stream.
    pub stream: Stream,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What the caller holds to cancel a running job.
pub type CancelSender = watch::Sender<bool>;

/// The `setup_failed` cause for an I/O error of the supervisor's own setup work.
fn setup_failed(step: &str, syscall: impl Into<String>, err: &std::io::Error) -> Cause {
    Cause::SetupFailed {
        step: step.into(),
        syscall: syscall.into(),
        errno: err.raw_os_error().unwrap_or(0),
        message: err.to_string(),
    }
}

/// Create a fresh job id: `j-` and 12 random hex digits.
pub fn new_job_id() -> String {
    let mut bytes = [0u8; 6];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        // Fall back to time and pid: unique enough on one host, and never silently constant.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        bytes.copy_from_slice(&(nanos ^ (u64::from(std::process::id()) << 32)).to_le_bytes()[..6]);
    }
    format!(
        "j-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A record for a job refused before anything was set up.
pub fn rejected(job: &str, profile: &str, reason: String) -> ResultRecord {
    record(
        job,
        profile,
        Cause::Rejected { reason },
        Duration::ZERO,
        Ran::default(),
    )
}

/// A record for a job the supervisor could not start because its own work before setup failed.
pub fn failed_before_start(
    job: &str,
    profile: &str,
    step: &str,
    syscall: &str,
    err: &std::io::Error,
) -> ResultRecord {
    let cause = setup_failed(step, syscall, err);
    record(job, profile, cause, Duration::ZERO, Ran::default())
}

fn record(job: &str, profile: &str, cause: Cause, wall: Duration, ran: Ran) -> ResultRecord {
    ResultRecord {
        version: RESULT_VERSION,
        job: job.to_string(),
        profile: profile.to_string(),
        exit_code: cause.exit_code(),
        cause,
        wall_ms: wall.as_millis() as u64,
        cpu_ms: ran.cpu_ns.map(|ns| ns / 1_000_000),
        peak_memory_bytes: ran.peak_memory,
        uid: ran.ids.map(|(u, _)| u),
        gid: ran.ids.map(|(_, g)| g),
        enforcement: ran.enforcement,
        pids_peak: ran.pids_peak,
        output_bytes: ran.output_bytes,
        output_truncated: ran.output_truncated,
        profile_hash: String::new(),
    }
}

/// The record of a job whose profile is known: with the profile's hash.
fn hashed(rec: ResultRecord, profile: &Profile) -> ResultRecord {
    ResultRecord {
        profile_hash: profile.hash.clone(),
        ..rec
    }
}

/// What is known about a job beyond its cause.
#[derive(Debug, Default)]
struct Ran {
    /// (uid, gid) if the job's command started.
    ids: Option<(u32, u32)>,
    cpu_ns: Option<u64>,
    peak_memory: Option<u64>,
    pids_peak: Option<u64>,
    output_bytes: u64,
    output_truncated: bool,
    enforcement: Vec<Mechanism>,
}

/// Validate a request against the profile set: the profile, the narrowing, the workspace.
/// Nothing is created. On refusal returns the reason for a `rejected` record.
pub fn check_request(
    profiles: &ProfileSet,
    req: &JobRequest,
    roots: Option<&[PathBuf]>,
) -> Result<(Profile, stockade_profiles::Resolved, Option<PathBuf>), String> {
    let profile = profiles
        .get(&req.profile)
        .ok_or_else(|| profiles.unknown(&req.profile).0)?;
    if req.argv.is_empty() {
        return Err("no command given".into());
    }
    let resolved = profile
        .resolve(&Overrides {
            timeout: req.timeout_ms.map(Duration::from_millis),
            env: req.env.clone(),
            cpu_limit: req.cpu_limit_ms.map(Duration::from_millis),
            idle_timeout: req.idle_timeout_ms.map(Duration::from_millis),
            output_limit_bytes: req.output_limit_bytes,
        })
        .map_err(|r| r.0)?;
    // Namespaces have no best-effort mode: one the kernel lacks refuses the job.
    if let Some(name) = profile.namespaces.missing_in_kernel().first() {
        return Err(format!(
            "profile {}: namespaces.{name} is on, but this kernel has no {name} namespace \
             (/proc/self/ns missing its entry); hint: set namespaces.{name} = false in the profile",
            profile.name
        ));
    }
    let workspace = match &req.workspace {
        None => None,
        Some(ws) => Some(check_workspace(ws, roots)?),
    };
    if let (Some(ws), Some(budget)) = (&workspace, profile.workspace_bytes) {
        if profile.limits_requirement == Requirement::Required {
            return Err(format!(
                "workspace {} refused: profile {}'s limits.workspace_mib = {} applies to fresh \
                 workspaces only (a tmpfs of that size); omit --workspace, or set \
                 mechanisms.limits = \"best_effort\" to run without the budget",
                ws.display(),
                profile.name,
                budget >> 20
            ));
        }
    }
    Ok((profile.clone(), resolved, workspace))
}

/// A requested workspace: an existing directory, and (for clients of the daemon) strictly below
/// one of the operator's workspace roots once every symlink is resolved. The job gets read-write
/// Landlock access to it, so this is what keeps a request from widening its profile.
pub(crate) fn check_workspace(ws: &str, roots: Option<&[PathBuf]>) -> Result<PathBuf, String> {
    let path = Path::new(ws);
    if !path.is_absolute() {
        return Err(format!("workspace {ws} is not an absolute path"));
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("workspace {ws}: {e}"))?;
    match std::fs::metadata(&real) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("workspace {ws} is not a directory")),
        Err(e) => return Err(format!("workspace {ws}: {e}")),
    }
    let Some(roots) = roots else {
        return Ok(real);
    };
    if roots.iter().any(|r| real.starts_with(r) && real != *r) {
        return Ok(real);
    }
    let shown = if real == path {
        String::new()
    } else {
        format!(" (resolves to {})", real.display())
    };
    Err(if roots.is_empty() {
        format!(
            "workspace {ws}{shown} refused: this daemon has no --workspace-root, so clients may \
             not choose workspaces (omit --workspace for a fresh one)"
        )
    } else {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        format!(
            "workspace {ws}{shown} is not below a workspace root of this daemon ({})",
            roots.join(", ")
        )
    })
}

/// Validate the daemon's `--workspace-root` directories: existing, absolute, resolved, not `/`.
pub fn workspace_roots(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    dirs.iter()
        .map(|d| {
            let real = std::fs::canonicalize(d)
                .map_err(|e| format!("--workspace-root {}: {e}", d.display()))?;
            if !real.is_dir() {
                return Err(format!(
                    "--workspace-root {} is not a directory",
                    d.display()
                ));
            }
            if real == Path::new("/") {
                return Err(format!(
                    "--workspace-root {} would let clients give jobs read-write access to the \
                     whole file system",
                    d.display()
                ));
            }
            Ok(real)
        })
        .collect()
}

/// Run one job to its end and return its result record. Output chunks go to `output` (if the
/// receiver is gone they are drained and dropped); `cancel` set to true ends the job.
pub async fn run(
    launcher: Arc<Launcher>,
    job_id: String,
    profiles: &ProfileSet,
    req: JobRequest,
    output: mpsc::Sender<Output>,
    mut cancel: watch::Receiver<bool>,
) -> ResultRecord {
    let roots = launcher.workspace_roots.as_deref();
    let (profile, resolved, requested) = match check_request(profiles, &req, roots) {
        Ok(x) => x,
        Err(reason) => return rejected(&job_id, &req.profile, reason),
    };
    // Secrets are read now, before anything is created: a bad secret file refuses the job.
    let secrets = match crate::secrets::read(&profile) {
        Ok(s) => s,
        Err(reason) => return hashed(rejected(&job_id, &req.profile, reason), &profile),
    };
    let output = crate::secrets::redacting(output, &secrets);
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + resolved.wall_timeout);

    // Workspace: the request's, or a fresh one we create, own, and remove afterwards.
    let fresh = requested.is_none();
    let workspace = match requested {
        Some(ws) => ws,
        None => match fresh_workspace(&launcher.scratch_root, &job_id, &profile) {
            Ok(ws) => ws,
            Err(f) => {
                let rec = record(&job_id, &profile.name, f, started.elapsed(), Ran::default());
                return hashed(rec, &profile);
            }
        },
    };

    let limits = Limits {
        memory_bytes: profile.memory_bytes,
        pids: profile.pids,
    };
    let cgroup = match launcher.cgroups.create(&job_id, &limits) {
        Ok(cg) => cg,
        Err(e) => {
            let cause = Cause::SetupFailed {
                step: "create-cgroup".into(),
                syscall: "mkdir/write cgroupfs".into(),
                errno: e.errno().unwrap_or(0),
                message: e.to_string(),
            };
            cleanup_workspace(fresh, &workspace).await;
            let rec = record(
                &job_id,
                &profile.name,
                cause,
                started.elapsed(),
                Ran::default(),
            );
            return hashed(rec, &profile);
        }
    };

    let mut env = resolved.env.clone();
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), workspace.display().to_string()));
    }
    let budget = if fresh { profile.workspace_bytes } else { None };
    // Load-time validation keeps secret variables out of env.set and env.allow.
    env.extend(secrets.iter().map(|s| (s.env.clone(), s.value.clone())));
    let mounts = private_mounts(&profile, &workspace, budget);
    let landlock = landlock_rules(&profile, &workspace, &mounts);
    let plan = LaunchPlan {
        job_id: job_id.clone(),
        argv: req.argv.clone(),
        env,
        cwd: workspace.clone(),
        uid: profile.uid,
        gid: profile.gid,
        supplementary_gids: vec![],
        umask: 0o022,
        rlimits: rlimits(&profile),
        cgroup_procs: cgroup.procs_files(),
        parent_pid: std::process::id() as i32,
        namespaces: profile.namespaces,
        mounts,
        landlock,
        seccomp: profile.seccomp.clone(),
    };

    let job_limits = JobLimits {
        cpu: resolved.cpu_limit,
        idle: resolved.idle_timeout,
        output_bytes: resolved.output_limit_bytes,
    };
    let meter = Arc::new(OutputMeter::new(job_limits.output_bytes));
    let (cause, applied) = supervise(
        &launcher,
        &plan,
        &cgroup,
        Watch {
            output,
            cancel: &mut cancel,
            deadline,
            grace: profile.grace,
            limits: job_limits,
            meter: meter.clone(),
        },
    )
    .await;
    let wall = started.elapsed();
    let stats = cgroup.stats();
    let cause = match cause {
        // The kernel OOM-killed a process of the job and the job did not succeed: that is why it
        // ended, whichever process the killer chose.
        Cause::Exited { code } if code != 0 && stats.oom_kills.unwrap_or(0) > 0 => Cause::OomKilled,
        Cause::Signaled { signal }
            if signal == Signal::SIGKILL as i32 && stats.oom_kills.unwrap_or(0) > 0 =>
        {
            Cause::OomKilled
        }
        c => c,
    };
    // `applied` is empty unless the helper reported every step done: then the command ran.
    let ran = Ran {
        ids: (!applied.is_empty()).then_some((profile.uid, profile.gid)),
        cpu_ns: stats.cpu_usage_ns,
        peak_memory: stats.peak_memory_bytes,
        pids_peak: stats.pids_peak,
        output_bytes: meter.delivered(),
        output_truncated: meter.truncated(),
        enforcement: enforcement(
            applied,
            &launcher,
            &limits,
            Extra {
                profile: &profile,
                swap: cgroup.swap(),
                job: &job_limits,
                workspace: if fresh {
                    Budget::Fresh(budget)
                } else {
                    Budget::Named
                },
            },
        ),
    };
    let rec = hashed(record(&job_id, &profile.name, cause, wall, ran), &profile);

    let name = job_id.clone();
    let removed = tokio::task::spawn_blocking(move || cgroup.remove()).await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(job = %name, "cgroup left behind: {e}"),
        Err(e) => tracing::error!(job = %name, "cgroup removal task failed: {e}"),
    }
    cleanup_workspace(fresh, &workspace).await;
    rec
}

/// The workspace's byte budget, for the enforcement report.
enum Budget {
    /// A fresh workspace: its tmpfs size, if the profile sets one.
    Fresh(Option<u64>),
    /// A workspace the request named: no budget can be applied to it.
    Named,
}

/// What the enforcement report needs beyond the helper's report.
struct Extra<'a> {
    profile: &'a Profile,
    swap: &'a Swap,
    job: &'a JobLimits,
    workspace: Budget,
}

/// The helper's report plus what the supervisor itself enforces (cgroup limits, CPU, idle and
/// output limits, the workspace budget, teardown), and the profile's notes about limits this
/// host cannot fully enforce (`mechanisms.limits = "best_effort"`).
fn enforcement(
    applied: Vec<Applied>,
    launcher: &Launcher,
    limits: &Limits,
    extra: Extra<'_>,
) -> Vec<Mechanism> {
    if applied.is_empty() {
        return Vec::new();
    }
    let layout = launcher.cgroups.layout().describe();
    let limit = |name: &str, value: Option<u64>, unit: &str| match value {
        Some(v) => Mechanism {
            name: name.into(),
            status: Enforcement::Enforced,
            detail: format!("{v}{unit}"),
        },
        None => Mechanism {
            name: name.into(),
            status: Enforcement::NotRequested,
            detail: "no limit".into(),
        },
    };
    let mut out: Vec<Mechanism> = applied
        .into_iter()
        .map(|a| Mechanism {
            name: a.name,
            status: match a.status {
                Status::Enforced => Enforcement::Enforced,
                Status::Partial => Enforcement::Partial,
                Status::NotEnforced => Enforcement::NotEnforced,
                Status::NotRequested => Enforcement::NotRequested,
            },
            detail: a.detail,
        })
        .collect();
    let mut memory = limit("cgroup.memory", limits.memory_bytes, " bytes, no swap");
    if let Swap::Unavailable(file) = extra.swap {
        memory.status = Enforcement::Partial;
        memory.detail = format!(
            "{} bytes; swap not limited: {} is missing (this kernel does not account swap)",
            limits.memory_bytes.unwrap_or_default(),
            file.display()
        );
    }
    out.push(memory);
    out.push(limit("cgroup.pids", limits.pids, " processes"));
    // Where JobCgroup::cpu_usage_ns reads from on this layout.
    let cpu_source = match launcher.cgroups.layout() {
        stockade_sandbox::cgroup::Layout::V1 { .. } => "cpuacct.usage",
        _ => "cgroup2 cpu.stat",
    };
    out.extend(crate::limits::mechanisms(extra.job, cpu_source));
    out.push(match extra.workspace {
        Budget::Fresh(Some(bytes)) => Mechanism {
            name: "workspace.budget".into(),
            status: Enforcement::Enforced,
            detail: format!("fresh workspace is a tmpfs of {bytes} bytes (ENOSPC beyond)"),
        },
        Budget::Named if extra.profile.workspace_bytes.is_some() => Mechanism {
            name: "workspace.budget".into(),
            status: Enforcement::NotEnforced,
            detail: "a named workspace gets no byte budget (fresh workspaces only)".into(),
        },
        _ => Mechanism {
            name: "workspace.budget".into(),
            status: Enforcement::NotRequested,
            detail: "no limit".into(),
        },
    });
    // What the host could not enforce replaces the plain line of that mechanism.
    for note in &extra.profile.host_notes {
        let line = Mechanism {
            name: note.mechanism.clone(),
            status: match note.status {
                Status::Partial => Enforcement::Partial,
                _ => Enforcement::NotEnforced,
            },
            detail: note.detail.clone(),
        };
        match out.iter_mut().find(|m| m.name == note.mechanism) {
            Some(m) => *m = line,
            None => out.push(line),
        }
    }
    out.push(Mechanism {
        name: "cgroup.teardown".into(),
        status: Enforcement::Enforced,
        detail: format!("whole cgroup killed at the end; {layout}"),
    });
    out
}

/// The job's root: the profile's paths (read-only unless `read_write`), the workspace
/// (read-write), the `/dev/fd`-style symlinks, and a private `/tmp` and `/dev/shm` (if the host
/// has one) with the profile's sizes.
///
/// With a byte `budget` (fresh workspaces only), the workspace is not bound from the host: it is
/// a tmpfs of that size owned by the job, in the job's own mount namespace. A job that fills it
/// gets ENOSPC; nothing it writes reaches the host's disk, and the mount vanishes with the
/// job's last process. (tmpfs pages are charged to the job's memory cgroup.)
fn private_mounts(profile: &Profile, workspace: &Path, budget: Option<u64>) -> Mounts {
    if !profile.namespaces.mount {
        return Mounts::default();
    }
    let mut binds: Vec<Bind> = profile
        .fs
        .iter()
        .map(|r| Bind {
            path: r.path.clone(),
            writable: r.access == FsAccess::ReadWrite,
        })
        .collect();
    let has_proc = binds.iter().any(|b| b.path == Path::new("/proc"));
    // With its own pid namespace the job gets a fresh procfs (its own processes only) in place
    // of the host's.
    let proc = has_proc && profile.namespaces.pid;
    if proc {
        binds.retain(|b| b.path != Path::new("/proc"));
    }
    if has_proc {
        for link in ["/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"] {
            if Path::new(link).is_symlink() {
                binds.push(Bind {
                    path: link.into(),
                    writable: false,
                });
            }
        }
    }
    let mut tmpfs = vec![Tmpfs {
        target: "/tmp".into(),
        size_bytes: profile.tmp_bytes,
        noexec: false,
        owner: None,
    }];
    match budget {
        None => binds.push(Bind {
            path: workspace.to_path_buf(),
            writable: true,
        }),
        Some(bytes) => tmpfs.push(Tmpfs {
            target: workspace.to_path_buf(),
            size_bytes: bytes,
            noexec: false,
            owner: Some((profile.uid, profile.gid)),
        }),
    }
    if Path::new("/dev/shm").is_dir() {
        tmpfs.push(Tmpfs {
            target: "/dev/shm".into(),
            size_bytes: profile.shm_bytes,
            noexec: true,
            owner: None,
        });
    }
    Mounts { binds, tmpfs, proc }
}

/// The profile's Landlock rules plus this job's own: its workspace and its private tmpfs mounts,
/// read-write. (The host's `/tmp` is never listed: without a private one, the job has no `/tmp`.)
fn landlock_rules(profile: &Profile, workspace: &Path, mounts: &Mounts) -> Option<LandlockPlan> {
    let mut plan = profile.landlock.clone()?;
    let rw = |path: &Path| FsRule {
        path: path.to_path_buf(),
        access: FsAccess::ReadWrite,
    };
    plan.fs.push(rw(workspace));
    plan.fs.extend(
        mounts
            .tmpfs
            .iter()
            .filter(|t| t.target != workspace)
            .map(|t| rw(&t.target)),
    );
    Some(plan)
}

fn rlimits(profile: &Profile) -> Vec<Rlimit> {
    let mut out = Vec::new();
    if let Some(n) = profile.nofile {
        out.push(Rlimit {
            resource: RlimitResource::NoFile,
            soft: n,
            hard: n,
        });
    }
    if let Some(b) = profile.fsize_bytes {
        out.push(Rlimit {
            resource: RlimitResource::FSize,
            soft: b,
            hard: b,
        });
    }
    out
}

/// File name prefix of the fresh workspaces stockade creates (and only those).
pub const FRESH_WORKSPACE_PREFIX: &str = "stockade-ws-";

/// Name of a job's fresh workspace in the scratch directory.
pub fn fresh_workspace_name(job_id: &str) -> String {
    format!("{FRESH_WORKSPACE_PREFIX}{job_id}")
}

/// Where job `job_id` gets its fresh workspace under `root` (crash recovery removes it by this).
pub fn fresh_workspace_path(root: &Path, job_id: &str) -> PathBuf {
    root.join(fresh_workspace_name(job_id))
}

fn fresh_workspace(root: &Path, job_id: &str, profile: &Profile) -> Result<PathBuf, Cause> {
    use std::os::unix::fs::DirBuilderExt;
    let path = fresh_workspace_path(root, job_id);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|e| {
            setup_failed(
                "prepare-workspace",
                format!("mkdir({})", path.display()),
                &e,
            )
        })?;
    // We created this directory a moment ago, so handing it to the job's uid is ours to do.
    if let Err(e) = std::os::unix::fs::chown(&path, Some(profile.uid), Some(profile.gid)) {
        let _ = std::fs::remove_dir(&path);
        return Err(setup_failed(
            "prepare-workspace",
            format!(
                "chown({}, {}, {})",
                path.display(),
                profile.uid,
                profile.gid
            ),
            &e,
        ));
    }
    Ok(path)
}

async fn cleanup_workspace(fresh: bool, path: &Path) {
    if !fresh {
        return;
    }
    let p = path.to_path_buf();
    // remove_dir_all does not follow symlinks the job planted; every job process is gone by now.
    let res = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&p)).await;
    if let Ok(Err(e)) = res {
        tracing::error!("workspace {} left behind: {e}", path.display());
    }
}

/// How the job's main process ended, or why stockade ended it.
enum End {
    Exited(ExitStatus),
    Deadline,
    Canceled,
    /// The job broke a limit the supervisor watches (CPU time, idle, output).
    Limit(Cause),
}

/// What ends a running job besides its own exit, and where its output goes.
struct Watch<'a> {
    output: mpsc::Sender<Output>,
    cancel: &'a mut watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    grace: Duration,
    limits: JobLimits,
    meter: Arc<OutputMeter>,
}

/// Spawn the helper, hand it the plan, and watch the job until every process of it is gone.
async fn supervise(
    launcher: &Launcher,
    plan: &LaunchPlan,
    cgroup: &JobCgroup,
    w: Watch<'_>,
) -> (Cause, Vec<Applied>) {
    let Watch {
        output,
        cancel,
        deadline,
        grace,
        limits,
        meter,
    } = w;
    // Started in its cgroup2 group where the kernel can (no cgroup.procs write, no RCU grace
    // period); the helper then joins only the v1 hierarchies itself.
    let spawned = HelperChild::spawn(&launcher.helper_exe, cgroup.cgroup2_dir(), launcher.attach);
    let (mut child, ctrl) = match spawned {
        Ok(x) => x,
        Err(e) => {
            let exe = launcher.helper_exe.display();
            return (
                setup_failed("spawn-helper", format!("spawn({exe})"), &e),
                vec![],
            );
        }
    };
    let plan = &match &child.attach {
        Attach::CloneIntoCgroup(dir) => {
            let mut p = plan.clone();
            p.cgroup_procs.retain(|f| !f.starts_with(dir));
            p
        }
        Attach::ProcsWrite(_) => plan.clone(),
    };
    // Until it has been waited for, the orphan reaper must leave this pid to tokio. The helper
    // cannot exit before it has read the plan, which is written only after this line.
    let _owned = crate::reaper::Owned::new(child.id());
    let readers = [
        tokio::spawn(pump(
            child.stdout.take(),
            Stream::Stdout,
            output.clone(),
            meter.clone(),
        )),
        tokio::spawn(pump(
            child.stderr.take(),
            Stream::Stderr,
            output,
            meter.clone(),
        )),
    ];
    let attach = child.attach.clone();

    // Hand over the plan and learn whether the job was set up: a `Started` frame then EOF means
    // the helper's execve succeeded (the kernel closed its close-on-exec control socket).
    let setup = async {
        let mut ctrl = tokio::net::UnixStream::from_std({
            ctrl.set_nonblocking(true)?;
            ctrl
        })?;
        let frame = wire::encode(plan).map_err(std::io::Error::other)?;
        ctrl.write_all(&frame).await?;
        let mut reply = Vec::new();
        // At most two frames (Started, then Failed if the execve itself failed).
        (&mut ctrl)
            .take(2 * (wire::MAX_CONTROL_FRAME + 4) as u64)
            .read_to_end(&mut reply)
            .await?;
        Ok::<_, std::io::Error>(reply)
    };
    let setup_outcome = tokio::select! {
        r = setup => Some(r),
        _ = tokio::time::sleep_until(deadline) => None,
        _ = wait_cancel(cancel) => None,
    };
    let started = match setup_outcome {
        Some(Ok(reply)) => helper_reply(&reply),
        Some(Err(e)) => Err(setup_failed("read-plan", "write/read control socket", &e)),
        None if *cancel.borrow() => Err(Cause::Canceled),
        None => Err(Cause::WallTimeout),
    };
    let applied = match started {
        Ok(mut applied) => {
            applied.push(attach_report(&attach));
            applied
        }
        Err(cause) => {
            // The job never ran. Whatever the helper did, end it and report why.
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = cgroup.kill_all();
            wait_empty(cgroup, KILL_WAIT).await;
            drain(readers).await;
            return (cause, vec![]);
        }
    };

    // The idle clock starts when the command does.
    meter.touch();
    let end = tokio::select! {
        cause = crate::limits::watch(&plan.job_id, || cgroup.cpu_usage_ns(), limits, &meter) => {
            End::Limit(cause)
        }
        status = child.wait() => match status {
            Ok(s) => End::Exited(s),
            Err(e) => {
                tracing::error!(job = %plan.job_id, "wait for job failed: {e}");
                End::Canceled
            }
        },
        _ = tokio::time::sleep_until(deadline) => End::Deadline,
        _ = wait_cancel(cancel) => End::Canceled,
    };

    let cause = match end {
        End::Exited(status) => {
            // The main process is done: nothing of the job outlives it.
            if let Err(e) = cgroup.kill_all() {
                tracing::error!(job = %plan.job_id, "kill the rest of the job: {e}");
            }
            status_cause(status)
        }
        End::Deadline | End::Canceled | End::Limit(_) => {
            terminate(cgroup, grace, &plan.job_id).await;
            let _ = child.start_kill();
            let _ = child.wait().await;
            match end {
                End::Deadline => Cause::WallTimeout,
                End::Limit(cause) => cause,
                _ => Cause::Canceled,
            }
        }
    };
    if !wait_empty(cgroup, KILL_WAIT).await {
        tracing::error!(job = %plan.job_id, "job processes still alive {KILL_WAIT:?} after SIGKILL");
    }
    drain(readers).await;
    (cause, applied)
}

/// How the helper got into the job's cgroup.
fn attach_report(attach: &Attach) -> Applied {
    match attach {
        Attach::CloneIntoCgroup(dir) => Applied {
            name: "cgroup.attach".into(),
            status: Status::Enforced,
            detail: format!(
                "clone3(CLONE_INTO_CGROUP) into the job's group under {} (no migration); v1 \
                 hierarchies, if any, joined by the helper",
                dir.parent().unwrap_or(dir).display()
            ),
        },
        Attach::ProcsWrite(why) => Applied {
            name: "cgroup.attach".into(),
            status: Status::Enforced,
            detail: format!("cgroup.procs write by the helper ({why})"),
        },
    }
}

/// SIGTERM to every process of the job, up to `grace` for them to go, then SIGKILL the cgroup.
async fn terminate(cgroup: &JobCgroup, grace: Duration, job: &str) {
    if let Err(e) = cgroup.signal_all(Signal::SIGTERM) {
        tracing::warn!(job, "SIGTERM to the job's cgroup: {e}");
    }
    if !wait_empty(cgroup, grace).await {
        if let Err(e) = cgroup.kill_all() {
            tracing::error!(job, "SIGKILL of the job's cgroup: {e}");
        }
    }
}

/// Poll until the cgroup has no process left, up to `limit`. Returns whether it emptied.
async fn wait_empty(cgroup: &JobCgroup, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    let mut pause = Duration::from_micros(200);
    loop {
        match cgroup.is_populated() {
            Ok(false) => return true,
            Ok(true) => {}
            Err(e) => {
                tracing::error!("read cgroup state: {e}");
                return false;
            }
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(pause).await;
        // Capped low: the overshoot past the moment the group empties is teardown latency
        // (scripts/bench measures cancel against the kernel floor); a read of cgroup.events
        // every 2 ms while a job is being torn down costs next to nothing.
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

async fn wait_cancel(cancel: &mut watch::Receiver<bool>) {
    // A dropped sender is not a cancellation: then nobody can cancel, so wait forever.
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn status_cause(status: ExitStatus) -> Cause {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Cause::Exited { code },
        (None, Some(signal)) => Cause::Signaled { signal },
        (None, None) => Cause::Exited { code: 255 },
    }
}

/// Interpret everything the helper wrote on its control socket before EOF: the last frame
/// decides. `Started` means the command is running; anything else means it never ran.
fn helper_reply(reply: &[u8]) -> Result<Vec<Applied>, Cause> {
    let unreadable = |m: String| Cause::SetupFailed {
        step: "read-plan".into(),
        syscall: "read(control socket)".into(),
        errno: 0,
        message: format!("unreadable reply from the exec helper: {m}"),
    };
    let mut rest = reply;
    let mut last = None;
    while !rest.is_empty() {
        let header: [u8; 4] = rest
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| unreadable("truncated header".into()))?;
        let len = wire::check_len(header).map_err(unreadable)?;
        let body = rest
            .get(4..4 + len)
            .ok_or_else(|| unreadable("truncated frame".into()))?;
        last = Some(wire::decode::<HelperMessage>(body).map_err(unreadable)?);
        rest = &rest[4 + len..];
    }
    match last {
        Some(HelperMessage::Started(applied)) => Ok(applied),
        Some(HelperMessage::Failed(e)) => Err(Cause::SetupFailed {
            step: e.step.name().into(),
            syscall: e.syscall,
            errno: e.errno,
            message: e.message,
        }),
        None => Err(unreadable("the helper exited without a report".into())),
    }
}

/// Copy a pipe to the output channel in chunks until EOF, within the job's output budget
/// (`meter`); beyond it, read and discard, so the job never blocks on a full pipe while it is
/// being ended. Returns the bytes read.
async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    stream: Stream,
    tx: mpsc::Sender<Output>,
    meter: Arc<OutputMeter>,
) -> u64 {
    let Some(mut pipe) = pipe else { return 0 };
    let mut total = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let mut receiver_alive = true;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => {
                total += n as u64;
                let n = meter.admit(n);
                if receiver_alive && n > 0 {
                    // A slow receiver slows the job (its pipe fills): output is never buffered
                    // without bound. A gone receiver: keep draining so the job never blocks.
                    receiver_alive = tx
                        .send(Output {
                            stream,
                            data: buf[..n].to_vec(),
                        })
                        .await
                        .is_ok();
                }
            }
        }
    }
}

/// Wait for both output readers, together at most [`DRAIN_WAIT`]; then abort what is left (a
/// reader blocked on a slow client, or a pipe some process still holds) so teardown always ends.
async fn drain(readers: [tokio::task::JoinHandle<u64>; 2]) {
    let until = tokio::time::Instant::now() + DRAIN_WAIT;
    for mut r in readers {
        if tokio::time::timeout_at(until, &mut r).await.is_err() {
            tracing::warn!(
                "output reader still busy {DRAIN_WAIT:?} after the job ended; abandoned"
            );
            r.abort();
        }
    }
}

#[cfg(test)]
mod narrow_tests;

#[cfg(test)]
mod tests {
    use super::{check_workspace, workspace_roots};

    #[test]
    fn a_workspace_must_resolve_strictly_below_a_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let inside = root.join("ws");
        let outside = tmp.path().join("elsewhere");
        for d in [&inside, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let roots = workspace_roots(std::slice::from_ref(&root)).unwrap();
        let real = |p: &std::path::Path| std::fs::canonicalize(p).unwrap();

        assert_eq!(
            check_workspace(inside.to_str().unwrap(), Some(&roots)).unwrap(),
            real(&inside)
        );
        // The root itself, a symlink out of it, `..` out of it, and anything elsewhere: refused.
        for ws in [
            root.clone(),
            root.join("link"),
            root.join("ws/../../elsewhere"),
            outside.clone(),
            "/".into(),
        ] {
            let err = check_workspace(ws.to_str().unwrap(), Some(&roots)).unwrap_err();
            assert!(
                err.contains("is not below a workspace root"),
                "{ws:?}: {err}"
            );
        }
        let none = check_workspace(inside.to_str().unwrap(), Some(&[])).unwrap_err();
        assert!(
            none.contains("this daemon has no --workspace-root"),
            "{none}"
        );
        // `exec` (no roots): any existing directory, resolved.
        assert_eq!(
            check_workspace(root.join("link").to_str().unwrap(), None).unwrap(),
            real(&outside)
        );
        assert!(check_workspace("relative", None)
            .unwrap_err()
            .contains("not an absolute path"));
    }

    #[test]
    fn the_file_system_root_is_not_a_workspace_root() {
        let err = workspace_roots(&["/".into()]).unwrap_err();
        assert!(err.contains("whole file system"), "{err}");
        assert!(workspace_roots(&["/nonexistent-xyz".into()]).is_err());
    }
}
