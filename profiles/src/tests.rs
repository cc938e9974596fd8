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
    assert!(
        msg.ends_with("hint: did you mean limits.memory_mib? see docs/profiles.md for every key; unknown keys are refused so a typo cannot widen a policy"),
        "{msg}"
    );
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

/// The one error `text` produces, as printed.
fn only_error(text: &str) -> String {
    let errs = parse(text).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs[0].to_string()
}

#[test]
fn validation_errors_have_exact_messages_and_hints() {
    let id = "[identity]\nuid = 61000\ngid = 61000\n";
    let cases: Vec<(String, String)> = vec![
        (
            format!("{id}[limits]\nwall_timeout_secs = \"60\"\n"),
            "/etc/stockade/p.toml: limits.wall_timeout_secs = \"60\": invalid type: string \"60\", expected i64 (line 5)\n  hint: numbers and booleans are written without quotes"
                .into(),
        ),
        (
            format!("{MINIMAL}net = true\n"),
            "/etc/stockade/p.toml: unknown field `net`, expected one of `wall_timeout_secs`, `grace_secs`, `memory_mib`, `pids`, `nofile`, `fsize_mib`, `tmp_mib`, `shm_mib`, `cpu_secs`, `idle_timeout_secs`, `output_mib`, `workspace_mib` (line 6)\n  hint: `net` is not a key of [limits]; it belongs in [namespaces]"
                .into(),
        ),
        (
            format!("{id}[limit]\nwall_timeout_secs = 60\n"),
            "/etc/stockade/p.toml: unknown field `limit`, expected one of `description`, `identity`, `limits`, `env`, `namespaces`, `filesystem`, `network`, `seccomp`, `mechanisms`, `files`, `secrets` (line 4)\n  hint: did you mean limits or mechanisms.limits? see docs/profiles.md for every key; unknown keys are refused so a typo cannot widen a policy"
                .into(),
        ),
        (
            "[identity]\nuid = 61000\n[limits]\nwall_timeout_secs = 60\n".into(),
            "/etc/stockade/p.toml: missing field `gid`\n  hint: add `gid` to [identity]"
                .into(),
        ),
        (
            "[identity]\nuid = 61000\ngid = 61000\n".into(),
            "/etc/stockade/p.toml: missing field `limits`\n  hint: every profile needs [limits], its own or from the profile it extends"
                .into(),
        ),
        (
            format!("{MINIMAL}[seccomp]\nextra_deny = [\"ptrac\"]\n"),
            format!("/etc/stockade/p.toml: seccomp.extra_deny = \"ptrac\": unknown system call \"ptrac\" on {}\n  hint: system call names are those of syscalls(2), without a sys_ prefix (e.g. \"ptrace\", \"process_vm_readv\")", std::env::consts::ARCH),
        ),
        (
            format!("{MINIMAL}[filesystem]\nread_only = [\"etc\"]\n"),
            "/etc/stockade/p.toml: filesystem.read_only = \"etc\": must be an absolute path without `..`\n  hint: paths are absolute: did you mean \"/etc\"?"
                .into(),
        ),
        (
            format!("{MINIMAL}[filesystem]\nread_only = [\"/usr/../etc\"]\n"),
            "/etc/stockade/p.toml: filesystem.read_only = \"/usr/../etc\": must be an absolute path without `..`"
                .into(),
        ),
        (
            format!("{MINIMAL}[filesystem]\nread_only = [\"/nonexistent-stockade\"]\n"),
            "/etc/stockade/p.toml: filesystem.read_only = \"/nonexistent-stockade\": does not exist on this host\n  hint: append `?` to skip a path that some hosts lack"
                .into(),
        ),
        (
            format!("{MINIMAL}[mechanisms]\nlandlock = \"maybe\"\n"),
            "/etc/stockade/p.toml: mechanisms.landlock = \"maybe\": unknown variant `maybe`, expected one of `required`, `best_effort`, `off` (line 7)"
                .into(),
        ),
        (
            format!("{MINIMAL}[mechanisms]\nseccomp = \"best_effort\"\n"),
            "/etc/stockade/p.toml: mechanisms.seccomp = \"best_effort\": seccomp is either installed or the job is refused\n  hint: use \"required\" or \"off\""
                .into(),
        ),
        (
            format!("{MINIMAL}memory_mib = 8\n").replace("[limits]\n", "[limits]\nmemory_mib = 4\n").replace("memory_mib = 8\n", ""),
            "/etc/stockade/p.toml: limits.memory_mib = 4: must be at least 8\n  hint: omit the key for no limit"
                .into(),
        ),
        (
            format!("{MINIMAL}tmp_mib = 2000000000\n"),
            "/etc/stockade/p.toml: limits.tmp_mib = 2000000000: must be at most 1073741824 (1 PiB)"
                .into(),
        ),
        (
            format!("{MINIMAL}[env]\nallow = [\"A=B\"]\n"),
            "/etc/stockade/p.toml: env.allow = \"A=B\": names may not be empty or contain '=' or NUL"
                .into(),
        ),
        (
            format!("memory_mib = 1\n{MINIMAL}"),
            "/etc/stockade/p.toml: unknown field `memory_mib`, expected one of `description`, `identity`, `limits`, `env`, `namespaces`, `filesystem`, `network`, `seccomp`, `mechanisms`, `files`, `secrets` (line 1)\n  hint: `memory_mib` is not a top-level key; it belongs in [limits]"
                .into(),
        ),
        (
            "[identity\n".into(),
            "/etc/stockade/p.toml: invalid table header; expected `.`, `]` (line 1)"
                .into(),
        ),
        (
            format!("{MINIMAL}[seccomp]\nextra_deny = [\"exit_group\"]\n"),
            "/etc/stockade/p.toml: seccomp.extra_deny = \"exit_group\": system call \"exit_group\" cannot be denied: every process needs it to exit"
                .into(),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(only_error(&text), want, "profile:\n{text}");
    }
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
    }
    dir
}

