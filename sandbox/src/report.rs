//! What the exec helper tells the supervisor: what it applied, or why it could not.

use serde::{Deserialize, Serialize};

use crate::error::SetupError;

/// How far a mechanism was enforced for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Fully enforced.
    Enforced,
    /// Enforced in part (a best-effort mechanism on a kernel that lacks some of it).
    Partial,
    /// Asked for as best effort, but the kernel could not enforce it.
    NotEnforced,
    /// The profile did not ask for it.
    NotRequested,
}

/// One mechanism as applied to one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Mechanism name, e.g. `identity`, `capabilities`, `landlock.fs`, `seccomp`.
    pub name: String,
    /// How far it was enforced.
    pub status: Status,
    /// One line of detail, e.g. `uid 61000 gid 61000, no supplementary groups`.
    pub detail: String,
}

impl Applied {
    /// A fully enforced mechanism.
    pub fn enforced(name: &str, detail: impl Into<String>) -> Applied {
        Applied {
            name: name.into(),
            status: Status::Enforced,
            detail: detail.into(),
        }
    }
}

/// A frame the helper sends on its control socket. The last frame before EOF decides: `Started`
/// followed by EOF means the `execve` succeeded; `Failed` means the job never ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelperMessage {
    /// Every step is applied; `execve` comes next.
    Started(Vec<Applied>),
    /// A step failed.
    Failed(SetupError),
}
