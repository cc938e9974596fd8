//! File operations over the socket, against a real daemon on the real kernel (root): every
//! operation refuses every escape (`..`, absolute paths, symlinks out, symlink chains, magic
//! links, planted hardlinks) and leaves the host untouched, under both resolvers (`openat2`, and
//! the component walk for old kernels); a job swapping a directory for a symlink to `/` in a
//! tight loop never gets a read or write out; files belong to the job; writes are atomic; the
//! profile's policy and the authorization rules hold.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use stockade_protocol::{
    Client, ErrorKind, FsEntry, FsErrorKind, FsOp, FsReply, FsTarget, JobRequest, ResultRecord,
    ServerMessage,
};

/// The two resolvers: `openat2` (the default here) and the walk for kernels without it.
const RESOLVERS: [Option<&str>; 2] = [None, Some("walk")];

/// What came back for one operation.
#[derive(Debug)]
enum Reply {
    Done {
        reply: FsReply,
        data: Vec<u8>,
        entries: Vec<FsEntry>,
    },
    Fs(FsErrorKind, String),
    Server(ErrorKind, String),
}

impl Reply {
    fn fs_kind(&self) -> Option<FsErrorKind> {
        match self {
            Reply::Fs(k, _) => Some(*k),
            _ => None,
        }
    }

    fn data(self) -> Vec<u8> {
        match self {
            Reply::Done { data, .. } => data,
            other => panic!("expected success, got {other:?}"),
        }
    }

    fn ok(self) -> FsReply {
        match self {
            Reply::Done { reply, .. } => reply,
            other => panic!("expected success, got {other:?}"),
        }
    }
}

/// One client connection (jobs submitted on it end when it closes).
struct Conn {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Conn {
    fn new(d: &Daemon) -> Conn {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(Client::connect(&d.socket, "fs_ops-test"))
            .expect("connect to the test daemon");
        Conn { rt, client }
    }

    fn op(&mut self, target: &FsTarget, op: FsOp) -> Reply {
        let Conn { rt, client } = self;
        rt.block_on(async {
            let request = client.fs(target.clone(), op).await.unwrap();
            let (mut data, mut entries) = (Vec::new(), Vec::new());
            let mut first = None;
            loop {
                match client.recv().await.unwrap().expect("daemon closed") {
                    ServerMessage::FsData {
                        request: r,
                        offset,
                        data: d,
                    } if r == request => {
                        let base = *first.get_or_insert(offset);
                        assert_eq!(offset - base, data.len() as u64, "chunks arrive in order");
                        data.extend(d);
                    }
                    ServerMessage::FsEntries {
                        request: r,
                        entries: e,
                    } if r == request => entries.extend(e),
                    ServerMessage::FsDone { request: r, reply } if r == request => {
                        return Reply::Done {
                            reply,
                            data,
                            entries,
                        }
                    }
                    ServerMessage::FsError {
                        request: r,
                        kind,
                        message,
                    } if r == request => return Reply::Fs(kind, message),
                    ServerMessage::Error {
                        request: Some(r),
                        kind,
                        message,
                    } if r == request => return Reply::Server(kind, message),
                    _ => {} // job output and results of other requests
                }
            }
        })
    }

    /// Submit a job of profile `t` and wait until it printed `ready` (if `ready`); its id.
    fn submit(&mut self, workspace: Option<&Path>, script: &str, ready: bool) -> String {
        self.submit_as(PROFILE, workspace, script, ready)
    }

    fn submit_as(
        &mut self,
        profile: &str,
        workspace: Option<&Path>,
        script: &str,
        ready: bool,
    ) -> String {
        let Conn { rt, client } = self;
        rt.block_on(async {
            let req = JobRequest {
                profile: profile.into(),
                argv: vec!["sh".into(), "-c".into(), script.into()],
                workspace: workspace.map(|w| w.display().to_string()),
                ..JobRequest::default()
            };
            let request = client.submit(req).await.unwrap();
            let mut id = None;
            let mut out = Vec::new();
            loop {
                match client.recv().await.unwrap().expect("daemon closed") {
                    ServerMessage::Accepted { request: r, job } if r == request => {
                        if !ready {
                            return job;
                        }
                        id = Some(job);
                    }
                    ServerMessage::Output { job, data, .. } if Some(&job) == id.as_ref() => {
                        out.extend(data);
                        if String::from_utf8_lossy(&out).contains("ready") {
                            return job;
                        }
                    }
                    ServerMessage::Result { job, record } if Some(&job) == id.as_ref() => {
                        panic!(
                            "job ended before it was ready: {record:?}\n{}",
                            String::from_utf8_lossy(&out)
                        )
                    }
                    ServerMessage::Error { message, .. } => panic!("submit refused: {message}"),
                    _ => {}
                }
            }
        })
    }

