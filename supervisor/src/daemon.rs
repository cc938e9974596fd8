//! `stockade serve`: the daemon. Shaped like mini-redis: a listener (accept loop, connection cap,
//! peer credentials), one handler per connection, a shutdown signal, and [`run`] taking a bound
//! listener so tests can serve on a temporary socket.

use std::collections::HashMap;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use stockade_profiles::ProfileSet;
use stockade_protocol::{
    write_frame, ClientMessage, ErrorKind, FrameReader, FsOp, FsTarget, JobId, JobRequest,
    JobSummary, LostJob, RequestId, ServerMessage, PROTOCOL_VERSION,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::cli::{init_tracing, ServeArgs};
use crate::fs_service::{self, FsService, JobFiles};
use crate::recovery::{self, Journal};
use crate::{config, job};

/// Most connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 256;
/// Messages queued for one connection's writer before job output waits (backpressure).
const CONNECTION_QUEUE: usize = 64;

pub fn main(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing("info");
    config::require_root("stockade serve")?;
    // Checks without side effects first, then the socket (refuses a live daemon's), then the
    // state directory: a refused start leaves nothing behind.
    let profiles = config::load_profiles(a.profiles.as_deref())?;
    let mut launcher = config::launcher(&a.host, a.state_dir.join("workspaces"))?;
    let roots = job::workspace_roots(&a.workspace_roots).map_err(anyhow::Error::msg)?;
    launcher.workspace_roots = Some(roots);
    let listener = bind(&a.socket)?;
    // The state directory's lock refuses a second daemon on it; then jobs an earlier instance
    // left running are killed and cleaned up before any new job starts (see recovery.rs).
    // Clients that connect meanwhile wait in the accept queue.
    let recovered = prepare_state_dir(&a.state_dir)
        .and_then(|()| Journal::open(&a.state_dir))
        .and_then(|journal| {
            let now = journal.recover(&launcher.cgroups)?;
            let lost = journal.load_lost()?;
            Ok((journal, now.len(), lost))
        });
    let (journal, recovered_now, lost) = match recovered {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_file(&a.socket);
            return Err(e);
        }
    };
    if recovered_now > 0 {
        tracing::warn!(
            jobs = recovered_now,
            "recovered jobs lost in a crash of the previous daemon"
        );
    }
    tracing::info!(
        profiles = %profiles.names().join(","),
        source = profiles.source(),
        cgroups = %launcher.cgroups.layout().describe(),
        "starting"
    );
    crate::reaper::become_subreaper()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(async move {
        tokio::spawn(crate::reaper::run());
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        tracing::info!(socket = %a.socket.display(), "listening");
        let shared = Arc::new(
            Shared::new(Arc::new(launcher), Arc::new(profiles)).with_journal(journal, lost),
        );
        tokio::spawn(crate::reload::on_sighup(shared.clone(), a.profiles.clone()));
        run(listener, shared, shutdown_signal()).await;
        let _ = std::fs::remove_file(&a.socket);
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })?;
    drop(rt);
    crate::reaper::reap_remaining(std::time::Duration::from_secs(2));
    tracing::info!("stopped");
    Ok(code)
}

/// Create the state directory (root-only) and its world-traversable `workspaces/`.
fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create state directory {}", dir.display()))?;
    let ws = dir.join("workspaces");
    match std::fs::DirBuilder::new().mode(0o711).create(&ws) {
        Ok(()) => {}
        Err(e) if e.kind() == IoKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("create {}", ws.display())),
    }
    // Jobs must reach their own workspace under it, and list nothing else.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("chmod 0711 {}", dir.display()))?;
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("chmod 0711 {}", ws.display()))?;
    Ok(())
}