#[test]
fn extends_merges_tables_overrides_scalars_and_replaces_or_appends_lists() {
    let base = "[identity]\nuid = 61350\ngid = 61350\n[limits]\nwall_timeout_secs = 60\nmemory_mib = 512\npids = 64\n\
        [env]\nset = { PATH = \"/bin\", LANG = \"C\" }\nallow = [\"TERM\", \"TZ\"]\n\
        [filesystem]\nread_only = [\"/proc\"]\n";
    let child = "extends = \"base\"\ndescription = \"child\"\n[limits]\nwall_timeout_secs = 30\n\
        [env]\nset = { LANG = \"C.UTF-8\", EXTRA = \"1\" }\nallow = [\"...\", \"CC\"]\n\
        [filesystem]\nread_only = [\"/dev/null\"]\nread_exec = [\"...\", \"/opt\"]\n";
    let grandchild = "extends = \"child\"\n[env]\nallow = [\"LC_ALL\"]\n";
    let dir = dir_with(&[("base", base), ("child", child), ("grandchild", grandchild)]);
    let accounts = HostAccounts::none().with_paths([
        "/usr",
        "/etc",
        "/proc",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/opt",
    ]);
    let set = ProfileSet::load_dir(dir.path(), &accounts).unwrap();
    let c = set.get("child").unwrap();
    assert_eq!(c.extends, ["base"]);
    assert_eq!(c.description, "child");
    // scalar overridden, siblings inherited
    assert_eq!(c.wall_timeout, Duration::from_secs(30));
    assert_eq!(c.memory_bytes, Some(512 << 20));
    assert_eq!(c.pids, Some(64));
    assert_eq!((c.uid, c.gid), (61350, 61350));
    // tables merge key by key
    let env: Vec<(&str, &str)> = c
        .env_set
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("EXTRA", "1"), ("LANG", "C.UTF-8"), ("PATH", "/bin")]);
    // "..." appends to the parent's list; a plain list replaces it
    assert_eq!(c.env_allow, ["TERM", "TZ", "CC"]);
    let paths: Vec<(String, &str)> =
        c.fs.iter()
            .map(|r| (r.path.display().to_string(), r.access.name()))
            .collect();
    // read_exec: the default (only /usr and /etc exist here) plus /opt; read_only replaced
    assert_eq!(
        paths,
        [
            ("/usr".to_string(), "read_exec"),
            ("/etc".to_string(), "read_exec"),
            ("/opt".to_string(), "read_exec"),
            ("/dev/null".to_string(), "read_only"),
            ("/dev/null".to_string(), "read_write"),
            ("/dev/zero".to_string(), "read_write"),
            ("/dev/full".to_string(), "read_write"),
        ]
    );
    let g = set.get("grandchild").unwrap();
    assert_eq!(g.extends, ["child", "base"]);
    assert_eq!(g.env_allow, ["LC_ALL"]);
    assert_eq!(g.wall_timeout, Duration::from_secs(30));
    // Same policy, same hash; a different policy, a different hash.
    assert_ne!(c.hash, set.get("base").unwrap().hash);
    let same = dir_with(&[
        ("base", base),
        ("other", &child.replace("\"base\"", "\"base\"\n")),
    ]);
    let set2 = ProfileSet::load_dir(same.path(), &accounts).unwrap();
    assert_eq!(set2.get("other").unwrap().hash, c.hash);
}

