//! The `[limits]` table: every key checked for zero, negative and out-of-range values when the
//! profile loads; a request's narrowing of the CPU, idle and output limits; and the check of a
//! loaded profile against what this host can enforce ([`ProfileSet::check_host`]).
//!
//! A limit this host cannot enforce (its cgroup controller is missing, or it exceeds the host's
//! memory or CPUs) refuses the profile with file, key, value and reason when
//! `mechanisms.limits = "required"` (the default), and is reported in every job's enforcement
//! record when it is `"best_effort"`.

use std::path::Path;
use std::time::Duration;

use stockade_sandbox::cgroup::Layout;
use stockade_sandbox::Status;

use crate::{
    fmt_secs, LimitsFile, ProfileError, ProfileErrors, ProfileSet, Rejection, Requirement,
    MAX_GRACE_SECS, MAX_MIB, MAX_TIMEOUT_SECS,
};

/// The kernel's `PID_MAX_LIMIT` on 64-bit: no pids limit above it means anything.
const MAX_PIDS: i64 = 4 << 20;

/// `[limits]` after validation, in bytes and durations.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    pub wall_timeout: Duration,
    pub grace: Duration,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub nofile: Option<u64>,
    pub fsize_bytes: Option<u64>,
    pub tmp_bytes: u64,
    pub shm_bytes: u64,
    pub cpu_limit: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub output_limit_bytes: Option<u64>,
    pub workspace_bytes: Option<u64>,
}

/// Reports one problem: key, value, reason, hint.
pub(crate) type Problem<'a> = dyn FnMut(&str, String, &str, Option<&str>) + 'a;

const OMIT: Option<&str> = Some("omit the key for no limit");

/// Check `value` is within `min..=max`; report it otherwise. Returns it as `u64` if valid.
fn ranged(
    problem: &mut Problem<'_>,
    key: &str,
    value: i64,
    (min, max, max_note): (i64, i64, &str),
    hint_low: Option<&str>,
) -> Option<u64> {
    if value < min {
        problem(
            key,
            value.to_string(),
            &format!("must be at least {min}"),
            hint_low,
        );
        None
    } else if value > max {
        problem(
            key,
            value.to_string(),
            &format!("must be at most {max}{max_note}"),
            None,
        );
        None
    } else {
        u64::try_from(value).ok()
    }
}

/// Validate every `[limits]` key; report each problem. The result is meaningful only if no
/// problem was reported.
pub(crate) fn validate(l: &LimitsFile, mount_ns: bool, problem: &mut Problem<'_>) -> Limits {
    let max_timeout = MAX_TIMEOUT_SECS as i64;
    let mib = (1, MAX_MIB as i64, " (1 PiB)");
    let mut out = Limits::default();
    if l.wall_timeout_secs < 1 || l.wall_timeout_secs > max_timeout {
        problem(
            "limits.wall_timeout_secs",
            l.wall_timeout_secs.to_string(),
            &format!("must be between 1 and {MAX_TIMEOUT_SECS} (a week)"),
            None,
        );
    } else {
        out.wall_timeout = Duration::from_secs(l.wall_timeout_secs as u64);
    }
    let grace = (0, MAX_GRACE_SECS as i64, "");
    if let Some(g) = ranged(problem, "limits.grace_secs", l.grace_secs, grace, None) {
        out.grace = Duration::from_secs(g);
    }
    let opt = |problem: &mut Problem<'_>, key: &str, v: Option<i64>, range| {
        v.and_then(|v| ranged(problem, key, v, range, OMIT))
    };
    out.memory_bytes = opt(
        problem,
        "limits.memory_mib",
        l.memory_mib,
        (8, MAX_MIB as i64, " (1 PiB)"),
    )
    .map(|m| m << 20);
    out.pids = opt(
        problem,
        "limits.pids",
        l.pids,
        (1, MAX_PIDS, " (the kernel's PID_MAX_LIMIT)"),
    );
    out.nofile = opt(
        problem,
        "limits.nofile",
        l.nofile,
        (16, i64::from(u32::MAX), ""),
    );
    out.fsize_bytes = opt(problem, "limits.fsize_mib", l.fsize_mib, mib).map(|m| m << 20);
    let no_omit = |problem: &mut Problem<'_>, key: &str, v: i64| {
        ranged(problem, key, v, mib, None).map(|m| m << 20)
    };
    out.tmp_bytes = no_omit(problem, "limits.tmp_mib", l.tmp_mib).unwrap_or(0);
    out.shm_bytes = no_omit(problem, "limits.shm_mib", l.shm_mib).unwrap_or(0);
    out.cpu_limit = opt(
        problem,
        "limits.cpu_secs",
        l.cpu_secs,
        (1, max_timeout, " (a week of CPU time)"),
    )
    .map(Duration::from_secs);
    // An idle timeout at or above the wall-clock deadline could never fire.
    let wall = l.wall_timeout_secs.clamp(1, max_timeout);
    if let Some(idle) = l.idle_timeout_secs {
        if idle >= 1 && idle > wall {
            problem(
                "limits.idle_timeout_secs",
                idle.to_string(),
                &format!(
                    "must be at most limits.wall_timeout_secs ({wall}): the wall-clock deadline \
                     would always come first"
                ),
                None,
            );
        } else {
            out.idle_timeout = ranged(
                problem,
                "limits.idle_timeout_secs",
                idle,
                (1, wall, ""),
                OMIT,
            )
            .map(Duration::from_secs);
        }
    }
    out.output_limit_bytes = opt(problem, "limits.output_mib", l.output_mib, mib).map(|m| m << 20);
    out.workspace_bytes =
        opt(problem, "limits.workspace_mib", l.workspace_mib, mib).map(|m| m << 20);
    if let (Some(ws), false) = (l.workspace_mib, mount_ns) {
        problem(
            "limits.workspace_mib",
            ws.to_string(),
            "needs namespaces.mount = true: the budget is a size-limited tmpfs mounted on the \
             fresh workspace in the job's own mount namespace",
            Some("enable namespaces.mount or omit the key"),
        );
    }
    out
}

