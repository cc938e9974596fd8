//! Walking-skeleton integration tests: real jobs on the real kernel, as root.
//!
//! Each test has its own uid (61101 + n), profile directory and cgroup parent
//! (`stockade-it-<test>`), so tests run in parallel without seeing each other, and every test
//! ends by asserting that nothing is left behind: no process of its uid (zombies included), no job
//! cgroup, no workspace; then it removes its (empty) cgroup parents.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use stockade_protocol::{
    decode_payload, encode_frame, Cause, Client, ClientMessage, ErrorKind, JobRequest,
    ServerMessage, Stream, MAX_FRAME_LEN, PROTOCOL_VERSION,
};

const CAPS_ZERO: &str = "0000000000000000";

/// Prints the job's /proc/$$/status (the job's main process, the shell).
const SHOW_STATUS: &str = "cat /proc/$$/status";

/// The status lines that prove the job runs as `uid`/`gid` with no capability and no way back.
fn assert_unprivileged(out: &Outcome, uid: u32) {
    let field = |key: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line in the job's status\n{}", out.describe()))
            .trim()
            .to_string()
    };
    for key in ["Uid:", "Gid:"] {
        let ids: Vec<u32> = field(key)
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec![uid; 4],
            "{key} real, effective, saved, fs must all be {uid}"
        );
    }
    assert_eq!(field("Groups:"), "", "no supplementary groups");
    for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(key), CAPS_ZERO, "{key} must be empty");
    }
    assert_eq!(field("NoNewPrivs:"), "1");
}

#[test]
fn exec_job_runs_as_profile_uid_without_capabilities() {
    if !require_root("exec_job_runs_as_profile_uid_without_capabilities") {
        return;
    }
    let env = TestEnv::new("exec-identity", 61101);
    let out = env.exec(&["sh", "-c", SHOW_STATUS]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::Exited { code: 0 });
    assert_eq!((rec.uid, rec.gid), (Some(env.uid), Some(env.uid)));
    assert_eq!(rec.profile, PROFILE);
    assert_unprivileged(&out, env.uid);
    env.finish();
}

#[test]
fn run_job_through_daemon_runs_as_profile_uid_without_capabilities() {
    if !require_root("run_job_through_daemon_runs_as_profile_uid_without_capabilities") {
        return;
    }
    let env = TestEnv::new("run-identity", 61102);
    let d = Daemon::start(&env);
    let out = d.run(&["sh", "-c", SHOW_STATUS]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::Exited { code: 0 });
    assert_eq!((rec.uid, rec.gid), (Some(env.uid), Some(env.uid)));
    assert_unprivileged(&out, env.uid);
    env.assert_nothing_left("after the job");
    assert!(d.stop().success());
    env.finish();
}

/// Prints `env` and the job's initial environment (/proc/$$/environ), each between markers.
const SHOW_ENV: &str = "echo env-begin; env; echo env-end; echo environ-begin; \
     tr '\\0' '\\n' < /proc/$$/environ; echo environ-end";

fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let begin = format!("{name}-begin");
    let end = format!("{name}-end");
    let lines: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != begin)
        .skip(1)
        .take_while(|l| *l != end)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!lines.is_empty(), "no {name} section in:\n{out}");
    lines
}