#[test]
fn a_dir_profile_may_extend_an_embedded_default() {
    let dir = dir_with(&[(
        "ci",
        "extends = \"build\"\n[limits]\nwall_timeout_secs = 120\n",
    )]);
    let set = ProfileSet::load_dir(dir.path(), &HostAccounts::none()).unwrap();
    assert_eq!(
        set.names(),
        ["ci"],
        "the embedded parent does not become runnable"
    );
    let ci = set.get("ci").unwrap();
    let build = ProfileSet::embedded(&HostAccounts::none()).unwrap();
    let build = build.get("build").unwrap();
    assert_eq!(ci.extends, ["build"]);
    assert_eq!(ci.wall_timeout, Duration::from_secs(120));
    assert_eq!(
        (ci.uid, ci.memory_bytes, &ci.env_allow),
        (build.uid, build.memory_bytes, &build.env_allow)
    );
    // A single file parsed alone finds its parent among the defaults too.
    let p = parse("extends = \"git\"\n").unwrap();
    assert_eq!(p.env_set, build_env_of("git"));
}

fn build_env_of(name: &str) -> BTreeMap<String, String> {
    ProfileSet::embedded(&HostAccounts::none())
        .unwrap()
        .get(name)
        .unwrap()
        .env_set
        .clone()
}