/// `mechanisms.limits` may not be `off`: limits are what keeps a job from exhausting the host.
pub(crate) fn check_requirement(r: Requirement, problem: &mut Problem<'_>) {
    if r == Requirement::Off {
        problem(
            "mechanisms.limits",
            "\"off\"".into(),
            "limits cannot be turned off (remove a limit's key for no limit)",
            Some("use \"required\" or \"best_effort\""),
        );
    }
}

/// Refuse a request's limit on a mechanism this host cannot enforce (noted by
/// [`ProfileSet::check_host`] for a `best_effort` profile): it would never hold.
pub(crate) fn host_can_enforce(
    profile: &crate::Profile,
    mechanism: &str,
    what: &str,
) -> Result<(), Rejection> {
    match profile
        .host_notes
        .iter()
        .find(|n| n.mechanism == mechanism && n.status == Status::NotEnforced)
    {
        Some(note) => Err(Rejection(format!(
            "{what} cannot be enforced on this host ({})",
            note.detail
        ))),
        None => Ok(()),
    }
}

/// A narrowing of a duration limit by a request: never zero, never above the profile's.
pub(crate) fn narrow_duration(
    what: &str,
    key: &str,
    profile: &str,
    limit: Option<Duration>,
    req: Option<Duration>,
) -> Result<Option<Duration>, Rejection> {
    match (limit, req) {
        (limit, None) => Ok(limit),
        (_, Some(r)) if r.is_zero() => Err(Rejection(format!("{what} must be greater than 0"))),
        (Some(l), Some(r)) if r > l => Err(Rejection(format!(
            "{what} {}s exceeds profile {profile}'s {key} = {} (a request may only lower it)",
            fmt_secs(r),
            l.as_secs()
        ))),
        (_, r) => Ok(r),
    }
}

/// A narrowing of a byte limit by a request: never zero, never above the profile's.
pub(crate) fn narrow_bytes(
    what: &str,
    key: &str,
    profile: &str,
    limit: Option<u64>,
    req: Option<u64>,
) -> Result<Option<u64>, Rejection> {
    match (limit, req) {
        (limit, None) => Ok(limit),
        (_, Some(0)) => Err(Rejection(format!("{what} must be greater than 0"))),
        (Some(l), Some(r)) if r > l => Err(Rejection(format!(
            "{what} {r} bytes exceeds profile {profile}'s {key} = {} ({l} bytes; a request may \
             only lower it)",
            l >> 20
        ))),
        (_, r) => Ok(r),
    }
}

/// What this host can enforce, for [`ProfileSet::check_host`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimits {
    /// `MemTotal` of `/proc/meminfo`, bytes (`None`: unknown, not checked).
    pub memory_bytes: Option<u64>,
    /// CPUs this process may run on.
    pub cpus: u64,
    /// A memory controller jobs can use (v1 `memory`, or cgroup2 `memory`).
    pub memory_controller: bool,
    /// A pids controller jobs can use.
    pub pids_controller: bool,
    /// Per-cgroup CPU accounting (cgroup2 `cpu.stat`, or v1 `cpuacct`).
    pub cpu_accounting: bool,
    /// One line naming the cgroup layout, for reasons.
    pub layout: String,
}

