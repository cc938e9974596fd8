//! Limits, deadlines and teardown causes on the real kernel (root). Each limit is proven by a job
//! that tries to break it; each test then checks the cause, the accounting in the result record,
//! and that nothing (process, cgroup, workspace) is left.
//!
//! Uids 61250-61299 belong to this file. No assertion is about how long something took: causes
//! and accounting only (generous bounds catch hangs).

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use stockade_protocol::{Cause, Enforcement, ResultRecord};

fn opts(extra_limits: &str) -> ProfileOpts {
    ProfileOpts {
        extra_limits: extra_limits.into(),
        ..ProfileOpts::default()
    }
}

fn mechanism<'a>(rec: &'a ResultRecord, name: &str) -> &'a stockade_protocol::Mechanism {
    rec.enforcement
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no {name} in the enforcement report: {:#?}",
                rec.enforcement
            )
        })
}

/// Every cause stockade decides must carry the accounting: CPU time and peak memory (both
/// available on every layout this host has), and pids peak where the job had a pids limit.
fn assert_accounted(rec: &ResultRecord, out: &Outcome) {
    assert!(rec.cpu_ms.is_some(), "cpu_ms missing\n{}", out.describe());
    assert!(
        rec.peak_memory_bytes.is_some_and(|p| p > 0),
        "peak memory missing\n{}",
        out.describe()
    );
    assert!(
        rec.pids_peak.is_some_and(|p| p >= 1),
        "pids peak missing\n{}",
        out.describe()
    );
    assert!(rec.uid.is_some(), "{}", out.describe());
}

#[test]
fn fork_bomb_stays_at_pids_max_and_ends_by_deadline() {
    if !require_root("fork_bomb_stays_at_pids_max_and_ends_by_deadline") {
        return;
    }
    let env = TestEnv::with_profile(
        "lim-forkbomb",
        61250,
        ProfileOpts {
            pids: 32,
            ..ProfileOpts::default()
        },
    );
    // The classic bomb, in the background; the main process stays (exec: no fork needed) so
    // that only the deadline ends the job.
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--timeout", "4"],
        &["sh", "-c", "b() { b | b & }; b; exec sleep 1000"],
    );
    assert_eq!(out.code(), 124, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::WallTimeout);
    assert_accounted(&rec, &out);
    // It got to the limit, and never past it.
    assert_eq!(rec.pids_peak, Some(32), "{}", out.describe());
    // The shells were told no: fork failed with EAGAIN at pids.max.
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource temporarily unavailable"),
        "no refused fork in the job's stderr\n{}",
        out.describe()
    );
    env.finish();
}

#[test]
fn memory_hog_is_oom_killed_with_peak_at_the_limit_and_no_swap() {
    if !require_root("memory_hog_is_oom_killed_with_peak_at_the_limit_and_no_swap") {
        return;
    }
    let env = TestEnv::with_profile(
        "lim-oom",
        61251,
        ProfileOpts {
            memory_mib: 64,
            ..ProfileOpts::default()
        },
    );
    // `tail` keeps the last "line" of 1 GiB of zeros (no newline) in memory: it grows until
    // the kernel kills it.
    let out = env.exec(&["sh", "-c", "head -c 1073741824 /dev/zero | tail"]);
    assert_eq!(out.code(), 137, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::OomKilled);
    assert_eq!(rec.exit_code, 137);
    assert_accounted(&rec, &out);
    // `stockade exec` says on stderr why the job ended.
    assert!(
        out.stderr_lines()
            .iter()
            .any(|l| l.contains(&rec.job) && l.contains("memory limit")),
        "{}",
        out.describe()
    );
    let limit = 64u64 << 20;
    let peak = rec.peak_memory_bytes.unwrap();
    assert!(
        peak <= limit && peak >= limit / 10 * 9,
        "peak {peak} should be within 10% below the {limit}-byte limit"
    );
    // Swap is off for the job (this host accounts swap: memory.memsw.* exist).
    let mem = mechanism(&rec, "cgroup.memory");
    assert_eq!(mem.status, Enforcement::Enforced, "{mem:?}");
    assert_eq!(mem.detail, format!("{limit} bytes, no swap"));
    env.finish();
}

