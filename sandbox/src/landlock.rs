//! Landlock: the job's file system, TCP and IPC-scope confinement, applied by the exec helper in
//! its own (single-threaded) process just before seccomp and `execve`.
//!
//! A [`LandlockPlan`] lists the paths the job may use and how ([`FsAccess`]), the TCP ports it may
//! connect to and bind, and whether signals and abstract unix sockets are scoped to the job.
//! Everything else is denied: the ruleset *handles* every right below, so a path without a rule
//! is denied for all of them, and so is every TCP port without a rule.
//!
//! # Rights
//!
//! Handled file system rights, by the Landlock ABI that introduced them:
//!
//! | ABI | Linux | rights |
//! |-----|-------|--------|
//! | 1 | 5.13 | `execute`, `write_file`, `read_file`, `read_dir`, `remove_dir`, `remove_file`, `make_char`, `make_dir`, `make_reg`, `make_sock`, `make_fifo`, `make_block`, `make_sym` |
//! | 2 | 5.19 | `refer` (link or rename across directories; with ABI 1 that is always denied) |
//! | 3 | 6.2 | `truncate` |
//! | 5 | 6.10 | `ioctl_dev` (ioctl on device files) |
//! | 9 | 7.1 | `resolve_unix` (connect or send to a named unix socket); handled only when the kernel knows it, see below |
//!
//! Network: `bind_tcp`, `connect_tcp` (ABI 4, Linux 6.7). Scopes: `signal`,
//! `abstract_unix_socket` (ABI 6, Linux 6.12).
//!
//! What each [`FsAccess`] grants beneath its path:
//!
//! | access | directory | non-directory (file, device, socket) |
//! |--------|-----------|--------------------------------------|
//! | `ReadExec` | `read_file`, `read_dir`, `execute` | `read_file`, `execute` |
//! | `ReadOnly` | `read_file`, `read_dir` | `read_file` |
//! | `ReadWrite` | every handled right | every handled right valid on a file: `read_file`, `write_file`, `execute`, `truncate`, `ioctl_dev`, `resolve_unix` |
//!
//! Rights only valid on directories are dropped from rules on non-directories (the kernel rejects
//! them), so `/dev/null` or `/etc/ld.so.cache` can carry a rule of their own.
//!
//! # Compatibility
//!
//! The rights this module maps and tests are those of ABI 1 to 6 ([`FS_TARGET_ABI`],
//! [`NET_ABI`], [`SCOPE_ABI`]). With `required`, the kernel must enforce every one the plan uses,
//! else [`apply`] fails before restricting anything, naming what is missing and the kernel's ABI:
//! file system rules need ABI 5 (truncate and ioctl_dev are part of "read-only" and "denied"), TCP
//! rules ABI 4 (TCP is always restricted: an empty port list denies all), scopes ABI 6. Without
//! `required`, whatever the kernel supports is enforced and the [`LandlockReport`] says what was.
//!
//! File system rights newer than [`FS_TARGET_ABI`] that the kernel and the `landlock` crate both
//! know (today `resolve_unix`, ABI 9) are handled too, so an unlisted path is denied for every
//! right the kernel knows; they are never required, and only `ReadWrite` grants them. On such a
//! kernel a job can reach a named unix socket (`/dev/log`, a daemon's socket) only through a
//! `ReadWrite` rule on it or on its directory.
//!
//! Not restricted by this module: UDP (ABI 10 can; the plan has no UDP ports yet), and non-TCP
//! stream protocols. Since the fix of Landlock erratum 1 (TCP socket identification), TCP rights
//! do not cover MPTCP, SCTP or SMC sockets: measured on Linux 6.18, `socket(AF_INET, SOCK_STREAM,
//! IPPROTO_MPTCP)` connects to a TCP port that `connect_tcp` denies (MPTCP falls back to plain TCP
//! on the wire). Seccomp or a network namespace must close that.
//!
//! Paths are opened with `O_PATH` (following symlinks: a rule on a symlink covers its target). A
//! path that does not exist (`ENOENT`, `ENOTDIR`) is an error with `required`; otherwise it is
//! skipped and listed in [`LandlockReport::missing_paths`] (skipping only removes access). Any
//! other open error is always an error.
//!
//! Landlock is path-based: a hard link to a secret file that already sits beneath an allowed path
//! is readable through that path. New links and renames from a denied place into an allowed one
//! are refused (`EXDEV`), but the supervisor must not hand the job directories that contain links
//! it did not vet.
//!
//! # Test strategy
//!
//! The rights mapping and the required-feature check are pure functions, unit-tested for every
//! ABI. Enforcement is tested on the real kernel (Landlock needs no privilege): each test re-runs
//! the test binary as a child process (Landlock is irreversible), which applies a plan, attempts
//! operations and prints their errno; the parent asserts the specific failure, and a control child
//! without Landlock shows each operation succeeds. A kernel without the needed ABI skips the test
//! loudly, and fails it when `STOCKADE_REQUIRE_PRIVILEGED=1`.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort,
    PathBeneath, PathFd, PathFdError, RestrictSelf, RestrictionStatus, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetError, RulesetStatus, Scope, ABI,
};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::report::Applied;
pub use crate::report::Status;

