//! The daemon's side of file operations: who may address which workspace, as which identity,
//! under which policy; running the operation on the identity's thread; streaming the answer; and
//! one structured audit event per modifying operation.
//!
//! Addressability: a job's workspace can be addressed by job id while the job runs. After it
//! ended, a job that ran in a *named* workspace (`--workspace`) stays addressable by id for the
//! daemon's lifetime (the last [`RECENT_JOBS`] such jobs); a *fresh* workspace is removed when its
//! job ends, so it is addressable only while the job runs. A named workspace is also always
//! addressable by path (`FsTarget::Workspace`) while it exists below a workspace root.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stockade_profiles::{FilesPolicy, ProfileSet};
use stockade_protocol::{
    ErrorKind, FsEntry, FsEntryKind, FsErrorKind, FsOp, FsReply, FsTarget, JobId, JobRequest,
    RequestId, ServerMessage, FS_CHUNK,
};
use stockade_sandbox::fsops::identity::IdentityThread;
use stockade_sandbox::fsops::{self, Entry, EntryKind, FsError, Method, Workspace, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use crate::job;

/// Finished jobs with a named workspace that stay addressable by id.
pub const RECENT_JOBS: usize = 1024;
/// Target size of one `FsEntries` message (entries are cut into chunks well below a frame).
const ENTRIES_CHUNK_BYTES: usize = 256 * 1024;
/// Environment variable that makes the daemon resolve with the component walk instead of
/// `openat2` (test-only: it runs the same tests through the fallback for old kernels).
pub const TEST_RESOLVER_ENV: &str = "STOCKADE_TEST_FS_RESOLVER";

/// Where a job's workspace is and who owns its files.
#[derive(Debug, Clone)]
pub struct JobFiles {
    /// The client uid that submitted the job.
    pub owner_uid: u32,
    /// A trusted directory (a workspace root, or the scratch directory) ...
    pub anchor: PathBuf,
    /// ... and the workspace below it (no symlinks allowed on the way).
    pub below: PathBuf,
    /// The job's uid and gid: file operations run as them.
    pub uid: u32,
    /// The job's gid.
    pub gid: u32,
    /// The profile's file policy.
    pub policy: FilesPolicy,
    /// A fresh workspace (removed when the job ends).
    pub fresh: bool,
}

/// Where the job `id` of request `req` will have its workspace, or `None` if the request will be
/// rejected anyway.
pub fn job_files(
    launcher: &job::Launcher,
    profiles: &ProfileSet,
    id: &str,
    owner_uid: u32,
    req: &JobRequest,
) -> Option<JobFiles> {
    let roots = launcher.workspace_roots.as_deref();
    let (profile, _, named) = job::check_request(profiles, req, roots).ok()?;
    let (anchor, below, fresh) = match named {
        Some(ws) => {
            let (anchor, below) = split_below_root(&ws, roots.unwrap_or(&[]))?;
            (anchor, below, false)
        }
        None => (
            launcher.scratch_root.clone(),
            PathBuf::from(job::fresh_workspace_name(id)),
            true,
        ),
    };
    Some(JobFiles {
        owner_uid,
        anchor,
        below,
        uid: profile.uid,
        gid: profile.gid,
        policy: profile.files.clone(),
        fresh,
    })
}

/// `(root, rest)` for a resolved path strictly below one of `roots`.
fn split_below_root(real: &Path, roots: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    roots.iter().find_map(|r| {
        let rest = real.strip_prefix(r).ok()?;
        (!rest.as_os_str().is_empty()).then(|| (r.clone(), rest.to_path_buf()))
    })
}

/// File-operation state of the daemon.
#[derive(Debug)]
pub struct FsService {
    method: Method,
    threads: Mutex<HashMap<(u32, u32), Arc<IdentityThread>>>,
    recent: Mutex<VecDeque<(JobId, JobFiles)>>,
}

impl FsService {
    pub fn new() -> FsService {
        let method = match std::env::var(TEST_RESOLVER_ENV).as_deref() {
            Ok("walk") => Method::Walk,
            _ => Method::detect(),
        };
        tracing::info!(resolver = method.name(), "file operations");
        FsService {
            method,
            threads: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// A job ended: keep a named workspace addressable.
    pub fn job_ended(&self, id: &str, files: Option<JobFiles>) {
        let Some(files) = files.filter(|f| !f.fresh) else {
            return;
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT_JOBS {
            recent.pop_front();
        }
        recent.push_back((id.to_string(), files));
    }

    /// A finished job's workspace, if it is still addressable and `uid` may see it.
    pub fn recent(&self, id: &str, uid: u32) -> Option<JobFiles> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .find(|(j, f)| j == id && (f.owner_uid == uid || uid == 0))
            .map(|(_, f)| f.clone())
    }

    fn thread(&self, uid: u32, gid: u32) -> Result<Arc<IdentityThread>, String> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = threads.get(&(uid, gid)) {
            return Ok(t.clone());
        }
        let t = Arc::new(IdentityThread::spawn(uid, gid)?);
        threads.insert((uid, gid), t.clone());
        Ok(t)
    }

    fn forget_thread(&self, uid: u32, gid: u32) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.remove(&(uid, gid));
    }
}

/// Who asked, for the audit events.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub pid: Option<i32>,
}

