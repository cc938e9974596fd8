use super::*;
use stockade_sandbox::Status;

fn parse(text: &str) -> Result<Profile, Vec<ProfileError>> {
    parse_profile(
        Path::new("/etc/stockade/p.toml"),
        "p",
        text,
        &HostAccounts::none(),
    )
}

const MINIMAL: &str = "[identity]\nuid = 61000\ngid = 61000\n[limits]\nwall_timeout_secs = 60\n";

#[test]
fn embedded_defaults_load_and_have_the_expected_deadlines() {
    let set = ProfileSet::embedded(&HostAccounts::none()).unwrap();
    assert_eq!(set.names(), ["agent", "build", "git"]);
    assert_eq!(
        set.get("agent").unwrap().wall_timeout,
        Duration::from_secs(300)
    );
    assert_eq!(
        set.get("git").unwrap().wall_timeout,
        Duration::from_secs(600)
    );
    assert_eq!(
        set.get("build").unwrap().wall_timeout,
        Duration::from_secs(1800)
    );
    for name in set.names() {
        let p = set.get(name).unwrap();
        assert!(p.uid >= 61000 && p.gid >= 61000, "{name}");
        assert!(p.grace.as_secs() > 0, "{name}");
    }
}

#[test]
fn embedded_defaults_do_not_collide_with_this_hosts_accounts() {
    let accounts = HostAccounts::read(Path::new("/etc/passwd"), Path::new("/etc/group"));
    ProfileSet::embedded(&accounts).unwrap();
}

#[test]
fn unknown_keys_are_refused_with_file_line_and_hint() {
    let errs = parse(&format!("{MINIMAL}memory_mbi = 5\n")).unwrap_err();
    let msg = errs[0].to_string();
    assert!(
        msg.starts_with("/etc/stockade/p.toml: unknown field `memory_mbi`"),
        "{msg}"
    );
    assert!(msg.contains("(line 6)"), "{msg}");
    assert!(msg.contains("hint: see docs/profiles.md"), "{msg}");
}

#[test]
fn every_problem_is_reported_with_key_value_and_reason() {
    let text = "[identity]\nuid = 0\ngid = 65534\n[limits]\nwall_timeout_secs = 0\ngrace_secs = 301\npids = 0\n";
    let msgs: Vec<String> = parse(text)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        msgs,
        [
            "/etc/stockade/p.toml: identity.uid = 0: jobs never run as root\n  hint: pick an unused id from a dedicated range such as 61000-61999",
            "/etc/stockade/p.toml: identity.gid = 65534: the overflow id (nobody/nogroup) is shared with every unmapped file on the host\n  hint: pick an unused id from a dedicated range such as 61000-61999",
            "/etc/stockade/p.toml: limits.wall_timeout_secs = 0: must be between 1 and 604800 (a week)",
            "/etc/stockade/p.toml: limits.grace_secs = 301: must be at most 300",
            "/etc/stockade/p.toml: limits.pids = 0: must be at least 1\n  hint: omit the key for no limit",
        ]
    );
}

#[test]
fn a_host_account_id_is_refused() {
    let mut accounts = HostAccounts::none();
    accounts.users.insert(61000, "alice".into());
    let errs = parse_profile(Path::new("p.toml"), "p", MINIMAL, &accounts).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "p.toml: identity.uid = 61000: already belongs to host account \"alice\"; a job would share its files and processes\n  hint: pick an id no host account uses"
    );
}