#[test]
fn caller_environment_does_not_reach_the_job() {
    if !require_root("caller_environment_does_not_reach_the_job") {
        return;
    }
    let env = TestEnv::new("env", 61103);

    // Control: a plain child of a process with the variable does see it, so the listing works.
    let mut control = std::process::Command::new("sh");
    control
        .args(["-c", SHOW_ENV])
        .env("STOCKADE_TEST_SECRET", "hunter2");
    let control = Proc::spawn(control).finish();
    assert!(
        section(&control.stdout, "env").contains(&"STOCKADE_TEST_SECRET=hunter2")
            && section(&control.stdout, "environ").contains(&"STOCKADE_TEST_SECRET=hunter2"),
        "control: a plain child must see the variable\n{}",
        control.describe()
    );

    let check = |out: &Outcome, how: &str| {
        assert_eq!(out.code(), 0, "{how}\n{}", out.describe());
        assert!(
            !out.stdout.contains("hunter2")
                && !out.stdout.contains("swordfish")
                && !out.stdout.contains("STOCKADE_"),
            "{how}: the caller's environment reached the job\n{}",
            out.describe()
        );
        // Allowed variables do get through (the listing would show the secret if it were there).
        assert!(section(&out.stdout, "env").contains(&"TERM=xterm-it"));
        // The job's environment is exactly the profile's `set`, HOME, and the allowed request
        // variables.
        let mut names: Vec<&str> = section(&out.stdout, "environ")
            .iter()
            .map(|l| l.split('=').next().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["HOME", "LANG", "PATH", "TERM"],
            "{how}: job environment\n{}",
            out.describe()
        );
    };

    let mut cmd = env.exec_cmd(
        &["--profile", PROFILE, "--json", "--env", "TERM=xterm-it"],
        &["sh", "-c", SHOW_ENV],
    );
    cmd.env("STOCKADE_TEST_SECRET", "hunter2");
    let out = Proc::spawn(cmd).finish();
    check(&out, "stockade exec");
    env.assert_nothing_left("after exec");

    // Through the daemon: neither the client's nor the daemon's environment reaches the job.
    let d = Daemon::start_with(&env, &[("STOCKADE_DAEMON_SECRET", "swordfish")]);
    let mut cmd = d.run_cmd(
        &["--profile", PROFILE, "--json", "--env", "TERM=xterm-it"],
        &["sh", "-c", SHOW_ENV],
    );
    cmd.env("STOCKADE_TEST_SECRET", "hunter2");
    let out = Proc::spawn(cmd).finish();
    check(&out, "stockade run");
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn exit_codes_and_signals_map_to_status_and_cause() {
    if !require_root("exit_codes_and_signals_map_to_status_and_cause") {
        return;
    }
    let env = TestEnv::new("exit-codes", 61104);
    let cases: [(&str, i32, Cause); 5] = [
        ("exit 0", 0, Cause::Exited { code: 0 }),
        ("exit 3", 3, Cause::Exited { code: 3 }),
        ("exit 255", 255, Cause::Exited { code: 255 }),
        (
            "kill -SEGV $$",
            128 + libc::SIGSEGV,
            Cause::Signaled {
                signal: libc::SIGSEGV,
            },
        ),
        (
            "kill -9 $$",
            128 + libc::SIGKILL,
            Cause::Signaled {
                signal: libc::SIGKILL,
            },
        ),
    ];
    for (script, code, cause) in cases {
        let out = env.exec(&["sh", "-c", script]);
        assert_eq!(out.code(), code, "{script}\n{}", out.describe());
        let rec = out.record();
        assert_eq!(rec.cause, cause, "{script}");
        assert_eq!(rec.exit_code, code, "{script}");
        env.assert_nothing_left(script);
    }
    env.finish();
}

#[test]
fn wall_timeout_ends_job_with_124() {
    if !require_root("wall_timeout_ends_job_with_124") {
        return;
    }
    let env = TestEnv::new("timeout", 61105);
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--timeout", "1"],
        &["sleep", "1000"],
    );
    assert_eq!(out.code(), 124, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::WallTimeout);
    assert_eq!(rec.exit_code, 124);
    assert!(
        out.stderr_lines()
            .iter()
            .any(|l| l.contains(&rec.job) && l.contains("deadline")),
        "a line saying the job hit its deadline\n{}",
        out.describe()
    );
    env.finish();
}

/// Cancel an escaping process tree with `cancel`, then check nothing of it survived.
fn escaping_tree_is_canceled(env: &TestEnv, mut job: Proc, cancel: impl FnOnce(&mut Proc)) {
    let pids = read_tree_pids(&mut job, env.uid);
    let cgroup = check_tree_is_escaping(&pids, env.uid, &env.cgroup_parent);
    cancel(&mut job);
    let out = job.finish();
    assert_eq!(out.code(), 143, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::Canceled);
    assert_eq!(cgroup, format!("/{}/{}", env.cgroup_parent, rec.job));
    assert_pids_gone(&pids, env.uid);
    assert!(
        env.cgroups_of_job(&rec.job).is_empty(),
        "job cgroups left: {:?}",
        env.cgroups_of_job(&rec.job)
    );
    env.assert_nothing_left("after cancel");
}