/// A resolved target: where, as whom, under which policy.
struct Resolved {
    label: String,
    anchor: PathBuf,
    below: PathBuf,
    identity: Option<(u32, u32)>,
    policy: FilesPolicy,
}

/// Resolve the target for `caller` or say why not (an `Error` reply).
fn authorize(
    service: &FsService,
    jobs: Option<JobFiles>,
    launcher: &job::Launcher,
    profiles: &ProfileSet,
    caller: Caller,
    target: &FsTarget,
) -> Result<Resolved, (ErrorKind, String)> {
    match target {
        FsTarget::Job { job } => {
            let files = jobs
                .or_else(|| service.recent(job, caller.uid))
                .ok_or_else(|| {
                    (
                        ErrorKind::UnknownJob,
                        format!(
                        "no job {job} of yours with an addressable workspace (running jobs, and \
                         finished jobs that ran in a named --workspace, are addressable)"
                    ),
                    )
                })?;
            Ok(Resolved {
                label: job.clone(),
                anchor: files.anchor,
                below: files.below,
                identity: Some((files.uid, files.gid)),
                policy: files.policy,
            })
        }
        FsTarget::Workspace { path, profile } => {
            let roots = launcher.workspace_roots.as_deref();
            let real =
                job::check_workspace(path, roots).map_err(|m| (ErrorKind::NotPermitted, m))?;
            let (anchor, below) =
                split_below_root(&real, roots.unwrap_or(&[])).ok_or_else(|| {
                    (
                        ErrorKind::NotPermitted,
                        format!("workspace {path} is not below a workspace root of this daemon"),
                    )
                })?;
            let policy = match profile {
                None => FilesPolicy::default(),
                Some(name) => profiles
                    .get(name)
                    .map(|p| p.files.clone())
                    .ok_or_else(|| (ErrorKind::NotPermitted, profiles.unknown(name).0))?,
            };
            Ok(Resolved {
                label: real.display().to_string(),
                anchor,
                below,
                identity: None,
                policy,
            })
        }
    }
}

fn wire_kind(k: fsops::FsErrorKind) -> FsErrorKind {
    use fsops::FsErrorKind as K;
    match k {
        K::PathTraversal => FsErrorKind::PathTraversal,
        K::NotFound => FsErrorKind::NotFound,
        K::NotADirectory => FsErrorKind::NotADirectory,
        K::IsADirectory => FsErrorKind::IsADirectory,
        K::Exists => FsErrorKind::Exists,
        K::Denied => FsErrorKind::Denied,
        K::DeniedExtension => FsErrorKind::DeniedExtension,
        K::TooLarge => FsErrorKind::TooLarge,
        K::QuotaExceeded => FsErrorKind::QuotaExceeded,
        K::Io(errno) => FsErrorKind::Io { errno },
    }
}

fn wire_entry(e: Entry) -> FsEntry {
    FsEntry {
        path: e.path,
        kind: match e.kind {
            EntryKind::File => FsEntryKind::File,
            EntryKind::Dir => FsEntryKind::Dir,
            EntryKind::Symlink => FsEntryKind::Symlink,
            EntryKind::Other => FsEntryKind::Other,
        },
        size: e.size,
        mode: e.mode,
        mtime_ns: e.mtime_ns,
        uid: e.uid,
        gid: e.gid,
        nlink: e.nlink,
    }
}

/// What the identity thread hands back.
enum Done {
    Reply(FsReply),
    /// A read of at most one chunk, done on the identity thread.
    Small {
        data: Vec<u8>,
        offset: u64,
        size: u64,
    },
    /// A larger read: streamed from the open descriptor off the identity thread.
    Read(fsops::ReadHandle),
    Listing(fsops::Listing),
}

