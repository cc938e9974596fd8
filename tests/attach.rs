//! How the exec helper enters the job's cgroup: by default it is started there with
//! `clone3(CLONE_INTO_CGROUP)` (no `cgroup.procs` migration in the cgroup2 hierarchy; on hybrid
//! hosts the helper still joins the v1 `memory` and `pids` groups itself), and with the hidden
//! `--cgroup-attach procs` (the fallback path) it writes every `cgroup.procs`. Either way the job
//! and its children are in the job's own group in every hierarchy it uses, the enforcement report
//! says which path was taken, and nothing is left behind.

mod common;

use common::*;
use nix::sys::signal::Signal;
use stockade_protocol::Cause;

/// The `/proc/<pid>/cgroup` lines of a process that name a v1 `memory` or `pids` hierarchy or
/// the cgroup2 one (`0::`), as (hierarchy, path).
fn job_hierarchies(pid: i32) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = controllers.is_empty()
                || controllers.split(',').any(|c| c == "memory" || c == "pids");
            wanted.then(|| (controllers.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn the_helper_starts_in_its_cgroup_or_joins_it_and_says_which() {
    if !require_root("the_helper_starts_in_its_cgroup_or_joins_it_and_says_which") {
        return;
    }
    let env = TestEnv::new("attach", 61305);
    let hybrid = std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    for (attach, expect) in [
        (
            "auto",
            "clone3(CLONE_INTO_CGROUP) into the job's group under ",
        ),
        (
            "procs",
            "cgroup.procs write by the helper (--cgroup-attach procs)",
        ),
    ] {
        let mut p = Proc::spawn(env.exec_cmd(
            &["--profile", PROFILE, "--json", "--cgroup-attach", attach],
            &["sh", "-c", "echo MAIN $$; sleep 1000 & echo CHILD $!; wait"],
        ));
        let main: i32 = p.wait_line("MAIN ", COMMAND_LIMIT)[5..].parse().unwrap();
        let child: i32 = p.wait_line("CHILD ", COMMAND_LIMIT)[6..].parse().unwrap();
        // Pids of the job's own pid namespace: as the host knows them.
        let [main, child] = host_pids(env.uid, &[main, child])[..] else {
            unreachable!()
        };
        let seen = job_hierarchies(main);
        let unified = seen
            .iter()
            .find(|(c, _)| c.is_empty())
            .unwrap_or_else(|| panic!("{attach}: no cgroup2 line: {seen:?}"))
            .1
            .clone();
        let prefix = format!("/{}/j-", env.cgroup_parent);
        assert!(unified.starts_with(&prefix), "{attach}: main in {unified}");
        // Every hierarchy the job uses: the same job group, for the job and its child.
        let expected: Vec<(String, String)> = seen
            .iter()
            .map(|(c, _)| (c.clone(), unified.clone()))
            .collect();
        assert_eq!(seen, expected, "{attach}: main");
        assert_eq!(job_hierarchies(child), expected, "{attach}: child");
        if hybrid {
            assert_eq!(
                seen.len(),
                3,
                "{attach}: cgroup2, memory and pids: {seen:?}"
            );
        }
        p.signal(Signal::SIGTERM);
        let out = p.finish();
        let rec = out.record();
        assert_eq!(rec.cause, Cause::Canceled, "{}", out.describe());
        let attached = rec
            .enforcement
            .iter()
            .find(|m| m.name == "cgroup.attach")
            .unwrap_or_else(|| panic!("{attach}: no cgroup.attach in {rec:?}"));
        assert!(
            attached.detail.starts_with(expect),
            "{attach}: {}",
            attached.detail
        );
        env.assert_nothing_left(attach);
    }
    env.finish();
}