/// File system rights this module maps and tests: everything up to `ioctl_dev`.
pub const FS_TARGET_ABI: u32 = 5;
/// TCP bind and connect rules.
pub const NET_ABI: u32 = 4;
/// Signal and abstract unix socket scoping.
pub const SCOPE_ABI: u32 = 6;

const FS_TARGET: ABI = ABI::V5;
const NET: ABI = ABI::V4;
const SCOPES: ABI = ABI::V6;

/// What a job may do under Landlock. Everything not listed is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// Paths with rights; every other path is denied for every right the kernel knows.
    pub fs: Vec<FsRule>,
    /// TCP ports the job may connect to (ABI 4+); empty: every TCP connect is denied.
    pub tcp_connect: Vec<u16>,
    /// TCP ports the job may bind (ABI 4+); empty: every TCP bind is denied.
    pub tcp_bind: Vec<u16>,
    /// ABI 6+: deny signals to processes outside the job's Landlock domain.
    pub scope_signals: bool,
    /// ABI 6+: deny connecting to abstract unix sockets created outside the job's domain.
    pub scope_abstract_unix: bool,
    /// `true`: a right, rule family or path the kernel cannot enforce is an error. `false`: best
    /// effort, and the report says what was enforced.
    pub required: bool,
}

/// One path and what the job may do beneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRule {
    /// Absolute path (a directory covers everything beneath it).
    pub path: PathBuf,
    /// Rights granted beneath `path`.
    pub access: FsAccess,
}

/// How a job may use a path (see the module docs for the exact rights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsAccess {
    /// Read files, list directories, execute.
    ReadExec,
    /// Read files, list directories; no execute.
    ReadOnly,
    /// Everything: also write, create, remove, link and rename, truncate, device ioctls, execute.
    ReadWrite,
}

impl FsAccess {
    /// Stable name, as used in messages.
    pub fn name(self) -> &'static str {
        match self {
            FsAccess::ReadExec => "read_exec",
            FsAccess::ReadOnly => "read_only",
            FsAccess::ReadWrite => "read_write",
        }
    }
}

impl fmt::Display for FsAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was actually enforced, for the job's enforcement report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockReport {
    /// The running kernel's Landlock ABI; 0 without Landlock.
    pub abi: u32,
    /// File system rules: `Enforced` when every right through ABI 5 is, `Partial` on an older
    /// kernel (best effort), `NotEnforced` without Landlock.
    pub fs: Status,
    /// TCP bind and connect rules.
    pub net: Status,
    /// Signal and abstract unix socket scoping.
    pub scopes: Status,
    /// The `landlock` crate's ruleset status: `fully_enforced`, `partially_enforced` or
    /// `not_enforced`.
    pub status: String,
    /// Rule paths that did not exist and were skipped (best effort only).
    #[serde(default)]
    pub missing_paths: Vec<PathBuf>,
}