/// Serve one `Fs` request: authorize, run, reply, audit. Never panics on client input.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    service: Arc<FsService>,
    launcher: Arc<job::Launcher>,
    profiles: Arc<ProfileSet>,
    job_files: Option<JobFiles>,
    caller: Caller,
    tx: mpsc::Sender<ServerMessage>,
    request: RequestId,
    target: FsTarget,
    op: FsOp,
) {
    let resolved = match authorize(&service, job_files, &launcher, &profiles, caller, &target) {
        Ok(r) => r,
        Err((kind, message)) => {
            tracing::warn!(
                client_uid = caller.uid,
                client_pid = caller.pid,
                op = op.name(),
                "fs request refused: {message}"
            );
            let _ = tx
                .send(ServerMessage::Error {
                    request: Some(request),
                    kind,
                    message,
                })
                .await;
            return;
        }
    };
    let audit = AuditInfo::of(&op);
    let label = resolved.label.clone();
    let outcome = run(&service, resolved, op).await;
    let result = match &outcome {
        Ok(_) => "ok",
        Err(e) => wire_kind(e.kind).as_str(),
    };
    if let Some(a) = audit {
        tracing::info!(
            target: "stockade::fs_audit",
            client_uid = caller.uid,
            client_pid = caller.pid,
            workspace = %label,
            op = a.op,
            path = %a.path,
            to = a.to.as_deref(),
            bytes = a.bytes,
            result,
            error = outcome.as_ref().err().map(|e| e.message.as_str()),
            "fs"
        );
    }
    match outcome {
        Err(e) => {
            let _ = tx
                .send(ServerMessage::FsError {
                    request,
                    kind: wire_kind(e.kind),
                    message: e.message,
                })
                .await;
        }
        Ok(Done::Reply(reply)) => {
            let _ = tx.send(ServerMessage::FsDone { request, reply }).await;
        }
        Ok(Done::Listing(listing)) => send_listing(&tx, request, listing).await,
        Ok(Done::Small { data, offset, size }) => {
            let bytes = data.len() as u64;
            if bytes > 0 {
                let _ = tx
                    .send(ServerMessage::FsData {
                        request,
                        offset,
                        data,
                    })
                    .await;
            }
            let reply = FsReply::Read { bytes, size };
            let _ = tx.send(ServerMessage::FsDone { request, reply }).await;
        }
        Ok(Done::Read(handle)) => {
            // The permission check happened at open, on the job's identity; streaming from the
            // open descriptor needs no identity, so it does not hold up the identity's thread.
            let _ = tokio::task::spawn_blocking(move || stream_read(&tx, request, handle)).await;
        }
    }
}

struct AuditInfo {
    op: &'static str,
    path: String,
    to: Option<String>,
    bytes: Option<u64>,
}

impl AuditInfo {
    /// Modifying operations are audited; reads, listings and stats are not.
    fn of(op: &FsOp) -> Option<AuditInfo> {
        let (path, to, bytes) = match op {
            FsOp::Write { path, data, .. } | FsOp::Append { path, data } => {
                (path, None, Some(data.len() as u64))
            }
            FsOp::Mkdir { path, .. } | FsOp::Remove { path, .. } => (path, None, None),
            FsOp::Rename { from, to, .. } => (from, Some(to.clone()), None),
            FsOp::Read { .. } | FsOp::List { .. } | FsOp::Stat { .. } => return None,
        };
        Some(AuditInfo {
            op: op.name(),
            path: path.clone(),
            to,
            bytes,
        })
    }
}

async fn run(service: &FsService, r: Resolved, op: FsOp) -> Result<Done, FsError> {
    let method = service.method;
    // Open the workspace root as the daemon (an O_PATH descriptor needs no permission), beneath
    // its trusted anchor with no symlink on the way; learn its owner if the target is a path.
    let (anchor, below, policy) = (r.anchor.clone(), r.below.clone(), r.policy);
    // A few metadata system calls on a local directory: done inline rather than paying a
    // thread hop per operation (measured: see docs/benchmarks.md).
    let ws = Workspace::open(&anchor, &below, method, policy)?;
    let (uid, gid) = match r.identity {
        Some(ids) => ids,
        None => ws.owner()?,
    };
    if uid == 0 || gid == 0 {
        return Err(FsError::new(
            fsops::FsErrorKind::Denied,
            r.label,
            &format!(
                "the workspace is owned by uid {uid} gid {gid}; file operations never run as root \
                 (chown it to the job's uid)"
            ),
        ));
    }
    let thread = service.thread(uid, gid).map_err(|e| internal(&e))?;
    let (done_tx, done_rx) = oneshot::channel();
    let submitted = thread.submit(move || {
        let _ = done_tx.send(execute(&ws, op));
    });
    if submitted.is_err() {
        service.forget_thread(uid, gid);
        return Err(internal(&format!(
            "the file-operation thread of uid {uid} is gone"
        )));
    }
    match done_rx.await {
        Ok(r) => r,
        Err(_) => {
            // The closure never answered: the thread panicked. Start a fresh one next time.
            service.forget_thread(uid, gid);
            Err(internal("the file operation panicked"))
        }
    }
}