#[test]
fn sigterm_to_exec_cancels_escaping_tree_and_leaves_nothing() {
    if !require_root("sigterm_to_exec_cancels_escaping_tree_and_leaves_nothing") {
        return;
    }
    let env = TestEnv::new("cancel-exec", 61106);
    let script = escaping_tree_script("cancel-exec");
    let job = Proc::spawn(env.exec_cmd(&["--profile", PROFILE, "--json"], &["sh", "-c", &script]));
    escaping_tree_is_canceled(&env, job, |p| p.signal(Signal::SIGTERM));
    env.finish();
}

#[test]
fn daemon_cancel_command_cancels_escaping_tree_and_leaves_nothing() {
    if !require_root("daemon_cancel_command_cancels_escaping_tree_and_leaves_nothing") {
        return;
    }
    let env = TestEnv::new("cancel-daemon", 61107);
    let d = Daemon::start(&env);
    let marker = "marker-cancel-daemon";
    let script = escaping_tree_script(marker);
    let job = Proc::spawn(d.run_cmd(&["--profile", PROFILE, "--json"], &["sh", "-c", &script]));
    let mut id = String::new();
    escaping_tree_is_canceled(&env, job, |_| {
        id = d.job_id_from_ps(marker);
        let c = d.client("cancel", &[&id]);
        assert_eq!(c.code(), 0, "stockade cancel\n{}", c.describe());
        assert!(
            c.stdout.contains(&format!("canceled {id}")),
            "{}",
            c.describe()
        );
    });
    // Canceling a job that is gone is an error naming it.
    let again = d.client("cancel", &[&id]);
    assert_ne!(again.code(), 0, "{}", again.describe());
    assert!(again.stderr.contains(&id), "{}", again.describe());
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn sigterm_to_run_client_cancels_job_through_daemon() {
    if !require_root("sigterm_to_run_client_cancels_job_through_daemon") {
        return;
    }
    let env = TestEnv::new("cancel-run-sigterm", 61108);
    let d = Daemon::start(&env);
    let script = escaping_tree_script("cancel-run-sigterm");
    let job = Proc::spawn(d.run_cmd(&["--profile", PROFILE, "--json"], &["sh", "-c", &script]));
    escaping_tree_is_canceled(&env, job, |p| p.signal(Signal::SIGTERM));
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn client_disconnect_cancels_its_job() {
    if !require_root("client_disconnect_cancels_its_job") {
        return;
    }
    let env = TestEnv::new("disconnect", 61109);
    let d = Daemon::start(&env);
    let script = escaping_tree_script("disconnect");
    let mut job = Proc::spawn(d.run_cmd(&["--profile", PROFILE], &["sh", "-c", &script]));
    let pids = read_tree_pids(&mut job, env.uid);
    check_tree_is_escaping(&pids, env.uid, &env.cgroup_parent);
    // The client dies without a word: the daemon must end the job it can no longer report to.
    job.signal(Signal::SIGKILL);
    let out = job.finish();
    assert_eq!(out.status.code(), None, "{}", out.describe());
    assert_pids_gone(&pids, env.uid);
    env.assert_nothing_left("after the client went away");
    // The daemon is still serving.
    let ok = d.run(&["echo", "still-serving"]);
    assert_eq!(ok.code(), 0, "{}", ok.describe());
    assert_eq!(ok.stdout, "still-serving\n");
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn daemon_sigterm_cancels_jobs_removes_socket_and_exits_0() {
    if !require_root("daemon_sigterm_cancels_jobs_removes_socket_and_exits_0") {
        return;
    }
    let env = TestEnv::new("daemon-sigterm", 61110);
    let d = Daemon::start(&env);
    let socket = d.socket.clone();
    let script = escaping_tree_script("daemon-sigterm");
    let mut job = Proc::spawn(d.run_cmd(&["--profile", PROFILE, "--json"], &["sh", "-c", &script]));
    let pids = read_tree_pids(&mut job, env.uid);
    check_tree_is_escaping(&pids, env.uid, &env.cgroup_parent);
    let status = d.stop();
    assert!(status.success(), "daemon exit status {status:?}");
    assert!(!socket.exists(), "the daemon must remove its socket");
    let out = job.finish();
    assert_pids_gone(&pids, env.uid);
    env.assert_nothing_left("after the daemon stopped");
    // The client still gets its job's record: canceled, not a refusal or a setup failure.
    assert_eq!(out.code(), 143, "{}", out.describe());
    assert_eq!(out.record().cause, Cause::Canceled);
    env.finish();
}

#[test]
fn main_process_exit_ends_the_rest_of_the_job() {
    if !require_root("main_process_exit_ends_the_rest_of_the_job") {
        return;
    }
    let env = TestEnv::new("main-exit", 61111);
    let out = env.exec(&[
        "sh",
        "-c",
        "setsid sh -c 'trap \"\" TERM; exec sleep 1000' & echo bg $!; exit 5",
    ]);
    assert_eq!(out.code(), 5, "{}", out.describe());
    assert_eq!(out.record().cause, Cause::Exited { code: 5 });
    let bg: i32 = out
        .stdout
        .trim()
        .strip_prefix("bg ")
        .unwrap_or_else(|| panic!("{}", out.describe()))
        .parse()
        .unwrap();
    assert_pids_gone(&[("bg".into(), bg)], env.uid);
    env.finish();
}

/// A job that proves it ran at the same time as its peer: it creates `<me>`, then waits
/// (bounded) until `<peer>` exists in the shared workspace.
fn rendezvous(me: &str, peer: &str, code: i32) -> String {
    format!(
        "echo {me}-start; touch {me}; i=0; while [ ! -e {peer} ] && [ $i -lt 600 ]; do sleep 0.05; \
         i=$((i+1)); done; if [ -e {peer} ]; then echo {me}-saw-{peer}; fi; echo {me}-err >&2; \
         exit {code}"
    )
}

#[test]
fn two_concurrent_run_clients_get_their_own_output_and_records() {
    if !require_root("two_concurrent_run_clients_get_their_own_output_and_records") {
        return;
    }
    let env = TestEnv::new("concurrent-cli", 61113);
    let d = Daemon::start(&env);
    let ws = env.shared_workspace("ws");
    let ws = ws.to_str().unwrap();
    let args = ["--profile", PROFILE, "--json", "--workspace", ws];
    let a = Proc::spawn(d.run_cmd(&args, &["sh", "-c", &rendezvous("alpha", "beta", 21)]));
    let b = Proc::spawn(d.run_cmd(&args, &["sh", "-c", &rendezvous("beta", "alpha", 22)]));
    let (a, b) = (a.finish(), b.finish());
    assert_eq!(a.code(), 21, "{}", a.describe());
    assert_eq!(b.code(), 22, "{}", b.describe());
    assert_eq!(
        a.stdout,
        "alpha-start\nalpha-saw-beta\n",
        "{}",
        a.describe()
    );
    assert_eq!(b.stdout, "beta-start\nbeta-saw-alpha\n", "{}", b.describe());
    assert!(a.stderr.starts_with("alpha-err\n") && !a.stderr.contains("beta"));
    assert!(b.stderr.starts_with("beta-err\n") && !b.stderr.contains("alpha"));
    let (ra, rb) = (a.record(), b.record());
    assert_eq!(ra.cause, Cause::Exited { code: 21 });
    assert_eq!(rb.cause, Cause::Exited { code: 22 });
    assert_ne!(ra.job, rb.job);
    env.assert_nothing_left("after both jobs");
    assert!(d.stop().success());
    env.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_protocol_clients_at_once_get_their_own_output_and_records() {
    if !require_root("two_protocol_clients_at_once_get_their_own_output_and_records") {
        return;
    }
    let env = TestEnv::new("concurrent-proto", 61114);
    let d = Daemon::start(&env);
    let ws = env.shared_workspace("ws");
    let ws = ws.to_str().unwrap().to_string();
    let job = |me: &str, peer: &str, code: i32| JobRequest {
        profile: PROFILE.into(),
        argv: vec!["sh".into(), "-c".into(), rendezvous(me, peer, code)],
        workspace: Some(ws.clone()),
        ..Default::default()
    };
    async fn one(
        socket: std::path::PathBuf,
        req: JobRequest,
    ) -> (String, stockade_protocol::ResultRecord, Vec<u8>, Vec<u8>) {
        let mut c = Client::connect(&socket, "stockade-it/concurrent")
            .await
            .expect("connect");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (id, rec) = c
            .run(req, |s, d| match s {
                Stream::Stdout => out.extend_from_slice(d),
                Stream::Stderr => err.extend_from_slice(d),
            })
            .await
            .expect("run");
        (id, rec, out, err)
    }
    let limit = Duration::from_secs(120);
    let (a, b) = tokio::time::timeout(limit, async {
        tokio::join!(
            one(d.socket.clone(), job("alpha", "beta", 31)),
            one(d.socket.clone(), job("beta", "alpha", 32))
        )
    })
    .await
    .expect("both jobs end");
    assert_eq!(a.1.cause, Cause::Exited { code: 31 });
    assert_eq!(b.1.cause, Cause::Exited { code: 32 });
    assert_eq!(
        (a.0.as_str(), b.0.as_str()),
        (a.1.job.as_str(), b.1.job.as_str())
    );
    assert_ne!(a.0, b.0);
    assert_eq!(
        String::from_utf8_lossy(&a.2),
        "alpha-start\nalpha-saw-beta\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&b.2),
        "beta-start\nbeta-saw-alpha\n"
    );
    assert_eq!(String::from_utf8_lossy(&a.3), "alpha-err\n");
    assert_eq!(String::from_utf8_lossy(&b.3), "beta-err\n");
    assert_eq!(a.1.uid, Some(env.uid));
    env.assert_nothing_left("after both jobs");
    assert!(d.stop().success());
    env.finish();
}

/// Read one server frame from a raw socket; `None` at a clean EOF.
fn read_server_frame(s: &mut UnixStream) -> Option<ServerMessage> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = s.read(&mut header[got..]).expect("read frame header");
        if n == 0 {
            assert_eq!(got, 0, "server closed mid-header");
            return None;
        }
        got += n;
    }
    let len = u32::from_le_bytes(header);
    assert!(len <= MAX_FRAME_LEN, "server frame of {len} bytes");
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).expect("read frame payload");
    Some(decode_payload(&payload).expect("decode server frame"))
}

fn raw_connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn raw_handshake(s: &mut UnixStream) {
    let hello = encode_frame(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        client: "stockade-it/raw".into(),
    })
    .unwrap();
    s.write_all(&hello).unwrap();
    match read_server_frame(s) {
        Some(ServerMessage::Hello { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("expected hello, got {other:?}"),
    }
}

/// The connection gets exactly one `Error` of kind bad_frame whose one-line message contains
/// every `needle`; then the server closes it.
fn expect_bad_frame(s: &mut UnixStream, what: &str, needles: &[&str]) {
    match read_server_frame(s) {
        Some(ServerMessage::Error {
            request,
            kind,
            message,
        }) => {
            assert_eq!(request, None, "{what}");
            assert_eq!(kind, ErrorKind::BadFrame, "{what}: {message}");
            assert!(!message.contains('\n'), "{what}: one line: {message:?}");
            for n in needles {
                assert!(
                    message.contains(n),
                    "{what}: {message:?} should mention {n:?}"
                );
            }
        }
        other => panic!("{what}: expected an error, got {other:?}"),
    }
    assert!(
        read_server_frame(s).is_none(),
        "{what}: the server must close the connection after a bad frame"
    );
}

#[test]
fn malformed_frames_get_an_error_and_the_daemon_keeps_serving() {
    if !require_root("malformed_frames_get_an_error_and_the_daemon_keeps_serving") {
        return;
    }
    let env = TestEnv::new("bad-frames", 61115);
    let mut d = Daemon::start(&env);

    // Garbage instead of a handshake: text whose first four bytes read as a huge length.
    let mut s = raw_connect(&d);
    s.write_all(b"GET / HTTP/1.1\r\nHost: stockade\r\n\r\n")
        .unwrap();
    expect_bad_frame(&mut s, "text garbage", &["exceeds the maximum"]);

    // Garbage inside a well-formed frame: an invalid message tag.
    let mut s = raw_connect(&d);
    s.write_all(&[3, 0, 0, 0, 0xfe, 0xfe, 0xfe]).unwrap();
    expect_bad_frame(&mut s, "garbage payload", &["decode"]);

    // Oversize length header, before and after the handshake.
    let mut s = raw_connect(&d);
    s.write_all(&[0xff; 4]).unwrap();
    expect_bad_frame(
        &mut s,
        "oversize header",
        &["4294967295", &MAX_FRAME_LEN.to_string()],
    );
    let mut s = raw_connect(&d);
    raw_handshake(&mut s);
    s.write_all(&(MAX_FRAME_LEN + 1).to_le_bytes()).unwrap();
    expect_bad_frame(
        &mut s,
        "oversize header after hello",
        &[&(MAX_FRAME_LEN + 1).to_string()],
    );

    // Garbage payload after a valid handshake.
    let mut s = raw_connect(&d);
    raw_handshake(&mut s);
    s.write_all(&[2, 0, 0, 0, 0xff, 0x00]).unwrap();
    expect_bad_frame(&mut s, "garbage after hello", &["decode"]);

    // EOF in the middle of a frame after a valid handshake.
    let mut s = raw_connect(&d);
    raw_handshake(&mut s);
    s.write_all(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_bad_frame(&mut s, "eof mid-frame", &["mid-frame"]);

    // EOF in the middle of the header.
    let mut s = raw_connect(&d);
    raw_handshake(&mut s);
    s.write_all(&[9, 0]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_bad_frame(&mut s, "eof mid-header", &["mid-frame"]);

    assert!(d.is_running(), "daemon died:\n{}", d.log_text());
    let out = d.run(&["echo", "still-serving"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.stdout, "still-serving\n");
    assert_eq!(out.record().cause, Cause::Exited { code: 0 });
    env.assert_nothing_left("after the bad frames");
    assert!(d.stop().success());
    env.finish();
}

/// One bad request: its exit status, its one error line, and what the line must name.
struct BadInput {
    what: &'static str,
    args: Vec<String>,
    argv: Vec<String>,
    /// Expected record cause kind: "rejected" or "setup_failed".
    cause: &'static str,
    needles: Vec<String>,
}

fn bad_inputs(env: &TestEnv) -> Vec<BadInput> {
    let missing = env.dir.path().join("no-such-workspace");
    let missing = missing.to_str().unwrap().to_string();
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        BadInput {
            what: "unknown profile",
            args: p(&["--profile", "no-such-profile"]),
            argv: p(&["true"]),
            cause: "rejected",
            needles: p(&["no-such-profile", "unknown profile"]),
        },
        BadInput {
            what: "missing workspace",
            args: vec![
                "--profile".into(),
                PROFILE.into(),
                "--workspace".into(),
                missing.clone(),
            ],
            argv: p(&["true"]),
            cause: "rejected",
            needles: vec![missing, "No such file or directory".into()],
        },
        BadInput {
            what: "command not found",
            args: p(&["--profile", PROFILE]),
            argv: p(&["no-such-command-xyz", "arg"]),
            cause: "setup_failed",
            needles: p(&["no-such-command-xyz", "not found"]),
        },
        BadInput {
            what: "timeout above the profile's",
            args: p(&["--profile", PROFILE, "--timeout", "100000"]),
            argv: p(&["true"]),
            cause: "rejected",
            needles: p(&["timeout", "wall_timeout_secs"]),
        },
        BadInput {
            what: "env var not allowed",
            args: p(&["--profile", PROFILE, "--env", "LD_PRELOAD=/tmp/x.so"]),
            argv: p(&["true"]),
            cause: "rejected",
            needles: p(&["LD_PRELOAD", "env.allow"]),
        },
    ]
}

fn check_bad_input(
    env: &TestEnv,
    b: &BadInput,
    how: &str,
    run: impl Fn(&[&str], &[&str]) -> Outcome,
) {
    let args: Vec<&str> = b.args.iter().map(String::as_str).collect();
    let argv: Vec<&str> = b.argv.iter().map(String::as_str).collect();
    // Without --json: exactly one line, naming the thing and the reason.
    let out = run(&args, &argv);
    assert_eq!(out.code(), 125, "{how} {}\n{}", b.what, out.describe());
    assert_eq!(out.stdout, "", "{how} {}", b.what);
    let lines = out.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "{how} {}: one error line\n{}",
        b.what,
        out.describe()
    );
    assert!(
        lines[0].starts_with("stockade: error: "),
        "{how} {}: {:?}",
        b.what,
        lines[0]
    );
    for n in &b.needles {
        assert!(
            lines[0].contains(n.as_str()),
            "{how} {}: {:?} should name {n:?}",
            b.what,
            lines[0]
        );
    }
    env.assert_nothing_left(&format!("{how} {}", b.what));
    // With --json: the record says why, and nothing ran.
    let mut json_args = args.clone();
    json_args.push("--json");
    let out = run(&json_args, &argv);
    assert_eq!(
        out.code(),
        125,
        "{how} {} --json\n{}",
        b.what,
        out.describe()
    );
    let rec = out.record();
    let v = serde_json::to_value(&rec.cause).unwrap();
    assert!(
        v.get(b.cause).is_some(),
        "{how} {}: cause {v} should be {}",
        b.what,
        b.cause
    );
    assert_eq!(rec.exit_code, 125);
    assert_eq!(
        (rec.uid, rec.gid),
        (None, None),
        "{how} {}: nothing ran",
        b.what
    );
    assert!(env.cgroups_of_job(&rec.job).is_empty());
    assert!(!env
        .scratch
        .join(format!("stockade-ws-{}", rec.job))
        .exists());
    env.assert_nothing_left(&format!("{how} {} --json", b.what));
}

#[test]
fn bad_input_to_exec_is_refused_with_one_line_and_leaves_nothing() {
    if !require_root("bad_input_to_exec_is_refused_with_one_line_and_leaves_nothing") {
        return;
    }
    let env = TestEnv::new("bad-input-exec", 61116);
    for b in bad_inputs(&env) {
        check_bad_input(&env, &b, "exec", |args, argv| env.exec_args(args, argv));
    }
    env.finish();
}

#[test]
fn bad_input_to_run_is_refused_with_one_line_and_leaves_nothing() {
    if !require_root("bad_input_to_run_is_refused_with_one_line_and_leaves_nothing") {
        return;
    }
    let env = TestEnv::new("bad-input-run", 61117);
    let d = Daemon::start(&env);
    for b in bad_inputs(&env) {
        check_bad_input(&env, &b, "run", |args, argv| d.run_args(args, argv));
    }
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn exec_refuses_a_non_root_caller() {
    if !require_root("exec_refuses_a_non_root_caller") {
        return;
    }
    let env = TestEnv::new("exec-non-root", 61118);
    for json in [false, true] {
        let mut args = vec!["--profile", PROFILE];
        if json {
            args.push("--json");
        }
        let mut cmd = env.exec_cmd(&args, &["id"]);
        {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534).current_dir("/");
        }
        let out = Proc::spawn(cmd).finish();
        assert_eq!(out.code(), 125, "{}", out.describe());
        assert_eq!(out.stdout, "", "the job must not run");
        let lines = out.stderr_lines();
        assert!(
            lines[0].starts_with("stockade: error: ")
                && lines[0].contains("stockade exec")
                && lines[0].contains("root")
                && lines[0].contains("65534"),
            "{}",
            out.describe()
        );
        if json {
            assert_eq!(lines.len(), 2, "{}", out.describe());
            let rec = out.record();
            assert!(matches!(rec.cause, Cause::Rejected { .. }), "{rec:?}");
            assert_eq!(rec.uid, None);
        } else {
            assert_eq!(lines.len(), 1, "one error line\n{}", out.describe());
        }
        env.assert_nothing_left("non-root exec");
    }
    env.finish();
}

fn serve_cmd(env: &TestEnv, socket: &std::path::Path, state: &str) -> std::process::Command {
    let mut c = std::process::Command::new(STOCKADE);
    c.arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(env.dir.path().join(state))
        .arg("--profiles")
        .arg(&env.profiles)
        .arg("--cgroup-parent")
        .arg(&env.cgroup_parent)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    c
}

fn assert_serve_refused(out: &Outcome, socket: &std::path::Path, reason: &str) {
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "serve must exit non-zero\n{}",
        out.describe()
    );
    let path = socket.display().to_string();
    let errors: Vec<&str> = out
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("stockade: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line\n{}", out.describe());
    assert!(
        errors[0].contains(&path) && errors[0].contains(reason),
        "the error must name {path} and say {reason:?}: {:?}",
        errors[0]
    );
}

#[test]
fn serve_refuses_a_socket_path_in_use() {
    if !require_root("serve_refuses_a_socket_path_in_use") {
        return;
    }
    let env = TestEnv::new("socket-in-use", 61119);
    let mut d = Daemon::start(&env);
    let out = Proc::spawn(serve_cmd(&env, &d.socket, "state-second"))
        .finish_within(Duration::from_secs(60));
    assert_serve_refused(&out, &d.socket, "in use");
    assert!(
        !env.dir.path().join("state-second").exists(),
        "a refused serve must not create its state directory"
    );
    // The first daemon is untouched and still serving on its socket.
    assert!(d.is_running());
    assert!(d.socket.exists());
    let ok = d.run(&["echo", "first-still-serving"]);
    assert_eq!(ok.code(), 0, "{}", ok.describe());
    assert_eq!(ok.stdout, "first-still-serving\n");
    env.assert_nothing_left("after the refused second daemon");
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn serve_refuses_a_regular_file_at_the_socket_path() {
    if !require_root("serve_refuses_a_regular_file_at_the_socket_path") {
        return;
    }
    let env = TestEnv::new("socket-is-file", 61120);
    let path = env.dir.path().join("not-a-socket");
    std::fs::write(&path, "precious data\n").unwrap();
    let out = Proc::spawn(serve_cmd(&env, &path, "state")).finish_within(Duration::from_secs(60));
    assert_serve_refused(&out, &path, "not a socket");
    assert!(
        !env.dir.path().join("state").exists(),
        "a refused serve must not create its state directory"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "precious data\n",
        "the file must be left alone"
    );
    env.assert_nothing_left("after the refused daemon");
    env.finish();
}

#[test]
fn run_through_daemon_and_exec_give_the_same_record() {
    if !require_root("run_through_daemon_and_exec_give_the_same_record") {
        return;
    }
    let env = TestEnv::new("run-vs-exec", 61121);
    let d = Daemon::start(&env);
    let missing = env.dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec![], vec!["sh", "-c", "echo out; echo err >&2; exit 7"]),
        (vec![], vec!["sh", "-c", "kill -SEGV $$"]),
        (vec!["--timeout", "1"], vec!["sleep", "1000"]),
        (vec!["--env", "TERM=dumb"], vec!["sh", "-c", "echo $TERM"]),
        (vec![], vec!["no-such-command-xyz"]),
        (vec!["--workspace", missing], vec!["true"]),
    ];
    for (extra, argv) in &cases {
        let mut args = vec!["--profile", PROFILE, "--json"];
        args.extend(extra);
        let e = env.exec_args(&args, argv);
        let r = d.run_args(&args, argv);
        assert_eq!(
            e.code(),
            r.code(),
            "{argv:?}\nexec: {}\nrun: {}",
            e.describe(),
            r.describe()
        );
        assert_eq!(e.stdout, r.stdout, "{argv:?}");
        assert_eq!(
            e.masked_record(),
            r.masked_record(),
            "{argv:?}: exec and run records differ"
        );
        env.assert_nothing_left(&format!("{argv:?}"));
    }
    // And an unknown profile.
    let args = ["--profile", "no-such-profile", "--json"];
    let e = env.exec_args(&args, &["true"]);
    let r = d.run_args(&args, &["true"]);
    assert_eq!(e.masked_record(), r.masked_record());
    assert!(d.stop().success());
    env.finish();
}