impl LandlockReport {
    /// The report as entries of the job's enforcement report: `landlock.fs`, `landlock.net`,
    /// `landlock.scopes`.
    pub fn applied(&self) -> Vec<Applied> {
        let base = format!("abi {}, ruleset {}", self.abi, self.status);
        let fs_detail = if self.missing_paths.is_empty() {
            base.clone()
        } else {
            let missing: Vec<String> = self
                .missing_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!("{base}, skipped missing paths: {}", missing.join(", "))
        };
        vec![
            Applied {
                name: "landlock.fs".into(),
                status: self.fs,
                detail: fs_detail,
            },
            Applied {
                name: "landlock.net".into(),
                status: self.net,
                detail: base.clone(),
            },
            Applied {
                name: "landlock.scopes".into(),
                status: self.scopes,
                detail: base,
            },
        ]
    }
}

/// A feature a required plan needs and the kernel lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingFeature {
    /// What cannot be enforced, e.g. `tcp bind/connect rules`.
    pub feature: &'static str,
    /// The Landlock ABI that introduced it.
    pub abi: u32,
}

impl fmt::Display for MissingFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (needs abi {})", self.feature, self.abi)
    }
}

/// Why Landlock could not be applied. Every variant but `NotEnforced` is returned before the
/// process is restricted at all.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// `required`, and the kernel has no Landlock at all.
    #[error("landlock is required but unavailable: {reason}")]
    Unavailable {
        /// Why (not built in, or not enabled at boot).
        reason: &'static str,
    },
    /// `required`, and the kernel's ABI lacks features the plan uses.
    #[error(
        "landlock is required but abi {kernel_abi} of the running kernel cannot enforce {}",
        join(.missing)
    )]
    Unsupported {
        /// The kernel's Landlock ABI.
        kernel_abi: u32,
        /// Every missing feature, oldest ABI first.
        missing: Vec<MissingFeature>,
    },
    /// A rule's path could not be opened (`O_PATH`) or inspected.
    #[error(
        "landlock {access} rule on {}: {}: {}",
        .path.display(),
        .call,
        .errno.desc().to_lowercase()
    )]
    Path {
        /// The rule's path.
        path: PathBuf,
        /// The rule's access.
        access: FsAccess,
        /// The failed call, `open(O_PATH)` or `fstat`.
        call: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// A Landlock system call, or the `landlock` crate's compatibility check, failed.
    #[error("landlock {context}: {source}")]
    Ruleset {
        /// What was being done, e.g. `add rule for /usr (read_exec)`.
        context: String,
        /// The crate's error (lower case, names the rights or the errno).
        #[source]
        source: RulesetError,
    },
    /// `required`, but the kernel enforced less than everything asked (the process is already
    /// partly restricted; the job must not run).
    #[error("landlock is required but the ruleset was {status} (kernel abi {kernel_abi})")]
    NotEnforced {
        /// The crate's ruleset status.
        status: &'static str,
        /// The kernel's Landlock ABI.
        kernel_abi: u32,
    },
}

impl LandlockError {
    /// The errno of the failed system call, or 0 when no system call failed.
    pub fn errno(&self) -> i32 {
        match self {
            LandlockError::Path { errno, .. } => *errno as i32,
            LandlockError::Ruleset { source, .. } => {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
                while let Some(e) = cause {
                    if let Some(code) = e
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::raw_os_error)
                    {
                        return code;
                    }
                    cause = e.source();
                }
                0
            }
            _ => 0,
        }
    }
}

fn join(missing: &[MissingFeature]) -> String {
    missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The running kernel's Landlock support, from the `landlock_create_ruleset` version query. A
/// `RestrictSelf` without flags and without `no_new_privs` makes that query and nothing else.
fn probe() -> LandlockStatus {
    RestrictSelf::default()
        .no_new_privs(false)
        .apply()
        .map(|status| status.landlock)
        .unwrap_or(LandlockStatus::NotImplemented)
}

fn abi_of(status: LandlockStatus) -> u32 {
    match status {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => kernel_abi.unwrap_or(effective_abi as i32).max(0) as u32,
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => 0,
    }
}

fn unavailable_reason(status: LandlockStatus) -> Option<&'static str> {
    match status {
        LandlockStatus::Available { .. } => None,
        LandlockStatus::NotEnabled => Some(
            "the kernel has landlock but it is not enabled at boot (add landlock to the lsm= kernel parameter)",
        ),
        LandlockStatus::NotImplemented => {
            Some("the kernel is built without landlock (needs linux 5.13+ with CONFIG_SECURITY_LANDLOCK)")
        }
    }
}