fn internal(msg: &str) -> FsError {
    FsError::new(fsops::FsErrorKind::Io(libc::EIO), "(daemon)", msg)
}

/// Runs on the identity thread.
fn execute(ws: &Workspace, op: FsOp) -> Result<Done, FsError> {
    Ok(match op {
        FsOp::Read { path, offset, len } => {
            let h = ws.open_read(&path, offset, len)?;
            if h.len > FS_CHUNK as u64 {
                return Ok(Done::Read(h));
            }
            let mut data = vec![0u8; h.len as usize];
            let mut got = 0;
            while got < data.len() {
                match h.read_chunk(offset + got as u64, &mut data[got..]) {
                    Ok(0) => break, // the file shrank meanwhile: send what there was
                    Ok(n) => got += n,
                    Err(e) => {
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        return Err(FsError::new(
                            fsops::FsErrorKind::Io(errno),
                            &path,
                            &format!("read at offset {}: {e}", offset + got as u64),
                        ));
                    }
                }
            }
            data.truncate(got);
            Done::Small {
                data,
                offset,
                size: h.size,
            }
        }
        FsOp::Write {
            path,
            data,
            atomic,
            mode,
        } => {
            let bytes = ws.write(&path, &data, WriteOptions { atomic, mode })?;
            Done::Reply(FsReply::Written { bytes, size: bytes })
        }
        FsOp::Append { path, data } => {
            let size = ws.append(&path, &data)?;
            Done::Reply(FsReply::Written {
                bytes: data.len() as u64,
                size,
            })
        }
        FsOp::List { path, recursive } => Done::Listing(ws.list(&path, recursive)?),
        FsOp::Stat { path } => Done::Reply(FsReply::Stat {
            entry: wire_entry(ws.stat(&path)?),
        }),
        FsOp::Mkdir {
            path,
            parents,
            mode,
        } => Done::Reply(FsReply::Created {
            created: ws.mkdir(&path, parents, mode)?,
        }),
        FsOp::Remove { path, recursive } => Done::Reply(FsReply::Removed {
            entries: ws.remove(&path, recursive)?,
        }),
        FsOp::Rename {
            from,
            to,
            overwrite,
        } => {
            ws.rename(&from, &to, overwrite)?;
            Done::Reply(FsReply::Renamed)
        }
    })
}

async fn send_listing(tx: &mpsc::Sender<ServerMessage>, request: RequestId, l: fsops::Listing) {
    let count = l.entries.len() as u64;
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for e in l.entries {
        bytes += e.path.len() + 64;
        chunk.push(wire_entry(e));
        if bytes >= ENTRIES_CHUNK_BYTES {
            let entries = std::mem::take(&mut chunk);
            bytes = 0;
            if tx
                .send(ServerMessage::FsEntries { request, entries })
                .await
                .is_err()
            {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx
            .send(ServerMessage::FsEntries {
                request,
                entries: chunk,
            })
            .await;
    }
    let reply = FsReply::Listed {
        count,
        truncated: l.truncated,
    };
    let _ = tx.send(ServerMessage::FsDone { request, reply }).await;
}

/// Blocking: pread chunks and send them (the channel's bound is the backpressure).
fn stream_read(tx: &mpsc::Sender<ServerMessage>, request: RequestId, h: fsops::ReadHandle) {
    let mut sent = 0u64;
    let mut buf = vec![0u8; FS_CHUNK];
    while sent < h.len {
        let want = (h.len - sent).min(FS_CHUNK as u64) as usize;
        let offset = h.offset + sent;
        match h.read_chunk(offset, &mut buf[..want]) {
            Ok(0) => break, // the file shrank meanwhile: send what there was
            Ok(n) => {
                let msg = ServerMessage::FsData {
                    request,
                    offset,
                    data: buf[..n].to_vec(),
                };
                if tx.blocking_send(msg).is_err() {
                    return;
                }
                sent += n as u64;
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let _ = tx.blocking_send(ServerMessage::FsError {
                    request,
                    kind: FsErrorKind::Io { errno },
                    message: format!("read at offset {offset}: {e}"),
                });
                return;
            }
        }
    }
    let _ = tx.blocking_send(ServerMessage::FsDone {
        request,
        reply: FsReply::Read {
            bytes: sent,
            size: h.size,
        },
    });
}
