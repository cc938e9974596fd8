//! The exec helper as a child process, started one of two ways:
//!
//! - **in its cgroup** (`clone3(CLONE_INTO_CGROUP)`, [`stockade_sandbox::spawn`]) where the job
//!   has a cgroup2 directory: no `cgroup.procs` write for that hierarchy, so no RCU grace period
//!   on the launch path. Waited for through a pidfd.
//! - **plainly** (tokio `Command`, i.e. `posix_spawn`) where the kernel cannot do that; the
//!   helper then writes its pid into every `cgroup.procs` itself (step 4).
//!
//! Either way the orphan reaper must leave the pid alone until it is waited for
//! ([`crate::reaper::Owned`]).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stockade_sandbox::helper;
use stockade_sandbox::spawn::{spawn_helper_into_cgroup, SpawnError};
use tokio::io::AsyncRead;
use tokio::signal::unix::SignalKind;

/// How the helper may enter the job's cgroup (`--cgroup-attach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// clone3(CLONE_INTO_CGROUP) where possible, else `cgroup.procs`.
    Auto,
    /// Always `cgroup.procs` (written by the helper).
    Procs,
}

/// How the helper got into the job's cgroup, for the enforcement report.
#[derive(Debug, Clone)]
pub enum Attach {
    /// Started in this cgroup2 directory by clone3(CLONE_INTO_CGROUP).
    CloneIntoCgroup(PathBuf),
    /// Joined by writing `cgroup.procs` (the reason clone3 was not used).
    ProcsWrite(String),
}

/// A running exec helper.
pub struct HelperChild {
    kind: Kind,
    pub attach: Attach,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
}

enum Kind {
    Tokio(tokio::process::Child),
    Raw {
        pid: i32,
        pidfd: OwnedFd,
        /// Registered before the spawn, so the helper's SIGCHLD cannot be missed.
        sigchld: tokio::signal::unix::Signal,
        status: Option<ExitStatus>,
    },
}

impl HelperChild {
    /// Start the helper from `exe`: in `cgroup2_dir` if given and the kernel can, else plainly.
    /// Returns the helper and the supervisor's end of its control socket.
    pub fn spawn(
        exe: &Path,
        cgroup2_dir: Option<&Path>,
        mode: AttachMode,
    ) -> std::io::Result<(Self, UnixStream)> {
        let reason = match cgroup2_dir {
            None => "no cgroup2 hierarchy on this host".to_string(),
            Some(_) if mode == AttachMode::Procs => "--cgroup-attach procs".to_string(),
            Some(dir) => match tokio::signal::unix::signal(SignalKind::child())
                .map_err(SpawnError::Failed)
                .and_then(|sigchld| Ok((spawn_helper_into_cgroup(exe, dir)?, sigchld)))
            {
                Ok((h, sigchld)) => {
                    let pipe = |fd: OwnedFd| -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
                        Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
                            fd,
                        )?))
                    };
                    let child = HelperChild {
                        kind: Kind::Raw {
                            pid: h.pid,
                            pidfd: h.pidfd,
                            sigchld,
                            status: None,
                        },
                        attach: Attach::CloneIntoCgroup(dir.to_path_buf()),
                        stdout: Some(pipe(h.stdout)?),
                        stderr: Some(pipe(h.stderr)?),
                    };
                    return Ok((child, h.ctrl));
                }
                Err(SpawnError::Unsupported(why)) => why,
                Err(SpawnError::Failed(e)) => return Err(e),
            },
        };
        let (cmd, ctrl) = helper::helper_command(exe)?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = cmd.spawn();
        // The Command still holds the helper's end of the control socket: close it now, or the
        // EOF that signals a successful execve would never come.
        drop(cmd);
        let mut child = spawned?;
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>);
        Ok((
            HelperChild {
                kind: Kind::Tokio(child),
                attach: Attach::ProcsWrite(reason),
                stdout,
                stderr,
            },
            ctrl,
        ))
    }

    pub fn id(&self) -> Option<u32> {
        match &self.kind {
            Kind::Tokio(c) => c.id(),
            Kind::Raw { pid, status, .. } => status.is_none().then_some(*pid as u32),
        }
    }

    /// SIGKILL, unless it has been waited for already.
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        match &mut self.kind {
            Kind::Tokio(c) => c.start_kill(),
            // Not reaped yet, so the pid is still ours (a zombie at worst): no reuse race.
            Kind::Raw {
                pid, status: None, ..
            } => match kill(Pid::from_raw(*pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Kind::Raw { .. } => Ok(()),
        }
    }

    /// Wait for the helper (then the job) to exit, and reap it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match &mut self.kind {
            Kind::Tokio(c) => c.wait().await,
            Kind::Raw {
                status: Some(s), ..
            } => Ok(*s),
            Kind::Raw {
                pidfd,
                sigchld,
                status,
                ..
            } => loop {
                // Raw siginfo, not nix's WaitStatus: a job that dies by a real-time signal (the
                // monitor mirrors it) must be reported as that, not as a failed wait.
                match stockade_sandbox::spawn::try_wait_pidfd(pidfd.as_fd()) {
                    Ok(Some(s)) => {
                        *status = Some(s);
                        return Ok(s);
                    }
                    // Still running: wait for the next SIGCHLD.
                    Ok(None) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                if sigchld.recv().await.is_none() {
                    return Err(std::io::Error::other("the SIGCHLD stream ended"));
                }
            },
        }
    }
}

impl Drop for HelperChild {
    fn drop(&mut self) {
        // Like tokio's kill_on_drop: a helper nobody waits for is killed; the orphan reaper reaps
        // it once its `Owned` registration is gone.
        if let Kind::Raw { status: None, .. } = self.kind {
            let _ = self.start_kill();
        }
    }
}