/// The running kernel's Landlock ABI version (0 without Landlock), from the
/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)` query. May exceed the
/// highest ABI the `landlock` crate knows (10).
pub fn kernel_abi() -> u32 {
    abi_of(probe())
}

/// Why Landlock is unavailable on this kernel, or `None` when it is available (for `stockade
/// doctor`).
pub fn kernel_unavailable_reason() -> Option<&'static str> {
    unavailable_reason(probe())
}

/// The features a plan needs, each with the ABI that introduced it (oldest first). ABI 1 itself
/// is [`LandlockError::Unavailable`]; `refer` (ABI 2) is not listed because ABI 1 denies every
/// cross-directory link or rename, which is stricter.
fn required_features(plan: &LandlockPlan) -> Vec<MissingFeature> {
    let mut features = vec![
        MissingFeature {
            feature: "truncate restriction",
            abi: 3,
        },
        MissingFeature {
            feature: "tcp bind/connect rules",
            abi: NET_ABI,
        },
        MissingFeature {
            feature: "ioctl_dev restriction",
            abi: FS_TARGET_ABI,
        },
    ];
    if plan.scope_signals {
        features.push(MissingFeature {
            feature: "signal scoping",
            abi: SCOPE_ABI,
        });
    }
    if plan.scope_abstract_unix {
        features.push(MissingFeature {
            feature: "abstract unix socket scoping",
            abi: SCOPE_ABI,
        });
    }
    features
}

/// The features of `plan` that Landlock ABI `abi` cannot enforce.
fn missing_features(plan: &LandlockPlan, abi: u32) -> Vec<MissingFeature> {
    required_features(plan)
        .into_iter()
        .filter(|f| f.abi > abi)
        .collect()
}

/// The file system rights the ruleset handles on a kernel whose (crate-effective) ABI is `abi`:
/// every right through [`FS_TARGET_ABI`], plus any newer right the kernel knows. Rights the kernel
/// lacks are left to the crate's compatibility handling (an error when required).
fn handled_fs(abi: ABI) -> BitFlags<AccessFs> {
    let target = AccessFs::from_all(FS_TARGET);
    target | (AccessFs::from_all(abi) & !target)
}

/// The rights a rule grants: see the table in the module docs. `handled` is [`handled_fs`].
fn rule_rights(
    access: FsAccess,
    is_dir: bool,
    handled: BitFlags<AccessFs>,
    abi: ABI,
) -> BitFlags<AccessFs> {
    let rights = match access {
        FsAccess::ReadExec => AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir,
        FsAccess::ReadOnly => AccessFs::ReadFile | AccessFs::ReadDir,
        FsAccess::ReadWrite => handled,
    } & handled;
    if is_dir {
        rights
    } else {
        // The kernel rejects directory-only rights (read_dir, make_*, remove_*, refer) on a file.
        rights & AccessFs::from_file(abi.max(FS_TARGET))
    }
}

fn ruleset_status_name(status: &RulesetStatus) -> &'static str {
    match status {
        RulesetStatus::FullyEnforced => "fully_enforced",
        RulesetStatus::PartiallyEnforced => "partially_enforced",
        RulesetStatus::NotEnforced => "not_enforced",
    }
}

/// A rule path opened with `O_PATH`, or `None` if it does not exist and the plan is best effort.
fn open_rule(rule: &FsRule, required: bool) -> Result<Option<(PathFd, bool)>, LandlockError> {
    let path_err = |call, errno| LandlockError::Path {
        path: rule.path.clone(),
        access: rule.access,
        call,
        errno,
    };
    let fd = match PathFd::new(&rule.path) {
        Ok(fd) => fd,
        Err(PathFdError::OpenCall { source, .. }) => {
            let errno = Errno::from_raw(source.raw_os_error().unwrap_or(libc::EINVAL));
            return match errno {
                Errno::ENOENT | Errno::ENOTDIR if !required => Ok(None),
                _ => Err(path_err("open(O_PATH)", errno)),
            };
        }
        Err(_) => return Err(path_err("open(O_PATH)", Errno::EINVAL)),
    };
    // fstat of the descriptor we will hand to the kernel, not of the path: no race with a swap.
    let stat = nix::sys::stat::fstat(fd.as_fd().as_raw_fd()).map_err(|e| path_err("fstat", e))?;
    let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
    Ok(Some((fd, is_dir)))
}