#[test]
fn busy_job_is_ended_at_its_cpu_limit_even_across_children() {
    if !require_root("busy_job_is_ended_at_its_cpu_limit_even_across_children") {
        return;
    }
    let env = TestEnv::with_profile("lim-cpu", 61252, opts("cpu_secs = 30\n"));
    for (what, script) in [
        ("yes", "yes > /dev/null"),
        // Many short children, each well under a second of CPU: a per-process RLIMIT_CPU
        // (reset by every fork) would never fire, the cgroup's count does.
        (
            "children",
            "while :; do sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done'; done",
        ),
    ] {
        let out = env.exec_args(
            &["--profile", PROFILE, "--json", "--cpu-limit", "2"],
            &["sh", "-c", script],
        );
        assert_eq!(out.code(), 124, "{what}\n{}", out.describe());
        let rec = out.record();
        assert_eq!(rec.cause, Cause::CpuTimeout, "{what}\n{}", out.describe());
        assert_accounted(&rec, &out);
        let cpu = rec.cpu_ms.unwrap();
        assert!(
            cpu >= 2000,
            "{what}: ended at {cpu} ms of CPU, below the limit"
        );
        assert!(
            out.stderr_lines()
                .iter()
                .any(|l| l.contains(&rec.job) && l.contains("CPU-time limit")),
            "{}",
            out.describe()
        );
        assert_eq!(
            mechanism(&rec, "cgroup.cpu_time").detail,
            "2000 ms of CPU for the whole job, polled from cgroup2 cpu.stat"
        );
        env.assert_nothing_left(what);
    }
    // A request may only lower the profile's limit.
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--cpu-limit", "31"],
        &["true"],
    );
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert_eq!(
        out.record().cause,
        Cause::Rejected {
            reason: "CPU limit 31s exceeds profile t's limits.cpu_secs = 30 (a request may only \
                     lower it)"
                .into()
        }
    );
    env.finish();
}

#[test]
fn silent_job_is_ended_as_idle_timeout_and_output_resets_the_clock() {
    if !require_root("silent_job_is_ended_as_idle_timeout_and_output_resets_the_clock") {
        return;
    }
    let env = TestEnv::with_profile("lim-idle", 61253, opts("idle_timeout_secs = 60\n"));
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--idle-timeout", "1"],
        &["sleep", "1000"],
    );
    assert_eq!(out.code(), 124, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::IdleTimeout);
    assert_accounted(&rec, &out);
    assert_eq!(rec.output_bytes, 0);
    env.assert_nothing_left("silent job");

    // A job that talks (every 0.25 s, for 6 s: twelve times as often as its 3 s idle timeout)
    // is not idle, even though it runs longer than the timeout.
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--idle-timeout", "3"],
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 24 ]; do echo tick; sleep 0.25; i=$((i+1)); done",
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(out.record().cause, Cause::Exited { code: 0 });
    assert_eq!(out.stdout, "tick\n".repeat(24));
    assert_eq!(out.record().output_bytes, 120);
    env.finish();
}

