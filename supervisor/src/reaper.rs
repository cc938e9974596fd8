//! Reaping orphaned job processes without stealing tokio's children.
//!
//! A job's double-forked grandchildren are reparented when their parent exits. stockade makes
//! itself a child subreaper so they are reparented to it rather than to the host's PID 1 (which,
//! in containers and on some hosts, never reaps them), and reaps them here. tokio reaps the
//! children it spawned by pid; reaping one of those here would steal the exit status its `wait()`
//! is waiting for, so every pid a tokio `Child` owns is registered in [`OWNED`] and skipped.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};

static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn owned() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    OWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a child pid as tokio's while alive; unregisters it when dropped. Keep it until the
/// `Child` has been waited for.
#[derive(Debug)]
pub struct Owned(i32);

impl Owned {
    /// Register `pid` (from `Child::id()`), if there is one.
    pub fn new(pid: Option<u32>) -> Option<Owned> {
        let pid = pid? as i32;
        owned().insert(pid);
        Some(Owned(pid))
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        owned().remove(&self.0);
    }
}

/// `PR_SET_CHILD_SUBREAPER`: orphans of our descendants are reparented to us.
pub fn become_subreaper() -> anyhow::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| anyhow::anyhow!("prctl(PR_SET_CHILD_SUBREAPER, 1): {e}"))
}

/// Reap every exited child that tokio does not own. Returns how many were reaped, and whether
/// we have no children at all left.
pub fn reap_orphans() -> (usize, bool) {
    let mut reaped = 0;
    loop {
        // Peek (WNOWAIT) first: only reap what is not tokio's.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::All, flags) {
            Ok(WaitStatus::StillAlive) => return (reaped, false),
            Ok(status) => {
                let Some(pid) = status.pid() else {
                    return (reaped, false);
                };
                if owned().contains(&pid.as_raw()) {
                    // tokio will reap it on this same SIGCHLD; orphans behind it wait for the
                    // next signal or tick.
                    return (reaped, false);
                }
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(_) => {
                        reaped += 1;
                        tracing::debug!(pid = pid.as_raw(), "reaped orphan");
                    }
                    Err(e) => {
                        tracing::warn!(pid = pid.as_raw(), "waitpid: {e}");
                        return (reaped, false);
                    }
                }
            }
            Err(Errno::ECHILD) => return (reaped, true),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("waitid(P_ALL): {e}");
                return (reaped, false);
            }
        }
    }
}

/// Reap orphans whenever SIGCHLD arrives, and every second in case a signal was coalesced behind
/// a tokio child. Runs until the runtime shuts down.
pub async fn run() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!("cannot watch SIGCHLD ({e}); reaping orphans once a second");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        match sigchld.as_mut() {
            Some(s) => {
                tokio::select! {
                    _ = s.recv() => {}
                    _ = tick.tick() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
        reap_orphans();
    }
}

/// Before exiting: reap orphans until we have no children left, up to `limit`. Call only when
/// every process of every job is known to be dead (their cgroups are empty) and tokio owns no
/// child any more; otherwise this would wait for live ones.
pub fn reap_remaining(limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let (_, none_left) = reap_orphans();
        if none_left || Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