fn load_errors(files: &[(&str, &str)]) -> Vec<String> {
    let dir = dir_with(files);
    let errs = ProfileSet::load_dir(dir.path(), &HostAccounts::none()).unwrap_err();
    errs.0
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
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

#[test]
fn cycles_and_unknown_parents_are_errors_naming_the_chain() {
    assert_eq!(
        load_errors(&[
            ("a", "extends = \"b\"\n"),
            ("b", "extends = \"c\"\n"),
            ("c", "extends = \"a\"\n"),
            ("d", "extends = \"a\"\n"),
        ]),
        [
            "DIR/a.toml: extends = \"b\": inheritance cycle: a -> b -> c -> a",
            "DIR/b.toml: extends = \"c\": inheritance cycle: b -> c -> a -> b",
            "DIR/c.toml: extends = \"a\": inheritance cycle: c -> a -> b -> c",
            "DIR/d.toml: extends = \"a\": inheritance cycle: a -> b -> c -> a",
        ]
    );
    assert_eq!(
        load_errors(&[("agent", "extends = \"agent\"\n")]),
        ["DIR/agent.toml: extends = \"agent\": inheritance cycle: agent -> agent\n  hint: to build on the embedded default \"agent\", give this file another name"]
    );
    assert_eq!(
        load_errors(&[("x", "extends = \"y\"\n"), ("y", "extends = \"nope\"\n")]),
        [
            "DIR/x.toml: extends = \"y\": unknown parent profile \"nope\" (chain: x -> y -> nope)\n  hint: known profiles: agent, build, git, x, y",
            "DIR/y.toml: extends = \"nope\": unknown parent profile \"nope\" (chain: y -> nope)\n  hint: known profiles: agent, build, git, x, y",
        ]
    );
    assert_eq!(
        load_errors(&[("x", "extends = 3\n")]),
        ["DIR/x.toml: extends = 3: must be the name of a profile (a string)\n  hint: write extends = \"agent\" at the top of the file, before any [table]"]
    );
    assert_eq!(
        load_errors(&[("bad", "[identity\n"), ("kid", "extends = \"bad\"\n")]),
        [
            "DIR/bad.toml: invalid table header; expected `.`, `]` (line 1)",
            "DIR/kid.toml: extends = \"bad\": parent profile bad has errors (listed for DIR/bad.toml); chain: kid -> bad",
        ]
    );
    assert_eq!(
        load_errors(&[("x", "extends = \"agent\"\n[env]\nallow = [\"A\", \"...\"]\n")]),
        ["DIR/x.toml: env.allow = [\"A\", \"...\"]: \"...\" may only be the first item (item 2 is \"...\"); it stands for the inherited list\n  hint: write [\"...\", \"new item\"] to append to the parent's list"]
    );
}

/// Golden explain output of the shipped defaults, text and JSON, on a fixed set of host paths
/// (so the result does not depend on this host). The seccomp summary is per architecture, so the
/// goldens are x86_64's. `STOCKADE_UPDATE_GOLDEN=1` rewrites them.
#[cfg(target_arch = "x86_64")]
#[test]
fn explain_output_of_the_shipped_defaults_matches_the_goldens() {
    let accounts = HostAccounts::none().with_paths([
        "/usr",
        "/bin",
        "/lib",
        "/lib64",
        "/etc",
        "/proc",
        "/dev/urandom",
        "/dev/random",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
    ]);
    let set = ProfileSet::embedded(&accounts).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("STOCKADE_UPDATE_GOLDEN").is_some();
    for name in ["agent", "build", "git"] {
        let e = explain::Explain::of(set.get(name).unwrap());
        let json = serde_json::to_string_pretty(&e).unwrap() + "\n";
        for (file, got) in [
            (format!("{name}.explain.txt"), e.text()),
            (format!("{name}.explain.json"), json),
        ] {
            let path = dir.join(&file);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (STOCKADE_UPDATE_GOLDEN=1 writes it)",
                    path.display()
                )
            });
            assert_eq!(
                got, want,
                "{file} differs from the golden (STOCKADE_UPDATE_GOLDEN=1 rewrites it)"
            );
        }
    }
}