    fn wait_result(&mut self, id: &str) -> ResultRecord {
        let Conn { rt, client } = self;
        rt.block_on(async {
            loop {
                match client.recv().await.unwrap().expect("daemon closed") {
                    ServerMessage::Result { job, record } if job == id => return record,
                    _ => {}
                }
            }
        })
    }

    fn cancel(&mut self, id: &str) -> ResultRecord {
        let Conn { rt, client } = self;
        rt.block_on(client.cancel(id)).unwrap();
        self.wait_result(id)
    }
}

fn job(id: &str) -> FsTarget {
    FsTarget::Job { job: id.into() }
}

fn at(ws: &Path) -> FsTarget {
    FsTarget::Workspace {
        path: ws.display().to_string(),
        profile: None,
    }
}

fn read(p: &str) -> FsOp {
    FsOp::Read {
        path: p.into(),
        offset: 0,
        len: None,
    }
}

fn write(p: &str, data: &[u8], atomic: bool) -> FsOp {
    FsOp::Write {
        path: p.into(),
        data: data.to_vec(),
        atomic,
        mode: None,
    }
}

fn append(p: &str, data: &[u8]) -> FsOp {
    FsOp::Append {
        path: p.into(),
        data: data.to_vec(),
    }
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
}

/// A workspace below the daemon's workspace root (the test dir), owned by the job's uid.
fn workspace(env: &TestEnv, name: &str) -> PathBuf {
    let ws = env.dir.path().join(name);
    std::fs::create_dir(&ws).unwrap();
    chown(&ws, env.uid);
    chmod(&ws, 0o700);
    ws
}

fn start(env: &TestEnv, resolver: Option<&str>) -> Daemon {
    match resolver {
        None => Daemon::start(env),
        Some(r) => Daemon::start_with(env, &[("STOCKADE_TEST_FS_RESOLVER", r)]),
    }
}

fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn every_op_refuses_every_escape_and_leaves_the_host_untouched() {
    if !require_root("every_op_refuses_every_escape_and_leaves_the_host_untouched") {
        return;
    }
    let env = TestEnv::new("fs-escape", 61201);
    env.write_profile(
        "weak",
        &(profile_toml("fs-escape", env.uid, &ProfileOpts::default())
            + "\n[namespaces]\nmount = false\n\n[mechanisms]\nlandlock = \"off\"\n"),
    );
    let shadow_before = std::fs::read("/etc/shadow").unwrap();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let probe = format!("stockade-fs-probe-{}", std::process::id());
    for resolver in RESOLVERS {
        let tag = resolver.unwrap_or("openat2");
        let d = start(&env, resolver);
        let ws = workspace(&env, &format!("ws-{tag}"));
        // Outside: owned by the job's uid and open to it, so only path resolution keeps it out.
        let outside = env.dir.path().join(format!("outside-{tag}"));
        std::fs::create_dir(&outside).unwrap();
        chown(&outside, env.uid);
        let secret = outside.join("secret");
        std::fs::write(&secret, "HOST-SECRET").unwrap();
        chown(&secret, env.uid);
        let o = outside.display().to_string();

        // The job plants its symlinks itself.
        let mut c = Conn::new(&d);
        let plant = format!(
            "set -e; echo inside > inside.txt; ln -s /etc/shadow shadow; ln -s {o} out_dir; \
             ln -s ../outside-{tag} out_rel; ln -s chain2 chain1; ln -s chain3 chain2; \
             ln -s ../outside-{tag}/secret chain3; ln -s out_rel chain_dir; \
             ln -s /proc/self/root magic; ln -s ../../../../../../../proc/self/root procrel"
        );
        let id = c.submit(Some(&ws), &plant, false);
        let rec = c.wait_result(&id);
        assert_eq!(rec.exit_code, 0, "planting job: {rec:?}");
        // A hardlink to a host file. Under the default confinement a job has no host file to
        // link (its root holds only its workspace), so a job of a weaker profile (no mount
        // namespace, no Landlock) plants it; the rule must hold whatever the job's profile.
        let weak = c.submit_as("weak", Some(&ws), &format!("ln {o}/secret hardlink"), false);
        let rec = c.wait_result(&weak);
        assert_eq!(rec.exit_code, 0, "hardlink-planting job: {rec:?}");
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 2);
        let t = at(&ws);
        let traversal = |r: Reply, what: &str| {
            assert_eq!(
                r.fs_kind(),
                Some(FsErrorKind::PathTraversal),
                "{tag}: {what}: {r:?}"
            );
        };
        let files = [
            "../outside/secret".to_string(),
            format!("{o}/secret"),
            "shadow".into(),
            "out_dir/secret".into(),
            "out_rel/secret".into(),
            "chain1".into(),
            "chain_dir/secret".into(),
            "magic/etc/passwd".into(),
            "procrel/etc/passwd".into(),
            "hardlink".into(),
            "/proc/self/root/etc/passwd".into(),
            "inside.txt\0/../x".into(),
            "x".repeat(256),
            "a/".repeat(2048),
        ];
        for f in &files {
            traversal(c.op(&t, read(f)), &format!("read {f}"));
            traversal(c.op(&t, write(f, b"PWNED", true)), &format!("write {f}"));
            traversal(
                c.op(&t, write(f, b"PWNED", false)),
                &format!("write in place {f}"),
            );
            traversal(c.op(&t, append(f, b"PWNED")), &format!("append {f}"));
            traversal(
                c.op(&t, FsOp::Stat { path: f.clone() }),
                &format!("stat {f}"),
            );
        }
        let dirs = [
            "..".to_string(),
            "../outside".into(),
            o.clone(),
            "out_dir".into(),
            "out_rel".into(),
            "chain_dir".into(),
            "magic".into(),
            "magic/etc".into(),
            "procrel".into(),
            "magic/tmp".into(),
        ];
        for dir in &dirs {
            for recursive in [false, true] {
                let op = FsOp::List {
                    path: dir.clone(),
                    recursive,
                };
                traversal(c.op(&t, op), &format!("ls {dir}"));
            }
            for parents in [false, true] {
                let op = FsOp::Mkdir {
                    path: format!("{dir}/{probe}"),
                    parents,
                    mode: None,
                };
                traversal(c.op(&t, op), &format!("mkdir {dir}/{probe}"));
            }
            let op = FsOp::Rename {
                from: "inside.txt".into(),
                to: format!("{dir}/{probe}"),
                overwrite: true,
            };
            traversal(c.op(&t, op), &format!("mv inside.txt {dir}"));
        }
        let through = [
            "../outside/secret".to_string(),
            format!("{o}/secret"),
            "out_dir/secret".into(),
            "out_rel/secret".into(),
            "chain_dir/secret".into(),
            "magic/etc/passwd".into(),
            "..".into(),
            "/etc".into(),
        ];
        for p in &through {
            for recursive in [false, true] {
                let op = FsOp::Remove {
                    path: p.clone(),
                    recursive,
                };
                traversal(c.op(&t, op), &format!("rm {p}"));
            }
            let op = FsOp::Rename {
                from: p.clone(),
                to: "stolen".into(),
                overwrite: false,
            };
            traversal(c.op(&t, op), &format!("mv {p} stolen"));
        }
        match c.op(&t, read("shadow")) {
            Reply::Fs(FsErrorKind::PathTraversal, m) => assert_eq!(
                m,
                "shadow: resolves outside the workspace (an escaping symlink or a mount crossing)"
            ),
            other => panic!("{tag}: {other:?}"),
        }
        // Removing the planted hardlink's *name* is allowed: it touches no content.
        assert!(matches!(
            c.op(
                &t,
                FsOp::Remove {
                    path: "hardlink".into(),
                    recursive: false
                }
            )
            .ok(),
            FsReply::Removed { entries: 1 }
        ));
        // And what is inside still works through the same connection.
        assert_eq!(c.op(&t, read("inside.txt")).data(), b"inside\n");
        let log = d.log_text();
        assert!(
            log.contains("stockade::fs_audit")
                && log.contains("op=\"write\" path=shadow bytes=5 result=\"path_traversal\""),
            "{tag}: no audit event for a refused write:\n{log}"
        );
        drop(c);
        d.stop();

        assert_eq!(dir_names(&outside), ["secret"], "{tag}");
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "HOST-SECRET",
            "{tag}"
        );
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1, "{tag}");
        assert!(!ws.join("stolen").exists());
        for host in ["/etc", "/tmp", "/"] {
            assert!(
                !Path::new(host).join(&probe).exists(),
                "{tag}: {host}/{probe} created"
            );
        }
    }
    assert_eq!(std::fs::read("/etc/shadow").unwrap(), shadow_before);
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    env.finish();
}

