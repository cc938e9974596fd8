//! A thread that does file operations as a job's uid/gid, not as root.
//!
//! Linux keeps credentials per thread. A dedicated thread sets its own supplementary groups (raw
//! `setgroups`, which unlike glibc's does not broadcast to the process), its file-system gid and
//! uid (`setfsgid`/`setfsuid`, per thread by definition), and then clears its effective
//! capability set (`capset` is per thread too). From then on the kernel checks every `open`,
//! `mkdir`, `rename` and `unlink` of that thread against the job's uid, gid and permission bits,
//! files it creates belong to the job's uid, and `CAP_DAC_OVERRIDE`, `CAP_FOWNER` and friends are
//! gone. The thread never switches back: one thread per identity, for the daemon's lifetime.

use std::sync::mpsc;

use nix::unistd::{Gid, Uid};

type Work = Box<dyn FnOnce() + Send + 'static>;

/// A thread running closures as one uid/gid.
#[derive(Debug)]
pub struct IdentityThread {
    uid: u32,
    gid: u32,
    tx: mpsc::Sender<Work>,
}

/// The thread is gone (it panicked); the caller should make a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the file-operation thread of uid {uid} has ended")]
pub struct ThreadGone {
    /// The uid of the thread.
    pub uid: u32,
}

impl IdentityThread {
    /// Start a thread that becomes `uid`/`gid` (never 0) before doing any work. Fails if the
    /// thread could not take on that identity completely.
    pub fn spawn(uid: u32, gid: u32) -> Result<IdentityThread, String> {
        if uid == 0 || gid == 0 {
            return Err(format!(
                "file operations never run as root (asked for uid {uid}, gid {gid})"
            ));
        }
        let (tx, rx) = mpsc::channel::<Work>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name(format!("stockade-fs-{uid}"))
            .spawn(move || {
                let became = become_identity(uid, gid);
                let ok = became.is_ok();
                let _ = ready_tx.send(became);
                if !ok {
                    return;
                }
                while let Ok(work) = rx.recv() {
                    work();
                }
            })
            .map_err(|e| format!("spawn the file-operation thread for uid {uid}: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(IdentityThread { uid, gid, tx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "the file-operation thread for uid {uid} died while starting"
            )),
        }
    }

    /// The uid the thread acts as.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The gid the thread acts as.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Queue `work` on the thread.
    pub fn submit(&self, work: impl FnOnce() + Send + 'static) -> Result<(), ThreadGone> {
        self.tx
            .send(Box::new(work))
            .map_err(|_| ThreadGone { uid: self.uid })
    }

    /// Run `work` on the thread and wait for its result (blocking; for tests and tools).
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ThreadGone> {
        let (tx, rx) = mpsc::channel();
        self.submit(move || {
            let _ = tx.send(work());
        })?;
        rx.recv().map_err(|_| ThreadGone { uid: self.uid })
    }
}

/// Take on `uid`/`gid` for file-system access on the calling thread, and drop every effective
/// capability. Order: groups and gid need CAP_SETGID, the uid CAP_SETUID; capabilities last.
fn become_identity(uid: u32, gid: u32) -> Result<(), String> {
    crate::sys::setgroups_this_thread(&[gid])
        .map_err(|e| format!("setgroups([{gid}]) on the file-operation thread: {e}"))?;
    nix::unistd::setfsgid(Gid::from_raw(gid));
    nix::unistd::setfsuid(Uid::from_raw(uid));
    // setfsuid/setfsgid report no errors: read the values back (an invalid id changes nothing and
    // returns the current one).
    let fsuid = nix::unistd::setfsuid(Uid::from_raw(u32::MAX)).as_raw();
    let fsgid = nix::unistd::setfsgid(Gid::from_raw(u32::MAX)).as_raw();
    if fsuid != uid || fsgid != gid {
        return Err(format!(
            "setfsuid({uid})/setfsgid({gid}) did not take: fsuid {fsuid}, fsgid {fsgid}"
        ));
    }
    caps::clear(None, caps::CapSet::Effective)
        .map_err(|e| format!("clear effective capabilities of the file-operation thread: {e}"))?;
    let left = caps::read(None, caps::CapSet::Effective)
        .map_err(|e| format!("read effective capabilities back: {e}"))?;
    if !left.is_empty() {
        return Err(format!(
            "effective capabilities left after clearing: {left:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line `key:\t...` of /proc/thread-self/status, split on whitespace.
    fn status(key: &str) -> Vec<String> {
        let text = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in status"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_thread_takes_the_identity_and_no_capabilities_and_leaves_the_process_alone() {
        assert!(IdentityThread::spawn(0, 5)
            .unwrap_err()
            .contains("never run as root"));
        if !nix::unistd::geteuid().is_root() {
            eprintln!("*** SKIPPED identity thread test: needs root");
            return;
        }
        let before = (status("Uid"), status("Groups"), status("CapEff"));
        let t = IdentityThread::spawn(61207, 61208).unwrap();
        let (uid, gid, groups, capeff) = t
            .run(|| {
                (
                    status("Uid"),
                    status("Gid"),
                    status("Groups"),
                    status("CapEff"),
                )
            })
            .unwrap();
        // Uid: real, effective, saved, fs. Only the fs ids change.
        assert_eq!(uid[3], "61207", "{uid:?}");
        assert_eq!(uid[1], "0", "the effective uid stays: setfsuid only");
        assert_eq!(gid[3], "61208", "{gid:?}");
        assert_eq!(groups, ["61208"]);
        assert_eq!(capeff, ["0000000000000000"]);
        // A file it creates is the job's.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let f = dir.path().join("f");
        let f2 = f.clone();
        t.run(move || std::fs::write(&f2, "x")).unwrap().unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&m),
                std::os::unix::fs::MetadataExt::gid(&m)
            ),
            (61207, 61208)
        );
        // The rest of the process is unchanged.
        assert_eq!((status("Uid"), status("Groups"), status("CapEff")), before);
    }
}