/// Bind the socket: refuse a path a live daemon answers on or that is not a socket; replace a
/// stale socket left by a dead daemon. Mode 0660.
pub fn bind(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("create socket directory {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == IoKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("socket path {}", path.display())),
        Ok(m) if !m.file_type().is_socket() => {
            bail!(
                "socket path {} exists and is not a socket; remove it or pick another --socket",
                path.display()
            )
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "socket path {} is in use: a running daemon answers on it",
                path.display()
            ),
            Err(e) if e.kind() == IoKind::ConnectionRefused => {
                tracing::warn!(socket = %path.display(), "replacing a stale socket left by a daemon that is gone");
                std::fs::remove_file(path)
                    .with_context(|| format!("remove stale socket {}", path.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("probe existing socket {}", path.display()))
            }
        },
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    launcher: Arc<job::Launcher>,
    /// Replaced whole on SIGHUP ([`crate::reload`]); each job keeps the set it started with.
    profiles: std::sync::RwLock<Arc<ProfileSet>>,
    jobs: Mutex<HashMap<JobId, Running>>,
    /// Where running jobs are recorded for crash recovery (`None`: not recorded, tests only).
    journal: Option<Journal>,
    /// Jobs lost in crashes of earlier instances, oldest first.
    lost: Vec<LostJob>,
    /// File operations in workspaces (identity threads, finished jobs' workspaces).
    fs: Arc<FsService>,
    next_connection: AtomicU64,
    /// Set once on shutdown: connections stop reading requests.
    stopping: watch::Sender<bool>,
}

#[derive(Debug)]
struct Running {
    owner_uid: u32,
    connection: u64,
    profile: String,
    argv: Vec<String>,
    started: Instant,
    cancel: job::CancelSender,
    /// Where its workspace is, for file operations (`None` if the request will be rejected).
    files: Option<JobFiles>,
}

impl Shared {
    pub fn new(launcher: Arc<job::Launcher>, profiles: Arc<ProfileSet>) -> Shared {
        Shared {
            launcher,
            profiles: std::sync::RwLock::new(profiles),
            jobs: Mutex::new(HashMap::new()),
            journal: None,
            lost: Vec::new(),
            fs: Arc::new(FsService::new()),
            next_connection: AtomicU64::new(1),
            stopping: watch::channel(false).0,
        }
    }

    /// Record running jobs in `journal`, and answer `ListLost` from `lost`.
    pub fn with_journal(mut self, journal: Journal, lost: Vec<LostJob>) -> Shared {
        self.journal = Some(journal);
        self.lost = lost;
        self
    }

    /// The current profile set.
    pub fn profiles(&self) -> Arc<ProfileSet> {
        // Only ever replaced whole: a poisoned lock still holds a complete set.
        self.profiles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swap in a new, fully validated profile set.
    pub fn replace_profiles(&self, set: Arc<ProfileSet>) {
        *self.profiles.write().unwrap_or_else(|p| p.into_inner()) = set;
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Running>> {
        // A panic while holding the lock leaves the map consistent (single inserts/removes).
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a job in the journal before anything is created for it. A job that cannot be
    /// recorded does not run: after a crash nobody could clean up after it.
    fn record_start(
        &self,
        id: &str,
        owner_uid: u32,
        req: &JobRequest,
    ) -> Result<(), Box<stockade_protocol::ResultRecord>> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let entry = recovery::JobEntry {
            version: recovery::RECORD_VERSION,
            job: id.to_string(),
            owner_uid,
            profile: req.profile.clone(),
            argv: req.argv.clone(),
            cgroup_parent: self.launcher.cgroups.parent().display().to_string(),
            workspace: req
                .workspace
                .is_none()
                .then(|| job::fresh_workspace_path(&self.launcher.scratch_root, id)),
            started_unix_ms: recovery::now_unix_ms(),
            daemon_pid: std::process::id(),
        };
        journal.begin(&entry).map_err(|e| {
            Box::new(job::failed_before_start(
                id,
                &req.profile,
                "record-job",
                "write(state dir jobs/)",
                &e,
            ))
        })
    }

    /// Forget a finished job, unless its cgroup or fresh workspace is still there (a cleanup
    /// error was logged): then the record stays, and the next start cleans up and reports it.
    fn record_end(&self, id: &str) {
        let Some(journal) = &self.journal else {
            return;
        };
        let cgroup_left = self.launcher.cgroups.open(id).is_ok();
        let ws = job::fresh_workspace_path(&self.launcher.scratch_root, id);
        if cgroup_left || ws.exists() {
            tracing::error!(
                job = id,
                cgroup_left,
                workspace_left = ws.exists(),
                "job left something behind; its record stays for the next start to clean up"
            );
            return;
        }
        if let Err(e) = journal.end(id) {
            tracing::error!(job = id, "{e}");
        }
    }

    fn has_jobs(&self, connection: u64) -> bool {
        self.jobs().values().any(|r| r.connection == connection)
    }

    fn cancel_connection(&self, connection: u64) {
        for r in self.jobs().values().filter(|r| r.connection == connection) {
            let _ = r.cancel.send(true);
        }
    }
}

/// Serve until `shutdown` resolves, then cancel every job and wait for their results.
pub async fn run(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Every job and connection task holds a clone; when all are dropped, everything has ended.
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::error!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            Handler::new(shared, stream, alive).serve().await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = shared.stopping.send(true);
    let running: Vec<_> = shared.jobs().keys().cloned().collect();
    if !running.is_empty() {
        tracing::info!(jobs = running.len(), "canceling running jobs");
    }
    for r in shared.jobs().values() {
        let _ = r.cancel.send(true);
    }
    drop(alive);
    let _ = all_done.recv().await;
}

/// One connection.
struct Handler {
    shared: Arc<Shared>,
    id: u64,
    uid: u32,
    pid: Option<i32>,
    reader: FrameReader<tokio::net::unix::OwnedReadHalf>,
    tx: mpsc::Sender<ServerMessage>,
    alive: mpsc::Sender<()>,
}

impl Handler {
    fn new(shared: Arc<Shared>, stream: UnixStream, alive: mpsc::Sender<()>) -> Handler {
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        // SO_PEERCRED: the kernel's word for who connected. Unknown peers get uid u32::MAX, which
        // owns nothing and is nobody's.
        let cred = stream.peer_cred().ok();
        let uid = cred.map(|c| c.uid()).unwrap_or(u32::MAX);
        let pid = cred.and_then(|c| c.pid());
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<ServerMessage>(CONNECTION_QUEUE);
        let writer_alive = alive.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let Err(e) = write_frame(&mut wr, &msg).await {
                    tracing::debug!(connection = id, "client went away: {e}");
                    break;
                }
            }
            drop(writer_alive);
        });
        Handler {
            shared,
            id,
            uid,
            pid,
            reader: FrameReader::new(rd),
            tx,
            alive,
        }
    }

    async fn send(&self, msg: ServerMessage) {
        let _ = self.tx.send(msg).await;
    }

    async fn error(&self, request: Option<RequestId>, kind: ErrorKind, message: String) {
        self.send(ServerMessage::Error {
            request,
            kind,
            message,
        })
        .await;
    }

    async fn serve(mut self) {
        tracing::debug!(connection = self.id, uid = self.uid, "connected");
        if self.handshake().await {
            loop {
                let mut stopping = self.shared.stopping.subscribe();
                let next = tokio::select! {
                    // FrameReader::next is cancel-safe: nothing is lost by dropping it here.
                    n = self.reader.next::<ClientMessage>() => Some(n),
                    _ = stopping.wait_for(|s| *s) => None,
                };
                let Some(next) = next else {
                    // Jobs of this connection are being canceled: their results follow, then the
                    // connection closes. Only an idle connection is told why it is closed, so a
                    // connection-level error never overtakes a job's result.
                    if !self.shared.has_jobs(self.id) {
                        let msg = "the daemon is shutting down".to_string();
                        self.error(None, ErrorKind::Internal, msg).await;
                    }
                    break;
                };
                match next {
                    Ok(Some(msg)) => self.dispatch(msg).await,
                    Ok(None) => break,
                    Err(e) => {
                        // After a bad frame the stream cannot be resynchronised: say why, close.
                        tracing::warn!(connection = self.id, uid = self.uid, "bad frame: {e}");
                        self.error(None, ErrorKind::BadFrame, e.to_string()).await;
                        break;
                    }
                }
            }
        }
        // A client that goes away takes its jobs with it (their results have nowhere to go).
        self.shared.cancel_connection(self.id);
        tracing::debug!(connection = self.id, "disconnected");
    }

    async fn handshake(&mut self) -> bool {
        match self.reader.next::<ClientMessage>().await {
            Ok(Some(ClientMessage::Hello { version, client })) if version == PROTOCOL_VERSION => {
                tracing::debug!(connection = self.id, client, "hello");
                let server = format!("stockade/{}", env!("CARGO_PKG_VERSION"));
                self.send(ServerMessage::Hello {
                    version: PROTOCOL_VERSION,
                    server,
                })
                .await;
                true
            }
            Ok(Some(ClientMessage::Hello { version, .. })) => {
                let msg = format!("protocol version {version} is not supported (this server speaks {PROTOCOL_VERSION})");
                self.error(None, ErrorKind::UnsupportedVersion, msg).await;
                false
            }
            Ok(Some(_)) => {
                self.error(
                    None,
                    ErrorKind::Handshake,
                    "the first message must be hello".into(),
                )
                .await;
                false
            }
            Ok(None) => false,
            Err(e) => {
                self.error(None, ErrorKind::BadFrame, e.to_string()).await;
                false
            }
        }
    }

    async fn dispatch(&mut self, msg: ClientMessage) {
        match msg {
            ClientMessage::Hello { .. } => {
                self.error(
                    None,
                    ErrorKind::Handshake,
                    "hello was already sent on this connection".into(),
                )
                .await;
            }
            ClientMessage::Submit { request, job } => self.submit(request, job).await,
            ClientMessage::Fs {
                request,
                target,
                op,
            } => self.fs(request, target, op),
            ClientMessage::Cancel { request, job } => {
                let found = {
                    let jobs = self.shared.jobs();
                    match jobs.get(&job) {
                        // A client sees and cancels only its own jobs; root sees all.
                        Some(r) if r.owner_uid == self.uid || self.uid == 0 => {
                            let _ = r.cancel.send(true);
                            true
                        }
                        _ => false,
                    }
                };
                if found {
                    tracing::info!(connection = self.id, uid = self.uid, job, "cancel");
                    self.send(ServerMessage::Canceled { request, job }).await;
                } else {
                    self.error(
                        Some(request),
                        ErrorKind::UnknownJob,
                        format!("no running job {job} of yours"),
                    )
                    .await;
                }
            }
            ClientMessage::List { request } => {
                let jobs = self
                    .shared
                    .jobs()
                    .iter()
                    .filter(|(_, r)| r.owner_uid == self.uid || self.uid == 0)
                    .map(|(id, r)| JobSummary {
                        job: id.clone(),
                        profile: r.profile.clone(),
                        argv: r.argv.clone(),
                        owner_uid: r.owner_uid,
                        running_ms: r.started.elapsed().as_millis() as u64,
                    })
                    .collect();
                self.send(ServerMessage::Jobs { request, jobs }).await;
            }
            ClientMessage::ListLost { request } => {
                // A lost job whose record was unreadable has no known owner: root only.
                let jobs = self
                    .shared
                    .lost
                    .iter()
                    .filter(|l| l.owner_uid == Some(self.uid) || self.uid == 0)
                    .cloned()
                    .collect();
                self.send(ServerMessage::LostJobs { request, jobs }).await;
            }
        }
    }

    /// A file operation runs in its own task: a long read does not hold up this connection.
    fn fs(&self, request: RequestId, target: FsTarget, op: FsOp) {
        // A running job's workspace, if the target is one of this client's (root: any) jobs.
        let running = match &target {
            FsTarget::Job { job } => self
                .shared
                .jobs()
                .get(job)
                .filter(|r| r.owner_uid == self.uid || self.uid == 0)
                .and_then(|r| r.files.clone()),
            FsTarget::Workspace { .. } => None,
        };
        let caller = fs_service::Caller {
            uid: self.uid,
            pid: self.pid,
        };
        tokio::spawn(fs_service::handle(
            self.shared.fs.clone(),
            self.shared.launcher.clone(),
            self.shared.profiles(),
            running,
            caller,
            self.tx.clone(),
            request,
            target,
            op,
        ));
    }

    async fn submit(&mut self, request: RequestId, req: JobRequest) {
        let id = job::new_job_id();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let files = fs_service::job_files(
            &self.shared.launcher,
            &self.shared.profiles(),
            &id,
            self.uid,
            &req,
        );
        self.shared.jobs().insert(
            id.clone(),
            Running {
                owner_uid: self.uid,
                connection: self.id,
                profile: req.profile.clone(),
                argv: req.argv.clone(),
                started: Instant::now(),
                cancel: cancel_tx,
                files,
            },
        );
        tracing::info!(connection = self.id, uid = self.uid, job = %id, profile = %req.profile, argv = ?req.argv, "submit");
        self.send(ServerMessage::Accepted {
            request,
            job: id.clone(),
        })
        .await;

        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let alive = self.alive.clone();
        let owner_uid = self.uid;
        tokio::spawn(async move {
            let (out_tx, mut out_rx) = mpsc::channel::<job::Output>(16);
            let forward = {
                let tx = tx.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    while let Some(o) = out_rx.recv().await {
                        let msg = ServerMessage::Output {
                            job: id.clone(),
                            stream: o.stream,
                            data: o.data,
                        };
                        if tx.send(msg).await.is_err() {
                            // Connection gone: keep receiving so the job's pipes keep draining.
                            while out_rx.recv().await.is_some() {}
                        }
                    }
                })
            };
            let record = match shared.record_start(&id, owner_uid, &req) {
                Ok(()) => {
                    let profiles = shared.profiles();
                    let rec = job::run(
                        shared.launcher.clone(),
                        id.clone(),
                        &profiles,
                        req,
                        out_tx,
                        cancel_rx,
                    )
                    .await;
                    shared.record_end(&id);
                    rec
                }
                Err(rec) => {
                    drop(out_tx);
                    *rec
                }
            };
            let _ = forward.await;
            let ended = shared.jobs().remove(&id);
            shared.fs.job_ended(&id, ended.and_then(|r| r.files));
            tracing::info!(job = %id, cause = ?record.cause, wall_ms = record.wall_ms, "result");
            let _ = tx.send(ServerMessage::Result { job: id, record }).await;
            drop(alive);
        });
    }
}