/// Removes a host file of this test at the end, even on panic.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_job_swapping_a_directory_for_a_symlink_to_root_never_lets_a_read_or_write_out() {
    if !require_root(
        "a_job_swapping_a_directory_for_a_symlink_to_root_never_lets_a_read_or_write_out",
    ) {
        return;
    }
    const ROUNDS: usize = 10_000;
    let env = TestEnv::new("fs-race", 61200);
    // A host file the job's uid could write: only resolution protects it.
    let name = format!("stockade-fs-race-{}", std::process::id());
    let sentinel = Path::new("/tmp").join(&name);
    std::fs::write(&sentinel, "sentinel").unwrap();
    let _cleanup = RemoveOnDrop(sentinel.clone());
    chown(&sentinel, env.uid);
    chmod(&sentinel, 0o666);
    let host_hostname = std::fs::read("/etc/hostname").unwrap();
    let tmp_before: Vec<String> = dir_names(Path::new("/tmp"));

    for resolver in RESOLVERS {
        let tag = resolver.unwrap_or("openat2");
        let d = start(&env, resolver);
        let ws = workspace(&env, &format!("ws-{tag}"));
        for sub in ["d", "d/etc", "d/tmp"] {
            std::fs::create_dir(ws.join(sub)).unwrap();
            chown(&ws.join(sub), env.uid);
        }
        std::fs::write(ws.join("d/etc/hostname"), "inside\n").unwrap();
        chown(&ws.join("d/etc/hostname"), env.uid);

        let mut c = Conn::new(&d);
        // d alternates between the real directory and a symlink to / (rename is atomic).
        let swap = "perl -e 'symlink(\"/\", \"s\") or die \"symlink: $!\"; $| = 1; \
                    print \"ready\\n\"; while (1) { rename(\"d\", \"x\"); rename(\"s\", \"d\"); \
                    rename(\"d\", \"s\"); rename(\"x\", \"d\"); }'";
        let id = c.submit(Some(&ws), swap, true);
        let t = job(&id);
        let target = format!("d/tmp/{name}");
        let (mut read_ok, mut read_refused, mut write_ok, mut write_refused) = (0, 0, 0, 0);
        for i in 0..ROUNDS {
            match c.op(&t, read("d/etc/hostname")) {
                Reply::Done { data, .. } => {
                    assert_eq!(
                        data, b"inside\n",
                        "{tag} round {i}: a read returned host content"
                    );
                    read_ok += 1;
                }
                Reply::Fs(FsErrorKind::PathTraversal | FsErrorKind::NotFound, _) => {
                    read_refused += 1
                }
                other => panic!("{tag} round {i}: read: {other:?}"),
            }
            let op = match i % 3 {
                0 => write(&target, b"PWNED", true),
                1 => write(&target, b"PWNED", false),
                _ => append(&target, b"PWNED"),
            };
            match c.op(&t, op) {
                Reply::Done { .. } => write_ok += 1,
                Reply::Fs(FsErrorKind::PathTraversal | FsErrorKind::NotFound, _) => {
                    write_refused += 1
                }
                other => panic!("{tag} round {i}: write: {other:?}"),
            }
        }
        let rec = c.cancel(&id);
        assert_eq!(rec.cause, stockade_protocol::Cause::Canceled, "{rec:?}");
        eprintln!(
            "{tag}: reads ok {read_ok}, refused {read_refused}; writes ok {write_ok}, refused {write_refused}"
        );
        // The race really happened: both states of `d` were seen.
        assert!(
            read_ok > 0 && read_refused > 0,
            "{tag}: the swap was never observed"
        );
        assert!(
            write_ok > 0 && write_refused > 0,
            "{tag}: the swap was never observed"
        );
        assert_eq!(
            std::fs::read_to_string(&sentinel).unwrap(),
            "sentinel",
            "{tag}"
        );
        drop(c);
        d.stop();
    }
    assert_eq!(std::fs::read("/etc/hostname").unwrap(), host_hostname);
    let new_in_tmp: Vec<String> = dir_names(Path::new("/tmp"))
        .into_iter()
        .filter(|n| !tmp_before.contains(n) && n.starts_with(".stockade-tmp-"))
        .collect();
    assert!(
        new_in_tmp.is_empty(),
        "temporary files landed in the host's /tmp: {new_in_tmp:?}"
    );
    env.finish();
}

