//! The privileged half of stockade: the launch plan, the exec helper that applies the ordered
//! confinement steps, the cgroup backend, and path-safe workspace file operations ([`fsops`]).
//!
//! # Test strategy
//! The order and arguments of the confinement steps are unit-tested against a recording
//! [`helper::Sys`] double (no root needed). Whether each step is *enforced* is proven by the
//! integration tests in `tests/`, which run hostile jobs as root on the real kernel.

pub mod cgroup;
mod error;
pub mod fsops;
pub mod helper;
pub mod landlock;
mod plan;
mod report;
pub mod seccomp;
pub mod spawn;
mod sys;
pub mod wire;

pub use error::{SetupError, Step};
pub use plan::{Bind, LaunchPlan, Mounts, Namespaces, Rlimit, RlimitResource, Tmpfs};
pub use report::{Applied, HelperMessage, Status};