#[test]
fn requests_may_only_narrow() {
    let mut p = parse(MINIMAL).unwrap();
    p.env_set.insert("PATH".into(), "/bin".into());
    p.env_allow = vec!["TERM".into()];
    let ok = p
        .resolve(&Overrides {
            timeout: Some(Duration::from_secs(5)),
            env: vec![("TERM".into(), "xterm".into())],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ok.wall_timeout, Duration::from_secs(5));
    assert_eq!(
        ok.env,
        [
            ("PATH".to_string(), "/bin".to_string()),
            ("TERM".to_string(), "xterm".to_string())
        ]
    );

    let wider = p.resolve(&Overrides {
        timeout: Some(Duration::from_secs(61)),
        ..Default::default()
    });
    assert_eq!(
        wider.unwrap_err().0,
        "timeout 61s exceeds profile p's wall_timeout_secs = 60 (a request may only shorten it)"
    );
    let env = p.resolve(&Overrides {
        env: vec![("LD_PRELOAD".into(), "/x.so".into())],
        ..Default::default()
    });
    assert_eq!(
        env.unwrap_err().0,
        "environment variable LD_PRELOAD is not in profile p's env.allow [\"TERM\"]"
    );
    // A request cannot override a fixed variable either: PATH is not in allow.
    assert!(p
        .resolve(&Overrides {
            env: vec![("PATH".into(), "/tmp".into())],
            ..Default::default()
        })
        .is_err());
    assert!(p
        .resolve(&Overrides {
            timeout: Some(Duration::ZERO),
            ..Default::default()
        })
        .is_err());
}

#[test]
fn load_dir_replaces_the_defaults_and_reports_every_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.toml"), MINIMAL).unwrap();
    let set = ProfileSet::load_dir(dir.path(), &HostAccounts::none()).unwrap();
    assert_eq!(set.names(), ["mine"]);
    assert!(set.unknown("agent").0.contains("unknown profile \"agent\""));

    std::fs::write(dir.path().join("bad1.toml"), "nonsense").unwrap();
    std::fs::write(dir.path().join("bad2.toml"), MINIMAL.replace("61000", "0")).unwrap();
    let errs = ProfileSet::load_dir(dir.path(), &HostAccounts::none()).unwrap_err();
    assert_eq!(errs.0.len(), 3, "{errs}");

    let empty = tempfile::tempdir().unwrap();
    let err = ProfileSet::load_dir(empty.path(), &HostAccounts::none())
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("no *.toml profiles in this directory"),
        "{err}"
    );
}

const LIMITED: &str = "[identity]\nuid = 61000\ngid = 61000\n[limits]\nwall_timeout_secs = 60\n\
cpu_secs = 30\nidle_timeout_secs = 10\noutput_mib = 4\nworkspace_mib = 64\nmemory_mib = 512\npids = 100\n";

#[test]
fn new_limit_keys_parse_into_durations_and_bytes() {
    let p = parse(LIMITED).unwrap();
    assert_eq!(p.cpu_limit, Some(Duration::from_secs(30)));
    assert_eq!(p.idle_timeout, Some(Duration::from_secs(10)));
    assert_eq!(p.output_limit_bytes, Some(4 << 20));
    assert_eq!(p.workspace_bytes, Some(64 << 20));
    assert_eq!(p.limits_requirement, Requirement::Required);
    // Omitted: no limit.
    let m = parse(MINIMAL).unwrap();
    assert_eq!(
        (
            m.cpu_limit,
            m.idle_timeout,
            m.output_limit_bytes,
            m.workspace_bytes
        ),
        (None, None, None, None)
    );
}

