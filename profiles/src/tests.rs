use super::*;

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