#[test]
fn output_cap_delivers_exactly_the_cap_then_ends_the_job() {
    if !require_root("output_cap_delivers_exactly_the_cap_then_ends_the_job") {
        return;
    }
    let env = TestEnv::with_profile("lim-output", 61254, opts("output_mib = 64\n"));
    const CAP: usize = 1 << 20;
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--output-limit", "1M"],
        &["yes"],
    );
    assert_eq!(out.code(), 141, "{}", out.stderr);
    let rec = out.record();
    assert_eq!(rec.cause, Cause::OutputLimit);
    assert_accounted(&rec, &out);
    assert_eq!(out.stdout.len(), CAP, "exactly the cap is delivered");
    assert_eq!(
        out.stdout,
        "y\n".repeat(CAP / 2),
        "and it is the job's bytes, in order"
    );
    assert_eq!(rec.output_bytes, CAP as u64);
    assert!(rec.output_truncated);
    env.assert_nothing_left("yes");

    // stdout and stderr share one budget; through the daemon (the protocol's record) too.
    let d = Daemon::start(&env);
    let out = d.run_args(
        &["--profile", PROFILE, "--json", "--output-limit", "100000"],
        &["sh", "-c", "yes out & yes err >&2"],
    );
    assert_eq!(out.code(), 141, "{}", out.stdout.len());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::OutputLimit);
    let job_stderr = &out.stderr[..out
        .stderr
        .find("stockade: job")
        .unwrap_or_else(|| panic!("no stockade line on stderr: {}", out.stderr.len()))];
    assert_eq!(out.stdout.len() + job_stderr.len(), 100_000);
    assert!(out.stdout.bytes().all(|b| b"out\n".contains(&b)));
    assert!(job_stderr.bytes().all(|b| b"err\n".contains(&b)));
    assert_eq!(rec.output_bytes, 100_000);
    assert!(rec.output_truncated);
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn cancel_of_a_200_process_tree_ignoring_sigterm_leaves_no_process() {
    if !require_root("cancel_of_a_200_process_tree_ignoring_sigterm_leaves_no_process") {
        return;
    }
    const N: usize = 200;
    let env = TestEnv::with_profile(
        "lim-tree200",
        61255,
        ProfileOpts {
            pids: 512,
            ..ProfileOpts::default()
        },
    );
    // Half in new sessions (setsid), half double-forked (their parent subshell exits at once,
    // so they are reparented while the job runs); every one ignores SIGTERM and prints its pid.
    let script = format!(
        r#"i=0
while [ $i -lt {half} ]; do
  setsid sh -c 'trap "" TERM; echo pid $$; exec sleep 1000' &
  (sh -c 'trap "" TERM; echo pid $$; exec sleep 1000' &)
  i=$((i+1))
done
echo spawned
exec sleep 1000
"#,
        half = N / 2
    );
    let mut job =
        Proc::spawn(env.exec_cmd(&["--profile", PROFILE, "--json"], &["sh", "-c", &script]));
    // Lines come in any order (the children print concurrently with the loop).
    let mut pids = Vec::new();
    let mut spawned = false;
    while pids.len() < N || !spawned {
        let line = job.wait_line("", Duration::from_secs(60));
        if let Some(pid) = line.strip_prefix("pid ") {
            let pid: i32 = pid.trim().parse().expect("pid");
            pids.push((format!("p{}", pids.len()), pid));
        } else if line == "spawned" {
            spawned = true;
        }
    }
    // The job printed pids of its own pid namespace: what the host calls them.
    let host = host_pids(env.uid, &pids.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    for ((_, pid), h) in pids.iter_mut().zip(host) {
        *pid = h;
    }
    // Before canceling: all 200 alive, of the job's uid, ignoring SIGTERM, in the job's cgroup.
    let cgroup = unified_cgroup_of(pids[0].1).expect("cgroup of the first process");
    assert!(cgroup.starts_with(&format!("/{}/", env.cgroup_parent)));
    for (_, pid) in &pids {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info = proc_info(*pid).unwrap_or_else(|| panic!("{pid} is not running"));
            assert!(info.uids.contains(&env.uid), "{info:?}");
            if info.name == "sleep" {
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "{info:?} never became sleep"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(unified_cgroup_of(*pid).as_deref(), Some(cgroup.as_str()));
        let ign = status_field(*pid, "SigIgn:").unwrap();
        let mask = u64::from_str_radix(&ign, 16).unwrap();
        assert!(
            mask & (1 << (libc::SIGTERM - 1)) != 0,
            "{pid} must ignore SIGTERM"
        );
    }
    let sessions: std::collections::BTreeSet<_> =
        pids.iter().filter_map(|(_, p)| session_of(*p)).collect();
    assert!(
        sessions.len() > N / 2,
        "the setsid half has sessions of its own"
    );

    job.signal(Signal::SIGTERM);
    let out = job.finish();
    assert_eq!(out.code(), 143, "{}", out.describe());
    let rec = out.record();
    assert_eq!(rec.cause, Cause::Canceled);
    assert_accounted(&rec, &out);
    assert!(
        rec.pids_peak.unwrap() > N as u64,
        "pids peak {:?} counts the whole tree",
        rec.pids_peak
    );
    assert_eq!(cgroup, format!("/{}/{}", env.cgroup_parent, rec.job));
    // Every one of the 200 pids: gone (or reused by something that is not the job's).
    assert_pids_gone(&pids, env.uid);
    assert!(
        env.cgroups_of_job(&rec.job).is_empty(),
        "job cgroups left: {:?}",
        env.cgroups_of_job(&rec.job)
    );
    env.finish();
}

/// Bytes available to unprivileged users on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

#[test]
fn filling_the_workspace_budget_gets_enospc_and_the_host_disk_is_untouched() {
    if !require_root("filling_the_workspace_budget_gets_enospc_and_the_host_disk_is_untouched") {
        return;
    }
    const BUDGET_MIB: u64 = 512;
    let env = TestEnv::with_profile(
        "lim-disk",
        61256,
        ProfileOpts {
            memory_mib: 1024,
            extra_limits: format!("workspace_mib = {BUDGET_MIB}\n"),
            ..ProfileOpts::default()
        },
    );
    let before = free_bytes(&env.scratch);
    // Write up to 1 GiB in 64 MiB files (RLIMIT_FSIZE is 64 MiB), report,
    // then wait to be canceled while the data is held.
    let script = r#"
i=0
while [ $i -lt 16 ]; do
  if ! head -c 64m /dev/zero 2>&1 > "f$i"; then break; fi
  i=$((i+1))
done
echo "files $i"
echo "used $(du -sk . | cut -f1)"
echo "fstype $(stat -f -c %T .)"
echo held
exec sleep 1000
"#;
    let mut job =
        Proc::spawn(env.exec_cmd(&["--profile", PROFILE, "--json"], &["sh", "-c", script]));
    let files = job.wait_line("files ", Duration::from_secs(60));
    let used = job.wait_line("used ", Duration::from_secs(60));
    // The job's workspace is a tmpfs (RAM, bounded), not the host's disk.
    assert_eq!(
        job.wait_line("fstype ", Duration::from_secs(60)),
        "fstype tmpfs"
    );
    job.wait_line("held", Duration::from_secs(60));
    // While the job holds its budget: the host's copy of the workspace is empty and the host's
    // disk did not lose the budget's worth (other users of the disk add noise either way).
    let ws: Vec<_> = std::fs::read_dir(&env.scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(ws.len(), 1, "one fresh workspace: {ws:?}");
    assert_eq!(
        std::fs::read_dir(&ws[0]).unwrap().count(),
        0,
        "nothing the job wrote is on the host"
    );
    let during = free_bytes(&env.scratch);
    assert!(
        before.saturating_sub(during) < BUDGET_MIB << 20,
        "host free space fell by {} bytes",
        before.saturating_sub(during)
    );
    job.signal(Signal::SIGTERM);
    let out = job.finish();
    assert_eq!(out.code(), 143, "{}", out.describe());
    // Inside: the writes stopped at the budget with ENOSPC.
    assert!(
        out.stdout.contains("No space left on device"),
        "{}",
        out.describe()
    );
    let n: u64 = files["files ".len()..].parse().unwrap();
    assert!(n < 16, "{files}: the job wrote everything");
    let kib: u64 = used["used ".len()..].parse().unwrap();
    assert!(
        ((BUDGET_MIB - 1) * 1024..=BUDGET_MIB * 1024).contains(&kib),
        "{used} KiB: the job should have filled its {BUDGET_MIB} MiB budget"
    );
    let rec = out.record();
    assert_eq!(rec.cause, Cause::Canceled);
    assert_accounted(&rec, &out);
    assert_eq!(
        mechanism(&rec, "workspace.budget").detail,
        format!(
            "fresh workspace is a tmpfs of {} bytes (ENOSPC beyond)",
            BUDGET_MIB << 20
        )
    );
    env.finish();
}

#[test]
fn limits_the_host_cannot_enforce_refuse_required_profiles_and_are_reported_when_best_effort() {
    if !require_root(
        "limits_the_host_cannot_enforce_refuse_required_profiles_and_are_reported_when_best_effort",
    ) {
        return;
    }
    // More memory than any host has (1 PiB is the schema's maximum).
    let huge = 1u64 << 30;
    let env = TestEnv::with_profile(
        "lim-host",
        61257,
        ProfileOpts {
            memory_mib: huge,
            ..ProfileOpts::default()
        },
    );
    let file = env.profiles.join("t.toml");
    let out = env.exec(&["true"]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    assert!(
        out.stderr.contains(&format!(
            "{}: limits.memory_mib = {huge}: exceeds this host's memory",
            file.display()
        )),
        "{}",
        out.describe()
    );
    assert!(out.stderr.contains("mechanisms.limits = \"best_effort\""));
    env.assert_nothing_left("refused profile");

    // Negative and zero values: refused at load, naming file and key.
    env.write_profile(
        PROFILE,
        &profile_toml("lim-host", env.uid, &ProfileOpts::default()).replace(
            "fsize_mib = 64",
            "fsize_mib = 64\ncpu_secs = -1\noutput_mib = 0",
        ),
    );
    let out = env.exec(&["true"]);
    assert_eq!(out.code(), 125, "{}", out.describe());
    for needle in [
        format!(
            "{}: limits.cpu_secs = -1: must be at least 1",
            file.display()
        ),
        format!(
            "{}: limits.output_mib = 0: must be at least 1",
            file.display()
        ),
    ] {
        assert!(out.stderr.contains(&needle), "{needle}\n{}", out.describe());
    }

    // best_effort: the job runs, and the record says the limit is only partly in force.
    env.write_profile(
        PROFILE,
        &profile_toml(
            "lim-host",
            env.uid,
            &ProfileOpts {
                memory_mib: huge,
                extra_sections: "[mechanisms]\nlimits = \"best_effort\"\n".into(),
                ..ProfileOpts::default()
            },
        ),
    );
    let out = env.exec(&["true"]);
    assert_eq!(out.code(), 0, "{}", out.describe());
    let rec = out.record();
    let mem = mechanism(&rec, "cgroup.memory");
    assert_eq!(mem.status, Enforcement::Partial, "{mem:?}");
    assert!(
        mem.detail.starts_with(&format!(
            "limits.memory_mib = {huge}: exceeds this host's memory"
        )),
        "{mem:?}"
    );
    env.finish();
}

/// The state letter of a process (`R`, `S`, `Z`, ...).
fn state_of(pid: i32) -> Option<char> {
    proc_info(pid).and_then(|p| p.state.chars().next())
}

#[test]
fn teardown_does_not_wait_for_a_client_that_stopped_reading() {
    if !require_root("teardown_does_not_wait_for_a_client_that_stopped_reading") {
        return;
    }
    let env = TestEnv::new("lim-stalled", 61258);
    let d = Daemon::start(&env);
    let marker = "marker-stalled-client";
    let mut job = Proc::spawn(d.run_cmd(
        &["--profile", PROFILE, "--json"],
        &["sh", "-c", &format!(": {marker}; exec yes")],
    ));
    job.wait_line("y", Duration::from_secs(30));
    // The client stops reading: its socket, the daemon's output channel and the job's pipe fill
    // up, and `yes` blocks in write(2).
    job.signal(Signal::SIGSTOP);
    let id = d.job_id_from_ps(marker);
    let yes = loop {
        if let Some(p) = env.new_procs().into_iter().find(|p| p.name == "yes") {
            break p.pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while state_of(yes) != Some('S') {
        assert!(
            std::time::Instant::now() < until,
            "yes never blocked on its full pipe: {:?}",
            proc_info(yes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = d.client("cancel", &[&id]);
    assert_eq!(c.code(), 0, "{}", c.describe());
    // The job ends and its cgroup goes although the client still reads nothing: the output
    // readers are abandoned after their bound.
    env.assert_nothing_left("cancel with a stalled client");
    job.signal(Signal::SIGCONT);
    let out = job.finish();
    assert_eq!(out.code(), 143, "{}", out.stderr);
    let rec = out.record();
    assert_eq!(rec.cause, Cause::Canceled);
    assert_accounted(&rec, &out);
    assert!(rec.output_bytes > 0);
    assert!(d.stop().success());
    env.finish();
}

#[test]
fn a_named_workspace_cannot_get_a_budget() {
    if !require_root("a_named_workspace_cannot_get_a_budget") {
        return;
    }
    let env = TestEnv::with_profile("lim-named-ws", 61259, opts("workspace_mib = 16\n"));
    let ws = env.shared_workspace("ws");
    let ws_arg = ws.to_str().unwrap();
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--workspace", ws_arg],
        &["true"],
    );
    assert_eq!(out.code(), 125, "{}", out.describe());
    match out.record().cause {
        Cause::Rejected { reason } => assert!(
            reason.contains("limits.workspace_mib = 16 applies to fresh workspaces only"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    // best_effort: it runs on the host directory, and the record says the budget is not in force.
    env.write_profile(
        PROFILE,
        &profile_toml(
            "lim-named-ws",
            env.uid,
            &ProfileOpts {
                extra_limits: "workspace_mib = 16\n".into(),
                extra_sections: "[mechanisms]\nlimits = \"best_effort\"\n".into(),
                ..ProfileOpts::default()
            },
        ),
    );
    let out = env.exec_args(
        &["--profile", PROFILE, "--json", "--workspace", ws_arg],
        &["sh", "-c", "echo kept > f"],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    let budget = mechanism(&out.record(), "workspace.budget").clone();
    assert_eq!(budget.status, Enforcement::NotEnforced, "{budget:?}");
    assert_eq!(std::fs::read_to_string(ws.join("f")).unwrap(), "kept\n");
    std::fs::remove_file(ws.join("f")).unwrap();
    env.finish();
}