fn problems(text: &str) -> Vec<String> {
    parse(text)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn zero_and_negative_limits_are_refused_naming_the_key() {
    let text = "[identity]\nuid = 61000\ngid = 61000\n[limits]\nwall_timeout_secs = -5\n\
grace_secs = -1\nmemory_mib = -1\ncpu_secs = 0\nidle_timeout_secs = -3\noutput_mib = 0\n\
workspace_mib = -64\npids = -2\n";
    assert_eq!(
        problems(text),
        [
            "/etc/stockade/p.toml: limits.wall_timeout_secs = -5: must be between 1 and 604800 (a week)",
            "/etc/stockade/p.toml: limits.grace_secs = -1: must be at least 0",
            "/etc/stockade/p.toml: limits.memory_mib = -1: must be at least 8\n  hint: omit the key for no limit",
            "/etc/stockade/p.toml: limits.pids = -2: must be at least 1\n  hint: omit the key for no limit",
            "/etc/stockade/p.toml: limits.cpu_secs = 0: must be at least 1\n  hint: omit the key for no limit",
            "/etc/stockade/p.toml: limits.idle_timeout_secs = -3: must be at least 1\n  hint: omit the key for no limit",
            "/etc/stockade/p.toml: limits.output_mib = 0: must be at least 1\n  hint: omit the key for no limit",
            "/etc/stockade/p.toml: limits.workspace_mib = -64: must be at least 1\n  hint: omit the key for no limit",
        ]
    );
}

#[test]
fn limits_above_their_bounds_are_refused() {
    let text = format!(
        "{MINIMAL}idle_timeout_secs = 61\ncpu_secs = 604801\noutput_mib = 1073741825\npids = 4194305\n\
[mechanisms]\nlimits = \"off\"\n"
    );
    assert_eq!(
        problems(&text),
        [
            "/etc/stockade/p.toml: limits.pids = 4194305: must be at most 4194304 (the kernel's PID_MAX_LIMIT)",
            "/etc/stockade/p.toml: limits.cpu_secs = 604801: must be at most 604800 (a week of CPU time)",
            "/etc/stockade/p.toml: limits.idle_timeout_secs = 61: must be at most limits.wall_timeout_secs (60): the wall-clock deadline would always come first",
            "/etc/stockade/p.toml: limits.output_mib = 1073741825: must be at most 1073741824 (1 PiB)",
            "/etc/stockade/p.toml: mechanisms.limits = \"off\": limits cannot be turned off (remove a limit's key for no limit)\n  hint: use \"required\" or \"best_effort\"",
        ]
    );
}

#[test]
fn a_workspace_budget_needs_the_mount_namespace() {
    let text = format!("{MINIMAL}workspace_mib = 16\n[namespaces]\nmount = false\n");
    assert_eq!(
        problems(&text),
        ["/etc/stockade/p.toml: limits.workspace_mib = 16: needs namespaces.mount = true: the budget is a size-limited tmpfs mounted on the fresh workspace in the job's own mount namespace\n  hint: enable namespaces.mount or omit the key"]
    );
}

#[test]
fn requests_may_only_lower_cpu_idle_and_output_limits() {
    let p = parse(LIMITED).unwrap();
    let r = p
        .resolve(&Overrides {
            cpu_limit: Some(Duration::from_secs(2)),
            idle_timeout: Some(Duration::from_millis(1500)),
            output_limit_bytes: Some(1 << 20),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.cpu_limit, Some(Duration::from_secs(2)));
    assert_eq!(r.idle_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(r.output_limit_bytes, Some(1 << 20));
    // Nothing asked: the profile's.
    let d = p.resolve(&Overrides::default()).unwrap();
    assert_eq!(
        (d.cpu_limit, d.idle_timeout, d.output_limit_bytes),
        (
            Some(Duration::from_secs(30)),
            Some(Duration::from_secs(10)),
            Some(4 << 20)
        )
    );
    let refuse = |o: Overrides| p.resolve(&o).unwrap_err().0;
    assert_eq!(
        refuse(Overrides {
            cpu_limit: Some(Duration::from_secs(31)),
            ..Default::default()
        }),
        "CPU limit 31s exceeds profile p's limits.cpu_secs = 30 (a request may only lower it)"
    );
    assert_eq!(
        refuse(Overrides {
            idle_timeout: Some(Duration::from_millis(10_500)),
            ..Default::default()
        }),
        "idle timeout 10.500s exceeds profile p's limits.idle_timeout_secs = 10 (a request may only lower it)"
    );
    assert_eq!(
        refuse(Overrides {
            output_limit_bytes: Some((4 << 20) + 1),
            ..Default::default()
        }),
        "output limit 4194305 bytes exceeds profile p's limits.output_mib = 4 (4194304 bytes; a request may only lower it)"
    );
    for zero in [
        Overrides {
            cpu_limit: Some(Duration::ZERO),
            ..Default::default()
        },
        Overrides {
            idle_timeout: Some(Duration::ZERO),
            ..Default::default()
        },
        Overrides {
            output_limit_bytes: Some(0),
            ..Default::default()
        },
    ] {
        assert!(refuse(zero).contains("must be greater than 0"));
    }
    // A profile without a limit: a request may set one (that narrows "unlimited").
    let m = parse(MINIMAL).unwrap();
    let r = m
        .resolve(&Overrides {
            cpu_limit: Some(Duration::from_secs(2)),
            output_limit_bytes: Some(10),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.cpu_limit, Some(Duration::from_secs(2)));
    assert_eq!(r.output_limit_bytes, Some(10));
}

fn host(memory_controller: bool, pids_controller: bool, cpu_accounting: bool) -> HostLimits {
    HostLimits {
        memory_bytes: Some(1 << 30),
        cpus: 2,
        memory_controller,
        pids_controller,
        cpu_accounting,
        layout: "v2 (/sys/fs/cgroup, controllers: cpu)".into(),
    }
}

fn set_of(text: &str) -> ProfileSet {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    ProfileSet::load_dir(dir.path(), &HostAccounts::none()).unwrap()
}

#[test]
fn a_required_limit_this_host_cannot_enforce_refuses_the_profile() {
    let ok = set_of(LIMITED).check_host(&host(true, true, true)).unwrap();
    assert!(ok.get("p").unwrap().host_notes.is_empty());

    let big = LIMITED
        .replace("memory_mib = 512", "memory_mib = 2048")
        .replace("workspace_mib = 64", "workspace_mib = 4096")
        .replace("cpu_secs = 30", "cpu_secs = 121");
    let errs = set_of(&big)
        .check_host(&host(true, false, true))
        .unwrap_err();
    let msgs: Vec<String> = errs
        .0
        .iter()
        .map(|e| {
            let s = e.to_string();
            // The temp dir differs per run: keep from the key on.
            s[s.find(": limits.").unwrap() + 2..].to_string()
        })
        .collect();
    let hint = "\n  hint: lower or remove the limit, or set mechanisms.limits = \"best_effort\" to run with what this host can enforce";
    assert_eq!(
        msgs,
        [
            format!("limits.memory_mib = 2048: exceeds this host's memory (1024 MiB): it would limit nothing{hint}"),
            format!("limits.pids = 100: the pids cgroup controller is not available on this host (v2 (/sys/fs/cgroup, controllers: cpu)){hint}"),
            format!("limits.cpu_secs = 121: can never be reached on this host: wall_timeout_secs 60 × 2 CPUs = 120 CPU-seconds{hint}"),
            format!("limits.workspace_mib = 4096: exceeds this host's memory (1024 MiB), which holds the workspace tmpfs: it would limit nothing{hint}"),
        ]
    );
    assert!(errs.0.iter().all(|e| e.file.ends_with("p.toml")));
    let no_mem = set_of(LIMITED)
        .check_host(&host(false, true, false))
        .unwrap_err()
        .to_string();
    assert!(
        no_mem.contains("limits.memory_mib = 512: the memory cgroup controller is not available"),
        "{no_mem}"
    );
    assert!(
        no_mem.contains("limits.cpu_secs = 30: this host has neither cgroup2"),
        "{no_mem}"
    );
}

#[test]
fn a_best_effort_limit_this_host_cannot_enforce_is_dropped_and_noted() {
    let text = format!("{LIMITED}[mechanisms]\nlimits = \"best_effort\"\n")
        .replace("memory_mib = 512", "memory_mib = 2048");
    let set = set_of(&text).check_host(&host(true, false, false)).unwrap();
    let p = set.get("p").unwrap();
    // Above host RAM: kept (harmless) and noted as partial; missing controllers: dropped.
    assert_eq!(p.memory_bytes, Some(2048 << 20));
    assert_eq!(p.pids, None);
    assert_eq!(p.cpu_limit, None);
    let notes: Vec<(&str, Status)> = p
        .host_notes
        .iter()
        .map(|n| (n.mechanism.as_str(), n.status))
        .collect();
    assert_eq!(
        notes,
        [
            ("cgroup.memory", Status::Partial),
            ("cgroup.pids", Status::NotEnforced),
            ("cgroup.cpu_time", Status::NotEnforced),
        ]
    );
    assert!(p.host_notes[1]
        .detail
        .starts_with("limits.pids = 100: the pids cgroup controller"));
    // A request cannot bring back a CPU limit this host cannot account.
    let err = p
        .resolve(&Overrides {
            cpu_limit: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .unwrap_err()
        .0;
    assert!(
        err.starts_with("a CPU limit cannot be enforced on this host (limits.cpu_secs = 30: "),
        "{err}"
    );
}

#[test]
fn host_limits_read_meminfo_and_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let meminfo = dir.path().join("meminfo");
    std::fs::write(&meminfo, "MemTotal:       24684544 kB\nMemFree: 1 kB\n").unwrap();
    let layout = stockade_sandbox::cgroup::Layout::V1 {
        v1: [("pids".to_string(), dir.path().join("pids"))].into(),
    };
    let h = HostLimits::detect(&layout, &meminfo);
    assert_eq!(h.memory_bytes, Some(24684544 * 1024));
    assert!(h.pids_controller && !h.memory_controller && !h.cpu_accounting);
    assert!(h.cpus >= 1);
    let none = HostLimits::detect(&layout, &dir.path().join("missing"));
    assert_eq!(none.memory_bytes, None);
}
