//! Crash recovery: `stockade serve` is SIGKILLed with jobs running (one of them a double-forked,
//! `setsid`, SIGTERM-ignoring tree whose forks escape `PR_SET_PDEATHSIG`), then restarted on the
//! same state directory. The restart must kill every survivor, remove every job cgroup and fresh
//! workspace, and record each job as `lost`, visible to the uid that submitted it (and root) only.
//!
//! Its own test binary: this process becomes a child subreaper, so the jobs' processes are
//! reparented to it when the daemon dies (as they would be to the host's subreaper or init), and
//! it reaps them; that must not disturb other tests' orphan checks.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use stockade_protocol::{Cause, Client, LostJob, ServerMessage};

/// Client uids (SO_PEERCRED owners of the jobs); the jobs themselves run as the profile's uid.
const OWNER_A: u32 = 61301;
const OWNER_B: u32 = 61302;
const STRANGER: u32 = 61303;

/// Run `cmd` as `uid` with gid 0, which may use the daemon's socket (mode 0660, group root).
fn as_client(mut cmd: std::process::Command, uid: u32) -> std::process::Command {
    cmd.uid(uid).gid(0);
    cmd
}

/// Reap every zombie of the test's uid that was reparented to this process (the subreaper).
fn reap_our_zombies(env: &TestEnv) {
    let me = std::process::id() as i32;
    for p in env.new_procs() {
        if p.ppid == me && p.state.starts_with('Z') {
            let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Wait (bounded) until no new process of the test's uid is left, reaping the zombies
/// reparented to us.
fn assert_no_job_process(env: &TestEnv, context: &str) {
    let until = Instant::now() + SETTLE_LIMIT;
    loop {
        reap_our_zombies(env);
        let left = env.new_procs();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "{context}: job processes left: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `stockade ps` as `uid` (`None`: root): the job ids of its LOST section.
fn lost_ids_in_ps(d: &Daemon, uid: Option<u32>) -> Vec<String> {
    let mut c = std::process::Command::new(STOCKADE);
    c.arg("ps").arg("--socket").arg(&d.socket);
    if let Some(uid) = uid {
        c = as_client(c, uid);
    }
    let out = Proc::spawn(c).finish();
    assert_eq!(out.code(), 0, "stockade ps as {uid:?}\n{}", out.describe());
    let mut ids: Vec<String> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("LOST JOB"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.get(3), Some(&"lost"), "ps row: {l:?}\n{}", out.stdout);
            cols.first().map(|s| s.to_string())
        })
        .collect();
    ids.sort();
    ids
}

/// The lost jobs as root sees them, through the protocol.
fn lost_jobs(socket: &Path) -> Vec<LostJob> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect(socket, "recovery-test").await.unwrap();
        let req = c.list_lost().await.unwrap();
        loop {
            match c.recv().await.unwrap() {
                Some(ServerMessage::LostJobs { request, jobs }) if request == req => return jobs,
                Some(_) => {}
                None => panic!("daemon closed the connection"),
            }
        }
    })
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_restart_after_sigkill_records_jobs_lost_and_leaves_nothing() {
    if !require_root("a_restart_after_sigkill_records_jobs_lost_and_leaves_nothing") {
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let uid = 61300;
    // Without a pid namespace: with one (the default), the namespace's init dies with the
    // monitor and the kernel kills every process of the job together with the daemon, so there
    // would be no survivor for recovery to find. Here the tree's forks and B's background child
    // escape PR_SET_PDEATHSIG and only recovery can end them.
    let env = TestEnv::with_profile(
        "recovery",
        uid,
        ProfileOpts {
            extra_sections: "[namespaces]\npid = false\n".into(),
            ..ProfileOpts::default()
        },
    );
    let state = env.dir.path().join("state");
    let mut d = Daemon::start_in(&env, &state, &[]);

    // A (client OWNER_A): the escaping tree; its three forks ignore SIGTERM and have no
    // PR_SET_PDEATHSIG (it is not inherited), so they survive the daemon.
    let tree = escaping_tree_script("recovery-tree");
    let mut a = Proc::spawn(as_client(
        d.run_cmd(&["--profile", PROFILE], &["sh", "-c", &tree]),
        OWNER_A,
    ));
    let tree_pids = read_tree_pids(&mut a, uid);
    let tree_cgroup = check_tree_is_escaping(&tree_pids, uid, &env.cgroup_parent);
    // B (client OWNER_B): a shell with one background child that survives it.
    let mut b = Proc::spawn(as_client(
        d.run_cmd(
            &["--profile", PROFILE],
            &[
                "sh",
                "-c",
                ": recovery-bg; sleep 1000 & echo BG $!; echo MAIN $$; wait",
            ],
        ),
        OWNER_B,
    ));
    let bg: i32 = b.wait_line("BG ", COMMAND_LIMIT)[3..].parse().unwrap();
    let b_main: i32 = b.wait_line("MAIN ", COMMAND_LIMIT)[5..].parse().unwrap();
    // C (root): a single process that dies with the daemon; recovery must still clean up.
    let mut c = Proc::spawn(d.run_cmd(
        &["--profile", PROFILE],
        &[
            "sh",
            "-c",
            ": recovery-single; echo MAIN $$; exec sleep 1000",
        ],
    ));
    let c_main: i32 = c.wait_line("MAIN ", COMMAND_LIMIT)[5..].parse().unwrap();

    let id_a = d.job_id_from_ps("recovery-tree");
    let id_b = d.job_id_from_ps("recovery-bg");
    let id_c = d.job_id_from_ps("recovery-single");
    let mut all_ids = vec![id_a.clone(), id_b.clone(), id_c.clone()];
    all_ids.sort();
    // CONTROL: each job is recorded, has its cgroup and its fresh workspace.
    let records: Vec<String> = all_ids.iter().map(|i| format!("{i}.json")).collect();
    assert_eq!(entries(&state.join("jobs")), records);
    for id in &all_ids {
        assert!(!env.cgroups_of_job(id).is_empty(), "{id} has no cgroup");
        assert!(
            state
                .join("workspaces")
                .join(format!("stockade-ws-{id}"))
                .is_dir(),
            "{id} has no fresh workspace"
        );
    }
    assert!(
        tree_cgroup.ends_with(&id_a),
        "{tree_cgroup} is not {id_a}'s"
    );

    // SIGKILL: the daemon gets no chance to clean anything up.
    kill(Pid::from_raw(d.pid()), Signal::SIGKILL).unwrap();
    let until = Instant::now() + SETTLE_LIMIT;
    while d.is_running() {
        assert!(Instant::now() < until, "daemon survived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (name, p) in [("A", a), ("B", b), ("C", c)] {
        let out = p.finish();
        assert_ne!(out.code(), 0, "client {name} must fail\n{}", out.describe());
        assert!(
            out.stderr.contains("closed the connection"),
            "client {name}\n{}",
            out.describe()
        );
    }
    // CONTROL: what PR_SET_PDEATHSIG cannot cover survives, still in the job's cgroup: the tree's
    // three forks and B's background child. The main processes got SIGKILL.
    let until = Instant::now() + SETTLE_LIMIT;
    while [b_main, c_main, tree_pids[0].1]
        .iter()
        .any(|p| is_process_of_uid(*p, uid) && !proc_info(*p).unwrap().state.starts_with('Z'))
    {
        assert!(
            Instant::now() < until,
            "the jobs' main processes outlived the daemon"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let survivors: Vec<i32> = tree_pids[1..].iter().map(|(_, p)| *p).chain([bg]).collect();
    for p in &survivors {
        let info = proc_info(*p).unwrap_or_else(|| panic!("survivor {p} is gone already"));
        assert!(
            info.uids.contains(&uid) && !info.state.starts_with('Z'),
            "{info:?}"
        );
        let cg = unified_cgroup_of(*p).unwrap();
        assert!(
            cg.starts_with(&format!("/{}/", env.cgroup_parent)),
            "{p} left its job cgroup: {cg}"
        );
    }
    assert_eq!(
        entries(&state.join("jobs")),
        records,
        "records after the crash"
    );

    // Restart on the same state directory: recovery runs before the first request is served.
    let d2 = Daemon::start_in(&env, &state, &[]);
    let lost = lost_jobs(&d2.socket);

    // No job process survives (every pid checked, zombies count), no job cgroup, no workspace,
    // no job record.
    let all_pids: Vec<(String, i32)> = tree_pids
        .iter()
        .cloned()
        .chain([
            ("bg".into(), bg),
            ("b-main".into(), b_main),
            ("c-main".into(), c_main),
        ])
        .collect();
    assert_no_job_process(&env, "after the restart");
    assert_pids_gone(&all_pids, uid);
    assert!(env.job_cgroups().is_empty(), "{:?}", env.job_cgroups());
    assert_eq!(entries(&state.join("workspaces")), Vec::<String>::new());
    assert_eq!(entries(&state.join("jobs")), Vec::<String>::new());

    // Each job is lost, with how many processes were found and killed.
    let mut got: Vec<&str> = lost.iter().map(|l| l.record.job.as_str()).collect();
    got.sort();
    assert_eq!(got, all_ids.iter().map(String::as_str).collect::<Vec<_>>());
    for (id, owner, killed) in [
        (&id_a, Some(OWNER_A), 3),
        (&id_b, Some(OWNER_B), 1),
        (&id_c, Some(0), 0),
    ] {
        let l = lost.iter().find(|l| &l.record.job == id).unwrap();
        assert_eq!(l.owner_uid, owner, "{l:?}");
        assert_eq!(l.record.profile, PROFILE);
        assert_eq!(l.record.exit_code, 125);
        assert!(l.started_unix_ms > 0 && l.recovered_unix_ms >= l.started_unix_ms);
        let Cause::Lost { detail } = &l.record.cause else {
            panic!("{id}: cause {:?}", l.record.cause)
        };
        assert!(
            detail.contains(&format!("at restart {killed} of its processes"))
                && detail.contains("cgroup and workspace were removed"),
            "{id}: {detail}"
        );
    }
    assert_eq!(
        lost.iter().find(|l| l.record.job == id_a).unwrap().argv,
        ["sh", "-c", tree.as_str()]
    );

    // Visible to the owner only; root sees all. And it outlives another restart.
    let check_visibility = |d: &Daemon| {
        assert_eq!(
            lost_ids_in_ps(d, Some(OWNER_A)),
            std::slice::from_ref(&id_a)
        );
        assert_eq!(
            lost_ids_in_ps(d, Some(OWNER_B)),
            std::slice::from_ref(&id_b)
        );
        assert_eq!(lost_ids_in_ps(d, Some(STRANGER)), Vec::<String>::new());
        assert_eq!(lost_ids_in_ps(d, None), all_ids);
    };
    check_visibility(&d2);
    assert!(d2.stop().success());
    let d3 = Daemon::start_in(&env, &state, &[]);
    check_visibility(&d3);
    assert_eq!(
        lost_jobs(&d3.socket),
        lost,
        "lost records changed across a restart"
    );
    assert!(d3.stop().success());
    drop(d);
    env.finish();
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    if !require_root("a_second_daemon_on_the_same_state_dir_is_refused") {
        return;
    }
    let env = TestEnv::new("recovery-lock", 61304);
    let state = env.dir.path().join("state");
    let d = Daemon::start_in(&env, &state, &[]);
    // Another socket, same state directory: recovery there would kill the first daemon's jobs.
    let socket = env.dir.path().join("other.sock");
    let mut cmd = std::process::Command::new(STOCKADE);
    cmd.arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        .arg("--profiles")
        .arg(&env.profiles)
        .arg("--cgroup-parent")
        .arg(&env.cgroup_parent);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr
            .contains(&format!("state directory {} is in use", state.display())),
        "{}",
        out.describe()
    );
    assert!(!socket.exists(), "a refused daemon left its socket");
    // The first daemon still serves.
    let ok = d.run(&["true"]);
    assert_eq!(ok.code(), 0, "{}", ok.describe());
    assert!(d.stop().success());
    env.finish();
}

/// The cgroup2 mount (`/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`).
fn cgroup2_root() -> std::path::PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.procs");
    if hybrid.exists() {
        hybrid.parent().unwrap().to_path_buf()
    } else {
        "/sys/fs/cgroup".into()
    }
}

/// A root-owned `sleep` moved into a new cgroup2 group `<parent>/<name>`.
fn sleeper_in_group(parent: &str, name: &str) -> (std::process::Child, std::path::PathBuf) {
    let dir = cgroup2_root().join(parent).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    (child, dir)
}

#[test]
fn an_unreadable_record_is_still_recovered_and_unrecorded_groups_are_left_alone() {
    if !require_root("an_unreadable_record_is_still_recovered_and_unrecorded_groups_are_left_alone")
    {
        return;
    }
    let env = TestEnv::new("recovery-odd", 61307);
    let state = env.dir.path().join("state");
    std::fs::create_dir_all(state.join("jobs")).unwrap();
    std::fs::create_dir_all(state.join("workspaces")).unwrap();
    // A job whose record is garbage (say, cut short by a host crash) but whose cgroup and
    // workspace exist, with a process still in the group.
    let corrupt = "j-0000000000aa";
    std::fs::write(
        state.join("jobs").join(format!("{corrupt}.json")),
        b"{\"vers",
    )
    .unwrap();
    let (mut victim, victim_dir) = sleeper_in_group(&env.cgroup_parent, corrupt);
    let ws = state
        .join("workspaces")
        .join(format!("stockade-ws-{corrupt}"));
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("file"), b"x").unwrap();
    // A fresh workspace no record claims (a host crash before the record reached the disk), and
    // something in workspaces/ that stockade did not create.
    let unclaimed = state.join("workspaces").join("stockade-ws-j-0000000000bb");
    std::fs::create_dir(&unclaimed).unwrap();
    let not_ours = state.join("workspaces").join("keep-me");
    std::fs::create_dir(&not_ours).unwrap();
    // A job group under the same parent that no record names (a `stockade exec` job, say).
    let (mut foreign, foreign_dir) = sleeper_in_group(&env.cgroup_parent, "j-0000000000cc");

    let d = Daemon::start_in(&env, &state, &[]);
    let lost = lost_jobs(&d.socket);
    // The recorded job: its process killed, its group, workspace and record gone; lost, with no
    // known owner, so only root sees it.
    let status = victim.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(!victim_dir.exists(), "{} left", victim_dir.display());
    assert!(env.cgroups_of_job(corrupt).is_empty());
    assert!(!ws.exists() && !unclaimed.exists());
    assert!(
        not_ours.exists(),
        "recovery removed a directory it did not create"
    );
    assert_eq!(entries(&state.join("jobs")), Vec::<String>::new());
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].record.job, corrupt);
    assert_eq!(lost[0].owner_uid, None);
    let Cause::Lost { detail } = &lost[0].record.cause else {
        panic!("{lost:?}")
    };
    assert!(detail.contains("at restart 1 of its processes"), "{detail}");
    assert_eq!(lost_ids_in_ps(&d, Some(OWNER_A)), Vec::<String>::new());
    assert_eq!(lost_ids_in_ps(&d, None), [corrupt.to_string()]);
    // The unrecorded group: untouched, its process alive, and the daemon says so in its log.
    assert!(foreign_dir.is_dir());
    assert_eq!(
        foreign.try_wait().unwrap(),
        None,
        "recovery killed a job it does not own"
    );
    let log = d.log.clone();
    assert!(d.stop().success());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("left alone"),
        "no warning about the unrecorded group"
    );
    foreign.kill().unwrap();
    foreign.wait().unwrap();
    let until = Instant::now() + SETTLE_LIMIT;
    while std::fs::remove_dir(&foreign_dir).is_err() {
        assert!(Instant::now() < until, "rmdir {}", foreign_dir.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_dir(&not_ours).unwrap();
    env.finish();
}