/// Apply `plan` to the calling process (the exec helper, just before seccomp and `execve`;
/// `no_new_privs` is already set). Irreversible: on success the process and every process it
/// starts are confined. The helper is single-threaded; in a multi-threaded process only the
/// calling thread would be.
///
/// Order: probe the kernel, check a required plan's features, open every rule path, build the
/// ruleset, restrict. Every error but [`LandlockError::NotEnforced`] and a failed
/// `landlock_restrict_self` comes before the process is restricted.
pub fn apply(plan: &LandlockPlan) -> Result<LandlockReport, LandlockError> {
    let landlock = probe();
    let kernel_abi = abi_of(landlock);
    let abi = ABI::from(landlock);
    if plan.required {
        if let Some(reason) = unavailable_reason(landlock) {
            return Err(LandlockError::Unavailable { reason });
        }
        let missing = missing_features(plan, kernel_abi);
        if !missing.is_empty() {
            return Err(LandlockError::Unsupported {
                kernel_abi,
                missing,
            });
        }
    }

    // Every path first, so a bad one fails before any Landlock call.
    let mut opened = Vec::with_capacity(plan.fs.len());
    let mut missing_paths = Vec::new();
    for rule in &plan.fs {
        match open_rule(rule, plan.required)? {
            Some((fd, is_dir)) => opened.push((rule, fd, is_dir)),
            None => missing_paths.push(rule.path.clone()),
        }
    }

    // The crate's compatibility checks back ours up: with HardRequirement any right the kernel
    // cannot enforce is an error rather than silently dropped.
    let level = if plan.required {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let ruleset_err = |context: String| move |source| LandlockError::Ruleset { context, source };
    let handled = handled_fs(abi);
    let mut scopes = BitFlags::<Scope>::EMPTY;
    if plan.scope_signals {
        scopes |= Scope::Signal;
    }
    if plan.scope_abstract_unix {
        scopes |= Scope::AbstractUnixSocket;
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(handled)
        .map_err(ruleset_err("handle file system access".into()))?
        // TCP is always handled: an empty port list denies every bind and connect.
        .handle_access(AccessNet::from_all(NET))
        .map_err(ruleset_err("handle tcp access".into()))?;
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(ruleset_err(
            "scope signals and abstract unix sockets".into(),
        ))?;
    }
    let mut created = ruleset
        .create()
        .map_err(ruleset_err("create ruleset".into()))?;
    for (rule, fd, is_dir) in opened {
        let rights = rule_rights(rule.access, is_dir, handled, abi);
        created = created
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(ruleset_err(format!(
                "add rule for {} ({})",
                rule.path.display(),
                rule.access
            )))?;
    }
    for (ports, right, what) in [
        (&plan.tcp_connect, AccessNet::ConnectTcp, "connect"),
        (&plan.tcp_bind, AccessNet::BindTcp, "bind"),
    ] {
        let mut ports = ports.clone();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            created = created
                .add_rule(NetPort::new(port, right))
                .map_err(ruleset_err(format!("add tcp {what} rule for port {port}")))?;
        }
    }
    let status: RestrictionStatus = created
        .restrict_self()
        .map_err(ruleset_err("restrict self".into()))?;

    let name = ruleset_status_name(&status.ruleset);
    if plan.required && status.ruleset != RulesetStatus::FullyEnforced {
        return Err(LandlockError::NotEnforced {
            status: name,
            kernel_abi,
        });
    }
    let enforced = status.ruleset != RulesetStatus::NotEnforced;
    let level_of = |needed: ABI| {
        if enforced && abi >= needed {
            Status::Enforced
        } else {
            Status::NotEnforced
        }
    };
    Ok(LandlockReport {
        abi: kernel_abi,
        fs: match level_of(FS_TARGET) {
            Status::NotEnforced if enforced && abi >= ABI::V1 => Status::Partial,
            s => s,
        },
        net: level_of(NET),
        scopes: if scopes.is_empty() {
            Status::NotRequested
        } else {
            level_of(SCOPES)
        },
        status: name.into(),
        missing_paths,
    })
}

#[cfg(test)]
mod tests;