#[test]
fn files_belong_to_the_job_and_its_permission_bits_apply() {
    if !require_root("files_belong_to_the_job_and_its_permission_bits_apply") {
        return;
    }
    let env = TestEnv::new("fs-identity", 61202);
    let d = Daemon::start(&env);
    let mut c = Conn::new(&d);
    // A fresh workspace (created and owned by stockade for the job), addressed by job id.
    let id = c.submit(None, "echo ready; pwd > where; exec sleep 600", true);
    let t = job(&id);
    c.op(
        &t,
        FsOp::Mkdir {
            path: "a/b".into(),
            parents: true,
            mode: None,
        },
    )
    .ok();
    c.op(&t, write("a/b/new.txt", b"x", true)).ok();
    c.op(&t, write("inplace.txt", b"x", false)).ok();
    c.op(&t, append("log.txt", b"x")).ok();
    let ws = PathBuf::from(
        String::from_utf8(c.op(&t, read("where")).data())
            .unwrap()
            .trim(),
    );
    for p in ["a", "a/b", "a/b/new.txt", "inplace.txt", "log.txt"] {
        let m = std::fs::symlink_metadata(ws.join(p)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (env.uid, env.uid),
            "{p} is not owned by the job"
        );
    }
    let listing = match c.op(
        &t,
        FsOp::List {
            path: "".into(),
            recursive: true,
        },
    ) {
        Reply::Done {
            entries,
            reply:
                FsReply::Listed {
                    count,
                    truncated: false,
                },
            ..
        } => {
            assert_eq!(count as usize, entries.len());
            entries
        }
        other => panic!("{other:?}"),
    };
    assert!(listing.iter().all(|e| e.uid == env.uid), "{listing:?}");

    // A root-only file in the workspace: the job cannot read it, so neither can its client.
    std::fs::write(ws.join("root-only"), "root").unwrap();
    chmod(&ws.join("root-only"), 0o600);
    assert_eq!(
        c.op(&t, read("root-only")).fs_kind(),
        Some(FsErrorKind::Io {
            errno: libc::EACCES
        })
    );
    assert_eq!(
        c.op(&t, write("root-only", b"x", false)).fs_kind(),
        Some(FsErrorKind::Io {
            errno: libc::EACCES
        })
    );
    // A read-only file of the job: no in-place write, no append.
    c.op(
        &t,
        FsOp::Write {
            path: "ro".into(),
            data: b"ro".to_vec(),
            atomic: true,
            mode: Some(0o400),
        },
    )
    .ok();
    assert_eq!(
        std::fs::metadata(ws.join("ro"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o400
    );
    assert_eq!(
        c.op(&t, write("ro", b"x", false)).fs_kind(),
        Some(FsErrorKind::Io {
            errno: libc::EACCES
        })
    );
    assert_eq!(
        c.op(&t, append("ro", b"x")).fs_kind(),
        Some(FsErrorKind::Io {
            errno: libc::EACCES
        })
    );
    assert_eq!(std::fs::read(ws.join("ro")).unwrap(), b"ro");
    // A directory the job cannot enter.
    std::fs::create_dir(ws.join("root-dir")).unwrap();
    chmod(&ws.join("root-dir"), 0o700);
    assert_eq!(
        c.op(&t, write("root-dir/x", b"x", true)).fs_kind(),
        Some(FsErrorKind::Io {
            errno: libc::EACCES
        })
    );
    assert!(!ws.join("root-dir/x").exists());

    let rec = c.cancel(&id);
    assert_eq!(rec.cause, stockade_protocol::Cause::Canceled);
    // A fresh workspace is removed with its job: no longer addressable.
    match c.op(&t, read("where")) {
        Reply::Server(ErrorKind::UnknownJob, m) => assert!(m.contains(&id), "{m}"),
        other => panic!("{other:?}"),
    }
    drop(c);
    d.stop();
    env.finish();
}

#[test]
fn a_named_workspace_stays_addressable_after_its_job_ended_and_only_for_its_owner() {
    if !require_root(
        "a_named_workspace_stays_addressable_after_its_job_ended_and_only_for_its_owner",
    ) {
        return;
    }
    let env = TestEnv::new("fs-after", 61205);
    let d = Daemon::start(&env);
    let ws = workspace(&env, "ws");
    let mut c = Conn::new(&d);
    let id = c.submit(Some(&ws), "echo result > out.txt", false);
    assert_eq!(c.wait_result(&id).exit_code, 0);
    assert_eq!(c.op(&job(&id), read("out.txt")).data(), b"result\n");
    drop(c);

    // The CLI, reading stdin and writing stdout.
    let cli = |uid: Option<u32>, args: &[&str], stdin: &[u8]| {
        let mut cmd = Command::new(STOCKADE);
        cmd.arg("fs").arg("--socket").arg(&d.socket).args(args);
        if let Some(u) = uid {
            std::os::unix::process::CommandExt::uid(&mut cmd, u);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(None, &["--job", &id, "read", "out.txt"], b"");
    assert_eq!((code, out.as_slice()), (0, &b"result\n"[..]), "{err}");
    let wsarg = ws.display().to_string();
    let (code, _, err) = cli(
        None,
        &["--workspace", &wsarg, "write", "notes/a.md"],
        b"# hi\n",
    );
    assert_eq!(code, 1, "no parent directory: a typed error, exit 1");
    assert!(err.contains("not_found"), "{err}");
    let (code, _, err) = cli(None, &["--workspace", &wsarg, "mkdir", "-p", "notes"], b"");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        None,
        &["--workspace", &wsarg, "write", "notes/a.md"],
        b"# hi\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(ws.join("notes/a.md")).unwrap(), b"# hi\n");
    assert_eq!(
        std::fs::metadata(ws.join("notes/a.md")).unwrap().uid(),
        env.uid
    );
    let (code, out, _) = cli(None, &["--workspace", &wsarg, "--json", "ls", "-r"], b"");
    assert_eq!(code, 0);
    let names: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["notes", "out.txt", "notes/a.md"]);
    let (code, _, err) = cli(
        None,
        &["--workspace", &wsarg, "--json", "read", "../x"],
        b"",
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(v["error"], "path_traversal", "{err}");

    // Another uid sees no job of root's, and no workspace outside every root.
    chmod(&d.socket, 0o666);
    let (code, _, err) = cli(Some(61249), &["--job", &id, "read", "out.txt"], b"");
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("unknown_job"), "{err}");
    for outside in ["/etc", env.dir.path().to_str().unwrap()] {
        let (code, _, err) = cli(Some(61249), &["--workspace", outside, "ls"], b"");
        assert_eq!(code, 125, "{outside}: {err}");
        assert!(err.contains("not_permitted"), "{outside}: {err}");
    }
    // A root-owned workspace: file operations never run as root.
    let rootws = env.dir.path().join("root-owned");
    std::fs::create_dir(&rootws).unwrap();
    let (code, _, err) = cli(None, &["--workspace", rootws.to_str().unwrap(), "ls"], b"");
    assert_eq!(code, 1);
    assert!(
        err.contains("denied") && err.contains("never run as root"),
        "{err}"
    );

    let help = Command::new(STOCKADE)
        .args(["fs", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Examples:") && help.contains("stockade fs --job"),
        "{help}"
    );
    d.stop();
    env.finish();
}

#[test]
fn a_reader_never_sees_a_partial_file_and_a_failed_write_keeps_the_old_content() {
    if !require_root("a_reader_never_sees_a_partial_file_and_a_failed_write_keeps_the_old_content")
    {
        return;
    }
    let env = TestEnv::new("fs-atomic", 61203);
    let d = Daemon::start(&env);
    let ws = workspace(&env, "ws");
    let t = at(&ws);
    let mut c = Conn::new(&d);
    const SIZE: usize = 900 * 1024;
    c.op(&t, write("f", &vec![b'a'; SIZE], true)).ok();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, f) = (stop.clone(), reads.clone(), ws.join("f"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let got = std::fs::read(&f).unwrap();
                assert_eq!(got.len(), SIZE, "a partial file was visible");
                assert!(
                    got.iter().all(|b| *b == got[0]),
                    "a mix of old and new content"
                );
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..100 {
        let byte = if i % 2 == 0 { b'b' } else { b'a' };
        c.op(&t, write("f", &vec![byte; SIZE], true)).ok();
        // The client's own reads through the daemon see whole files too.
        let got = c.op(&t, read("f")).data();
        assert!(got.len() == SIZE && got.iter().all(|b| *b == got[0]));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader saw a partial file");
    assert!(reads.load(Ordering::Relaxed) > 0);

    // A write that fails half way (ENOSPC on a 256 KiB workspace file system) leaves the old
    // content and no temporary file.
    let small = env.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &small,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("size=256k,mode=0700"),
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(small.clone());
    chown(&small, env.uid);
    let s = at(&small);
    c.op(&s, write("f", &vec![b'o'; 100 * 1024], true)).ok();
    let r = c.op(&s, write("f", &vec![b'n'; 200 * 1024], true));
    assert_eq!(
        r.fs_kind(),
        Some(FsErrorKind::Io {
            errno: libc::ENOSPC
        }),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read(small.join("f")).unwrap(),
        vec![b'o'; 100 * 1024]
    );
    assert_eq!(dir_names(&small), ["f"], "a temporary file was left behind");
    drop(c);
    d.stop();
    env.finish();
}

#[test]
fn the_profiles_file_policy_holds_over_the_socket() {
    if !require_root("the_profiles_file_policy_holds_over_the_socket") {
        return;
    }
    let env = TestEnv::new("fs-policy", 61204);
    let policy = "\n[files]\nprotected = [\".git/hooks/**\", \".git/config\"]\nmax_op_kib = 64\n\
                  quota_mib = 1\n";
    env.write_profile(
        "p",
        &(profile_toml("fs-policy", env.uid, &ProfileOpts::default()) + policy),
    );
    env.write_profile(
        "e",
        &(profile_toml("fs-policy", env.uid, &ProfileOpts::default())
            + "\n[files]\neditable = [\".env\", \"package.json\"]\nfollow_symlinks = false\n"),
    );
    let d = Daemon::start(&env);
    let ws = workspace(&env, "ws");
    let t = FsTarget::Workspace {
        path: ws.display().to_string(),
        profile: Some("p".into()),
    };
    let mut c = Conn::new(&d);
    for dir in [".git", ".git/hooks"] {
        std::fs::create_dir(ws.join(dir)).unwrap();
        chown(&ws.join(dir), env.uid);
    }
    let kind = |r: Reply| r.fs_kind();
    assert_eq!(
        kind(c.op(&t, write(".git/config", b"x", true))),
        Some(FsErrorKind::Denied)
    );
    assert_eq!(
        kind(c.op(&t, write(".git/hooks/pre-commit", b"x", true))),
        Some(FsErrorKind::Denied)
    );
    assert_eq!(
        kind(c.op(
            &t,
            FsOp::Remove {
                path: ".git".into(),
                recursive: true
            }
        )),
        Some(FsErrorKind::Denied)
    );
    assert_eq!(
        kind(c.op(&t, write("setup.sh", b"x", true))),
        Some(FsErrorKind::DeniedExtension)
    );
    assert_eq!(
        kind(c.op(&t, write("x.DLL", b"x", true))),
        Some(FsErrorKind::DeniedExtension)
    );
    assert_eq!(
        kind(c.op(&t, write("big", &[0; 64 * 1024 + 1], true))),
        Some(FsErrorKind::TooLarge)
    );
    // 16 files of 64 KiB fill the 1 MiB quota; one byte more is refused.
    for i in 0..16 {
        c.op(&t, write(&format!("part{i}"), &[0; 64 * 1024], true))
            .ok();
    }
    assert_eq!(
        kind(c.op(&t, append("part0", b"x"))),
        Some(FsErrorKind::QuotaExceeded)
    );
    assert!(!ws.join(".git/config").exists() && !ws.join("setup.sh").exists());
    assert_eq!(
        std::fs::metadata(ws.join("part0")).unwrap().len(),
        64 * 1024
    );

    // An allow-list of editable files, and a profile that follows no symlink at all.
    let e = FsTarget::Workspace {
        path: ws.display().to_string(),
        profile: Some("e".into()),
    };
    c.op(&e, write(".env", b"K=1\n", true)).ok();
    assert_eq!(
        kind(c.op(&e, write("src.js", b"x", true))),
        Some(FsErrorKind::Denied)
    );
    std::os::unix::fs::symlink(".env", ws.join("link")).unwrap();
    assert_eq!(
        c.op(&t, read("link")).data(),
        b"K=1\n",
        "p follows symlinks inside"
    );
    assert_eq!(
        kind(c.op(&e, read("link"))),
        Some(FsErrorKind::PathTraversal)
    );
    match c.op(
        &t,
        FsOp::Rename {
            from: "part1".into(),
            to: "part2".into(),
            overwrite: false,
        },
    ) {
        Reply::Fs(FsErrorKind::Exists, _) => {}
        other => panic!("{other:?}"),
    }
    drop(c);
    d.stop();
    env.finish();
}

#[test]
fn a_listing_is_capped_and_a_large_read_streams_in_order() {
    if !require_root("a_listing_is_capped_and_a_large_read_streams_in_order") {
        return;
    }
    let env = TestEnv::new("fs-stream", 61206);
    env.write_profile(
        "c",
        &(profile_toml("fs-stream", env.uid, &ProfileOpts::default())
            + "\n[files]\nmax_list_entries = 50\n"),
    );
    let d = Daemon::start(&env);
    let ws = workspace(&env, "ws");
    for i in 0..120 {
        std::fs::write(ws.join(format!("f{i:03}")), "").unwrap();
    }
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    std::fs::write(ws.join("big"), &big).unwrap();
    chown(&ws.join("big"), env.uid);
    let mut c = Conn::new(&d);
    let t = FsTarget::Workspace {
        path: ws.display().to_string(),
        profile: Some("c".into()),
    };
    match c.op(
        &t,
        FsOp::List {
            path: ".".into(),
            recursive: false,
        },
    ) {
        Reply::Done {
            entries,
            reply:
                FsReply::Listed {
                    count: 50,
                    truncated: true,
                },
            ..
        } => {
            assert_eq!(entries.len(), 50);
            assert_eq!(entries[0].path, "big");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.op(&t, read("big")).data(), big);
    let r = c.op(
        &t,
        FsOp::Read {
            path: "big".into(),
            offset: 1_000_000,
            len: Some(300_000),
        },
    );
    assert_eq!(r.data(), &big[1_000_000..1_300_000]);
    let r = c.op(
        &t,
        FsOp::Read {
            path: "big".into(),
            offset: 10 << 20,
            len: None,
        },
    );
    assert!(matches!(
        r,
        Reply::Done {
            reply: FsReply::Read { bytes: 0, .. },
            ..
        }
    ));
    drop(c);
    d.stop();
    env.finish();
}