#[test]
fn secrets_are_validated_at_load_naming_key_file_and_mode() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, "correct-horse-battery\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let good = file("good", 0o600);
    let root = std::fs::metadata(&good).unwrap().uid() == 0;
    let secret = |name: &str, path: &Path, env: &str| {
        format!(
            "{MINIMAL}[env]\nset = {{ PATH = \"/bin\" }}\nallow = [\"TERM\"]\n[secrets]\n{name} = {{ file = {:?}, env = {env:?} }}\n",
            path.display().to_string()
        )
    };
    if root {
        let p = parse(&secret("api", &good, "API_TOKEN")).unwrap();
        assert_eq!(
            p.secrets,
            [SecretRef {
                name: "api".into(),
                file: good.clone(),
                env: "API_TOKEN".into()
            }]
        );
        let readable = file("readable", 0o640);
        assert_eq!(
            only_error(&secret("api", &readable, "API_TOKEN")),
            format!("/etc/stockade/p.toml: secrets.api.file = {:?}: has mode 0640: group or others may access it\n  hint: secret files are regular files owned by root with mode 0600 or 0400 (chown root:root; chmod 600)", readable.display().to_string())
        );
        let owned = file("owned", 0o600);
        chown(&owned, Some(61351), None).unwrap();
        assert_eq!(
            only_error(&secret("api", &owned, "API_TOKEN")),
            format!("/etc/stockade/p.toml: secrets.api.file = {:?}: is owned by uid 61351, not root\n  hint: secret files are regular files owned by root with mode 0600 or 0400 (chown root:root; chmod 600)", owned.display().to_string())
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert_eq!(
            only_error(&secret("api", &link, "API_TOKEN")),
            format!("/etc/stockade/p.toml: secrets.api.file = {:?}: is not a regular file (symlinks are not followed)\n  hint: secret files are regular files owned by root with mode 0600 or 0400 (chown root:root; chmod 600)", link.display().to_string())
        );
        // Same profile, same hash; another secret file, another hash (values never count).
        let p2 = parse(&secret("api", &good, "API_TOKEN")).unwrap();
        assert_eq!(p.hash, p2.hash);
        let other = file("other", 0o400);
        assert_ne!(
            parse(&secret("api", &other, "API_TOKEN")).unwrap().hash,
            p.hash
        );
    } else {
        eprintln!("*** PARTLY SKIPPED secrets_are_validated_at_load_naming_key_file_and_mode: not root, cannot make root-owned files");
        assert!(
            std::env::var_os("STOCKADE_REQUIRE_PRIVILEGED").is_none(),
            "must run as root"
        );
    }
    // These fail before the file is looked at, or whoever owns it.
    let g = good.display().to_string();
    assert_eq!(
        only_error(&secret("api", &good, "API").replacen("[env]", "[namespaces]\npid = false\n[env]", 1)),
        "/etc/stockade/p.toml: secrets = [\"api\"]: needs namespaces.pid and namespaces.mount: without its own pid namespace and /proc, another job of the same uid could read a secret from /proc/PID/environ\n  hint: set namespaces.pid = true and namespaces.mount = true (the defaults)"
    );
    assert_eq!(
        only_error(&secret("api", &good, "PATH")),
        "/etc/stockade/p.toml: secrets.api.env = \"PATH\": is also in env.set: the job would get one of two values\n  hint: remove it from env.set"
    );
    assert_eq!(
        only_error(&secret("api", &good, "TERM")),
        "/etc/stockade/p.toml: secrets.api.env = \"TERM\": is also in env.allow: a request could replace the secret\n  hint: remove it from env.allow"
    );
    assert_eq!(
        only_error(&secret("api", &good, "A-B")),
        "/etc/stockade/p.toml: secrets.api.env = \"A-B\": must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
    );
    assert_eq!(
        only_error(&secret("api", Path::new("secrets/x"), "API")),
        "/etc/stockade/p.toml: secrets.api.file = \"secrets/x\": must be an absolute path without `..`"
    );
    assert_eq!(
        only_error(&secret("\"a b\"", &good, "API")),
        "/etc/stockade/p.toml: secrets.a b = \"a b\": secret names may use only [A-Za-z0-9_-]"
    );
    assert_eq!(
        only_error(&format!("{MINIMAL}[secrets]\napi = {{ file = {g:?}, env = \"API\", mode = 1 }}\n")),
        "/etc/stockade/p.toml: unknown field `mode`, expected `file` or `env`\n  hint: `mode` is not a key of [secrets.NAME]; it belongs in [seccomp]"
    );
}

#[test]
fn the_git_profile_neutralises_what_a_hostile_repository_config_can_run() {
    let git = ProfileSet::embedded(&HostAccounts::none()).unwrap();
    let env = &git.get("git").unwrap().env_set;
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("GIT_CONFIG_NOSYSTEM"), Some("1"));
    assert_eq!(get("GIT_CONFIG_GLOBAL"), Some("/dev/null"));
    assert_eq!(get("GIT_TERMINAL_PROMPT"), Some("0"));
    let count: usize = get("GIT_CONFIG_COUNT").unwrap().parse().unwrap();
    let config: BTreeMap<&str, &str> = (0..count)
        .map(|i| {
            (
                get(&format!("GIT_CONFIG_KEY_{i}")).unwrap(),
                get(&format!("GIT_CONFIG_VALUE_{i}")).unwrap(),
            )
        })
        .collect();
    assert_eq!(config.len(), count, "a key is given twice: {config:?}");
    for (k, v) in [
        ("core.hooksPath", "/dev/null"),
        ("core.fsmonitor", "false"),
        ("credential.helper", ""),
        ("protocol.file.allow", "user"),
        ("core.sshCommand", "ssh"),
        ("core.askPass", ""),
        ("core.pager", "cat"),
    ] {
        assert_eq!(config.get(k), Some(&v), "{k}");
    }
    // Every GIT_CONFIG_KEY_n/VALUE_n is counted: none is silently ignored by git.
    assert!(!env.contains_key(&format!("GIT_CONFIG_KEY_{count}")));
    // git's ownership check stays on: a repository owned by another uid is refused.
    assert!(!config.contains_key("safe.directory"));
}
