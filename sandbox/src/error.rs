//! The typed error a failed confinement step reports back to the supervisor.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A confinement step, in the order the helper applies them (see docs/setup-order.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Step {
    /// Reading the launch plan from the supervisor.
    ReadPlan,
    /// Replacing stdin with /dev/null and closing every inherited descriptor above stderr.
    CloseFds,
    /// `setsid`: new session, no controlling terminal.
    NewSession,
    /// `PR_SET_PDEATHSIG`: die with the supervisor.
    ParentDeathSignal,
    /// Writing our pid into the job's cgroups.
    JoinCgroup,
    /// `unshare` of the job's namespaces, `sethostname`.
    Namespaces,
    /// Private mounts in the job's mount namespace.
    Mounts,
    /// `setrlimit` for each limit.
    Rlimits,
    /// Dropping the bounding, ambient and inheritable capability sets (needs root, so before the uid change).
    DropBoundingCaps,
    /// `setgroups`, `setresgid`, `setresuid`.
    Identity,
    /// Clearing the permitted and effective sets and checking every set is empty.
    DropCaps,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// `umask` and `chdir` into the workspace as the job's user.
    Workspace,
    /// Landlock: filesystem, TCP and scope rules.
    Landlock,
    /// Installing the seccomp filters.
    Seccomp,
    /// `execve` of the job's command.
    Exec,
}

impl Step {
    /// Stable kebab-case name, as used in result records.
    pub fn name(self) -> &'static str {
        match self {
            Step::ReadPlan => "read-plan",
            Step::CloseFds => "close-fds",
            Step::NewSession => "new-session",
            Step::ParentDeathSignal => "parent-death-signal",
            Step::JoinCgroup => "join-cgroup",
            Step::Namespaces => "namespaces",
            Step::Mounts => "mounts",
            Step::Rlimits => "rlimits",
            Step::DropBoundingCaps => "drop-bounding-caps",
            Step::Identity => "identity",
            Step::DropCaps => "drop-caps",
            Step::NoNewPrivs => "no-new-privs",
            Step::Workspace => "workspace",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
            Step::Exec => "exec",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the helper could not start the job. The job never ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("setup step {step} failed: {syscall}: {message}")]
pub struct SetupError {
    /// The step that failed.
    pub step: Step,
    /// The system call or operation, with its arguments (for example `setresuid(61000, 61000, 61000)`).
    pub syscall: String,
    /// errno, or 0 when the failure was not a system call's.
    pub errno: i32,
    /// One line for a human.
    pub message: String,
}

impl SetupError {
    /// An error from a failed system call.
    pub fn sys(step: Step, syscall: impl Into<String>, errno: nix::errno::Errno) -> Self {
        SetupError {
            step,
            syscall: syscall.into(),
            errno: errno as i32,
            message: errno.desc().to_lowercase(),
        }
    }

    /// An error that is not a system call's (errno 0).
    pub fn other(step: Step, syscall: impl Into<String>, message: impl Into<String>) -> Self {
        SetupError {
            step,
            syscall: syscall.into(),
            errno: 0,
            message: message.into(),
        }
    }
}
