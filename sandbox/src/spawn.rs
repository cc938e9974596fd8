//! Starting the exec helper directly in the job's cgroup2 group (`clone3(CLONE_INTO_CGROUP)`),
//! so it never migrates: a `cgroup.procs` write waits for an RCU grace period after the host has
//! been idle (~5–18 ms here, docs/cgroups.md §6). The raw clone is in [`crate::sys`]; this is the
//! safe part: descriptors, the helper's command line, and which errors mean "not supported here".

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::helper::HELPER_ARG;
use crate::sys;

/// An exec helper started in its cgroup; it waits for its plan on `ctrl`.
#[derive(Debug)]
pub struct SpawnedHelper {
    pub pid: i32,
    /// A pidfd of the helper (close-on-exec): wait for it and signal it without pid reuse races.
    pub pidfd: OwnedFd,
    /// The supervisor's end of the control socket (the helper has the other on its stdin).
    pub ctrl: UnixStream,
    /// Read ends of the helper's stdout and stderr pipes (close-on-exec).
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Why the helper could not be started in its cgroup.
#[derive(Debug)]
pub enum SpawnError {
    /// This kernel (or this cgroup) cannot start a process in a cgroup: use the `cgroup.procs`
    /// path. ENOSYS (no clone3, or an architecture without the assembly), E2BIG (clone3 without
    /// the `cgroup` field, before 5.7), EINVAL/EOPNOTSUPP (CLONE_INTO_CGROUP refused), EBUSY
    /// (a group that cannot hold processes).
    Unsupported(String),
    /// Anything else: the job cannot start.
    Failed(std::io::Error),
}

/// Start `exe HELPER_ARG` with an empty environment in the cgroup2 directory `cgroup_dir`, with
/// a fresh control socket on its stdin and pipes on its stdout and stderr.
pub fn spawn_helper_into_cgroup(
    exe: &Path,
    cgroup_dir: &Path,
) -> Result<SpawnedHelper, SpawnError> {
    use std::os::unix::ffi::OsStrExt;
    let io = |what: String, e: Errno| {
        SpawnError::Failed(std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("{what}: {e}"),
        ))
    };
    let dir = nix::fcntl::open(
        cgroup_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(format!("open {}", cgroup_dir.display()), e))?;
    let dir = sys::take_fd(dir);
    // Both ends close-on-exec: a concurrent spawn on another thread never inherits them.
    let (ctrl, child_ctrl) = UnixStream::pair().map_err(|e| {
        SpawnError::Failed(std::io::Error::new(e.kind(), format!("socketpair: {e}")))
    })?;
    let (out_r, out_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io("pipe2 (stdout)".into(), e))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io("pipe2 (stderr)".into(), e))?;
    let image = sys::ExecImage::new(
        exe.as_os_str().as_bytes(),
        &[exe.as_os_str().as_bytes(), HELPER_ARG.as_bytes()],
        &[],
    )
    .map_err(|e| io(format!("helper path {}", exe.display()), e))?;
    let child_ctrl = OwnedFd::from(child_ctrl);
    match sys::spawn_into_cgroup(
        &image,
        [child_ctrl.as_fd(), out_w.as_fd(), err_w.as_fd()],
        dir.as_fd(),
    ) {
        Ok((pid, pidfd)) => Ok(SpawnedHelper {
            pid,
            pidfd,
            ctrl,
            stdout: out_r,
            stderr: err_r,
        }),
        Err(
            e @ (Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EBUSY),
        ) => Err(SpawnError::Unsupported(format!(
            "clone3(CLONE_INTO_CGROUP, {}): {e}",
            cgroup_dir.display()
        ))),
        Err(e) => Err(io(
            format!(
                "clone3(CLONE_INTO_CGROUP, {}) + execve({})",
                cgroup_dir.display(),
                exe.display()
            ),
            e,
        )),
    }
    // The child's ends (child_ctrl, out_w, err_w) and the directory fd close here.
}

/// Whether the process behind `pidfd` (a child of this process) has exited; if so it is reaped
/// and its status returned. Every status, real-time signals included.
pub fn try_wait_pidfd(
    pidfd: std::os::fd::BorrowedFd<'_>,
) -> Result<Option<std::process::ExitStatus>, Errno> {
    use std::os::unix::process::ExitStatusExt;
    Ok(
        sys::waitid_pidfd_exited(pidfd)?.map(|(code, status)| match code {
            libc::CLD_EXITED => std::process::ExitStatus::from_raw((status & 0xff) << 8),
            libc::CLD_DUMPED => std::process::ExitStatus::from_raw(status | 0x80),
            _ => std::process::ExitStatus::from_raw(status & 0x7f),
        }),
    )
}