impl HostLimits {
    /// Read this host: `meminfo` (normally `/proc/meminfo`) and the cgroup layout.
    pub fn detect(layout: &Layout, meminfo: &Path) -> HostLimits {
        let memory_bytes = std::fs::read_to_string(meminfo).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|kb| kb.trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        });
        HostLimits {
            memory_bytes,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_controller: layout.has_controller("memory"),
            pids_controller: layout.has_controller("pids"),
            cpu_accounting: layout.has_controller("cpu-accounting"),
            layout: layout.describe(),
        }
    }
}

/// A limit of a `best_effort` profile that this host cannot fully enforce; reported in the
/// enforcement record of every job of the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNote {
    /// Mechanism name in the enforcement report, e.g. `cgroup.memory`.
    pub mechanism: String,
    /// `NotEnforced` (dropped) or `Partial`.
    pub status: Status,
    /// Why, one line.
    pub detail: String,
}

impl ProfileSet {
    /// Check every profile against what this host can enforce. A `required` profile with a
    /// limit the host cannot enforce is an error (all are reported); a `best_effort` profile
    /// keeps what can be enforced, drops what cannot, and records a [`HostNote`] for each.
    pub fn check_host(mut self, host: &HostLimits) -> Result<ProfileSet, ProfileErrors> {
        let mut errors = Vec::new();
        for p in self.profiles.values_mut() {
            let mut found: Vec<(&str, String, String, Status, &str)> = Vec::new();
            let missing = |c: &str| {
                format!(
                    "the {c} cgroup controller is not available on this host ({})",
                    host.layout
                )
            };
            if let Some(m) = p.memory_bytes {
                if !host.memory_controller {
                    found.push((
                        "limits.memory_mib",
                        (m >> 20).to_string(),
                        missing("memory"),
                        Status::NotEnforced,
                        "cgroup.memory",
                    ));
                } else if let Some(total) = host.memory_bytes.filter(|t| m > *t) {
                    found.push((
                        "limits.memory_mib",
                        (m >> 20).to_string(),
                        format!(
                            "exceeds this host's memory ({} MiB): it would limit nothing",
                            total >> 20
                        ),
                        Status::Partial,
                        "cgroup.memory",
                    ));
                }
            }
            if let Some(n) = p.pids {
                if !host.pids_controller {
                    found.push((
                        "limits.pids",
                        n.to_string(),
                        missing("pids"),
                        Status::NotEnforced,
                        "cgroup.pids",
                    ));
                }
            }
            if let Some(cpu) = p.cpu_limit {
                let reachable = p.wall_timeout.as_secs() * host.cpus;
                if !host.cpu_accounting {
                    found.push((
                        "limits.cpu_secs",
                        cpu.as_secs().to_string(),
                        "this host has neither cgroup2 (cpu.stat) nor a v1 cpuacct hierarchy to \
                         account a job's CPU time"
                            .into(),
                        Status::NotEnforced,
                        "cgroup.cpu_time",
                    ));
                } else if cpu.as_secs() > reachable {
                    found.push((
                        "limits.cpu_secs",
                        cpu.as_secs().to_string(),
                        format!(
                            "can never be reached on this host: wall_timeout_secs {} × {} CPUs \
                             = {reachable} CPU-seconds",
                            p.wall_timeout.as_secs(),
                            host.cpus
                        ),
                        Status::Partial,
                        "cgroup.cpu_time",
                    ));
                }
            }
            if let (Some(ws), Some(total)) = (p.workspace_bytes, host.memory_bytes) {
                if ws > total {
                    found.push((
                        "limits.workspace_mib",
                        (ws >> 20).to_string(),
                        format!(
                            "exceeds this host's memory ({} MiB), which holds the workspace \
                             tmpfs: it would limit nothing",
                            total >> 20
                        ),
                        Status::Partial,
                        "workspace.budget",
                    ));
                }
            }
            for (key, value, reason, status, mechanism) in found {
                if p.limits_requirement == Requirement::Required {
                    errors.push(ProfileError {
                        file: p.file.clone(),
                        key: Some(key.into()),
                        value: Some(value),
                        reason,
                        hint: Some(
                            "lower or remove the limit, or set mechanisms.limits = \
                             \"best_effort\" to run with what this host can enforce"
                                .into(),
                        ),
                    });
                    continue;
                }
                if status == Status::NotEnforced {
                    match mechanism {
                        "cgroup.memory" => p.memory_bytes = None,
                        "cgroup.pids" => p.pids = None,
                        "cgroup.cpu_time" => p.cpu_limit = None,
                        _ => {}
                    }
                }
                p.host_notes.push(HostNote {
                    mechanism: mechanism.into(),
                    status,
                    detail: format!("{key} = {value}: {reason}"),
                });
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(ProfileErrors(errors))
        }
    }
}
