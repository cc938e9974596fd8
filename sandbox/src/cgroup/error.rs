//! The one error type of the cgroup backend.
//!
//! Every message names the operation, the path and (for writes) the value, then the OS error, in
//! lower case without a trailing period. Where an operator mistake is the likely cause, a
//! `; hint: ...` follows.

use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// An optional operator hint, shown as `; hint: ...` after the error it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint(pub Option<String>);

impl Hint {
    /// No hint.
    pub fn none() -> Self {
        Hint(None)
    }

    /// A hint with this text.
    pub fn new(text: impl Into<String>) -> Self {
        Hint(Some(text.into()))
    }

    /// The hint's text, if any.
    pub fn text(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(text) => write!(f, "; hint: {text}"),
            None => Ok(()),
        }
    }
}

/// What went wrong in the cgroup backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// The mountinfo file could not be read.
    #[error("read {}: {source}", .path.display())]
    MountinfoRead {
        /// The mountinfo file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A mountinfo line is not in the kernel's format.
    #[error("parse mountinfo line {line}: {reason}: {text:?}")]
    MountinfoParse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
        /// The line.
        text: String,
    },
    /// Neither a cgroup (v1) nor a cgroup2 filesystem is mounted.
    #[error(
        "no cgroup or cgroup2 filesystem in mountinfo; hint: mount cgroup2 at /sys/fs/cgroup \
         (in a container, give it a cgroup namespace with /sys/fs/cgroup mounted)"
    )]
    NoCgroupMounts,
    /// A job name or the parent path is not acceptable.
    #[error("invalid cgroup {what} {value:?}: {reason}")]
    InvalidName {
        /// `"job name"` or `"parent"`.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// `mkdir` of a cgroup directory failed.
    #[error("mkdir {}: {source}{hint}", .path.display())]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// A hint, if an operator mistake is likely.
        hint: Hint,
    },
    /// `rmdir` of a cgroup directory failed.
    #[error("rmdir {}: {source}{hint}", .path.display())]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// A hint, if an operator mistake is likely.
        hint: Hint,
    },
    /// Listing a cgroup directory failed.
    #[error("list {}: {source}", .path.display())]
    List {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading a cgroup file failed.
    #[error("read {}: {source}{hint}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// A hint, if an operator mistake is likely.
        hint: Hint,
    },
    /// Writing a value to a cgroup file failed.
    #[error("write {value:?} to {}: {source}{hint}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The OS error.
        source: io::Error,
        /// A hint, if an operator mistake is likely.
        hint: Hint,
    },
    /// A cgroup file held something we could not parse.
    #[error("parse {}: unexpected content {content:?}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (truncated).
        content: String,
    },
    /// A controller a limit needs is not available to stockade's parent group on cgroup v2.
    #[error(
        "controller {controller} is not available in {} (it lists {available:?}); hint: enable it \
         in {}/cgroup.subtree_control (stockade never writes above its parent group), \
         or with systemd give the unit that owns this subtree Delegate=yes",
        .controllers_file.display(), .above.display()
    )]
    ControllerUnavailable {
        /// `memory` or `pids`.
        controller: String,
        /// The parent's `cgroup.controllers`.
        controllers_file: PathBuf,
        /// What that file lists.
        available: String,
        /// The group above our parent, whose `cgroup.subtree_control` must enable it.
        above: PathBuf,
    },
    /// A controller a limit needs is mounted in no hierarchy stockade can use.
    #[error(
        "controller {controller} is not mounted ({layout}); hint: mount it as cgroup v1 or \
         enable it in cgroup2, or drop the limit from the profile"
    )]
    ControllerNotMounted {
        /// `memory`, `pids`, or a list of alternatives.
        controller: String,
        /// The layout as [`Layout::describe`](super::Layout::describe) puts it.
        layout: String,
    },
    /// `kill(2)` failed for a reason other than ESRCH.
    #[error("kill({pid}, {signal}): {source}")]
    Signal {
        /// The pid, read from the job's `cgroup.procs`.
        pid: i32,
        /// The signal.
        signal: Signal,
        /// The errno.
        source: Errno,
    },
    /// Processes survived every round of `kill_all`.
    #[error(
        "kill all in {}: {remaining} process(es) still listed after {rounds} rounds",
        .path.display()
    )]
    KillIncomplete {
        /// The tracking cgroup directory.
        path: PathBuf,
        /// How many pids were still listed.
        remaining: usize,
        /// How many freeze/kill rounds ran.
        rounds: u32,
    },
    /// `open` found the job's cgroup in no hierarchy.
    #[error("job cgroup {name:?} not found under {}", .parent.display())]
    NotFound {
        /// The job name.
        name: String,
        /// The first place looked.
        parent: PathBuf,
    },
    /// An operation failed and undoing it failed too.
    #[error("{error}; cleanup also failed: {}", join(.cleanup))]
    CleanupFailed {
        /// The first error.
        error: Box<CgroupError>,
        /// Every error of the cleanup.
        cleanup: Vec<CgroupError>,
    },
}

impl CgroupError {
    /// The errno of the underlying OS error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::MountinfoRead { source, .. }
            | CgroupError::Mkdir { source, .. }
            | CgroupError::Rmdir { source, .. }
            | CgroupError::List { source, .. }
            | CgroupError::Read { source, .. }
            | CgroupError::Write { source, .. } => source.raw_os_error(),
            CgroupError::Signal { source, .. } => Some(*source as i32),
            CgroupError::CleanupFailed { error, .. } => error.errno(),
            _ => None,
        }
    }

    /// The operator hint, if the error carries one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            CgroupError::Mkdir { hint, .. }
            | CgroupError::Rmdir { hint, .. }
            | CgroupError::Read { hint, .. }
            | CgroupError::Write { hint, .. } => hint.text(),
            CgroupError::CleanupFailed { error, .. } => error.hint(),
            _ => None,
        }
    }
}

fn join(errors: &[CgroupError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
