//! Unit tests: mountinfo parsing, and the v2 / v1 / hybrid file logic against a temp-dir
//! "cgroupfs" whose mkdir populates control files the way the kernel does.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::fsops::FsOps;
use super::*;

// ---------------------------------------------------------------------------------------------
// mountinfo samples

/// A pure cgroup v2 host (Fedora/Ubuntu 22.04+, systemd default).
const V2_SAMPLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 23 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
29 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
";

/// This CI host (`cat /proc/self/mountinfo`): v1 controllers plus an empty cgroup2 at
/// /sys/fs/cgroup/unified.
const HYBRID_SAMPLE: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// A pure v1 host (CentOS 7 style): co-mounted cpu,cpuacct and net_cls,net_prio, a named
/// systemd hierarchy, several optional fields.
const V1_SAMPLE: &str = "\
18 60 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 master:3 - cgroup cgroup rw,cpu,cpuacct
29 24 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
30 24 0:26 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,net_cls,net_prio
31 24 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,pids
32 24 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,freezer
33 24 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
";

const NO_CGROUP_SAMPLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
";

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, PathBuf> {
    entries
        .iter()
        .map(|(c, p)| ((*c).to_owned(), PathBuf::from(p)))
        .collect()
}

#[test]
fn mountinfo_pure_v2() {
    assert_eq!(
        Layout::parse_mountinfo(V2_SAMPLE).unwrap(),
        Layout::V2 {
            root: PathBuf::from("/sys/fs/cgroup")
        }
    );
}

#[test]
fn mountinfo_hybrid_like_this_host() {
    let v1 = map(&[
        ("blkio", "/sys/fs/cgroup/blkio"),
        ("cpu", "/sys/fs/cgroup/cpu"),
        ("cpuacct", "/sys/fs/cgroup/cpuacct"),
        ("cpuset", "/sys/fs/cgroup/cpuset"),
        ("devices", "/sys/fs/cgroup/devices"),
        ("freezer", "/sys/fs/cgroup/freezer"),
        ("memory", "/sys/fs/cgroup/memory"),
        ("pids", "/sys/fs/cgroup/pids"),
    ]);
    assert_eq!(
        Layout::parse_mountinfo(HYBRID_SAMPLE).unwrap(),
        Layout::Hybrid {
            v1,
            unified: PathBuf::from("/sys/fs/cgroup/unified")
        }
    );
}

#[test]
fn mountinfo_pure_v1_with_comounts_and_named_hierarchy() {
    let layout = Layout::parse_mountinfo(V1_SAMPLE).unwrap();
    let v1 = map(&[
        ("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
        ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
        ("freezer", "/sys/fs/cgroup/freezer"),
        // The first mount of a controller wins.
        ("memory", "/sys/fs/cgroup/memory"),
        ("net_cls", "/sys/fs/cgroup/net_cls,net_prio"),
        ("net_prio", "/sys/fs/cgroup/net_cls,net_prio"),
        ("pids", "/sys/fs/cgroup/pids"),
    ]);
    assert_eq!(layout, Layout::V1 { v1 });
    assert_eq!(
        layout.describe(),
        "v1 (cpu,cpuacct,freezer,memory,net_cls,net_prio,pids)"
    );
}

#[test]
fn mountinfo_unescapes_mount_points() {
    let text = "41 31 0:38 / /mnt/my\\040cgroups rw,relatime - cgroup2 cgroup2 rw\n";
    assert_eq!(
        Layout::parse_mountinfo(text).unwrap(),
        Layout::V2 {
            root: PathBuf::from("/mnt/my cgroups")
        }
    );
}

#[test]
fn mountinfo_without_cgroups_is_a_clear_error() {
    let err = Layout::parse_mountinfo(NO_CGROUP_SAMPLE).unwrap_err();
    assert!(matches!(err, CgroupError::NoCgroupMounts), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("no cgroup or cgroup2 filesystem in mountinfo; hint: "),
        "{msg}"
    );
    assert!(Layout::parse_mountinfo("").is_err());
}

#[test]
fn mountinfo_garbage_names_the_line() {
    let text = format!("{V2_SAMPLE}this is not a mountinfo line\n");
    let err = Layout::parse_mountinfo(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parse mountinfo line 5: no \" - \" separator after the six leading fields: \
         \"this is not a mountinfo line\""
    );
    let err = Layout::parse_mountinfo("1 2 3 4 5 6 - cgroup2\n").unwrap_err();
    assert!(err.to_string().contains("fewer than three fields"), "{err}");
}

#[test]
fn detect_missing_file_names_the_path() {
    let err = Layout::detect(Path::new("/nonexistent/mountinfo")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "read /nonexistent/mountinfo: No such file or directory (os error 2)"
    );
}

#[test]
fn describe_reads_the_cgroup2_controllers() {
    let tmp = TempDir::new().unwrap();
    fs::write(tmp.path().join("cgroup.controllers"), "\n").unwrap();
    let hybrid = Layout::Hybrid {
        v1: map(&[("memory", "/m"), ("pids", "/p")]),
        unified: tmp.path().to_owned(),
    };
    assert_eq!(
        hybrid.describe(),
        format!(
            "hybrid (v1: memory,pids; unified: {}, no controllers)",
            tmp.path().display()
        )
    );
    fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    let v2 = Layout::V2 {
        root: tmp.path().to_owned(),
    };
    assert_eq!(
        v2.describe(),
        format!(
            "v2 ({}, controllers: cpu,memory,pids)",
            tmp.path().display()
        )
    );
}

// ---------------------------------------------------------------------------------------------
// the fake cgroupfs

/// mkdir, then populate the directory like cgroupfs: core files, the controller files of what
/// the parent enables in its `cgroup.subtree_control`, and (so one fake serves v1 tests too) the
/// v1 files of every controller.
fn fake_mkdir(dir: &Path) -> io::Result<()> {
    fs::create_dir(dir)?;
    let subtree = fs::read_to_string(dir.parent().unwrap().join("cgroup.subtree_control"))
        .unwrap_or_default();
    let enabled: Vec<&str> = subtree
        .split_whitespace()
        .map(|c| c.trim_start_matches('+'))
        .collect();
    let mut files = vec![
        ("cgroup.controllers", enabled.join(" ")),
        ("cgroup.procs", String::new()),
        ("cgroup.events", "populated 0\nfrozen 0\n".to_owned()),
        ("cgroup.kill", String::new()),
        ("cgroup.freeze", "0\n".to_owned()),
        ("cgroup.subtree_control", String::new()),
        (
            "cpu.stat",
            "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n".to_owned(),
        ),
        // v1
        ("tasks", String::new()),
        ("memory.limit_in_bytes", "9223372036854771712\n".to_owned()),
        (
            "memory.memsw.limit_in_bytes",
            "9223372036854771712\n".to_owned(),
        ),
        ("memory.max_usage_in_bytes", "8192\n".to_owned()),
        (
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n".to_owned(),
        ),
        ("freezer.state", "THAWED\n".to_owned()),
        ("cpuacct.usage", "5000\n".to_owned()),
        ("pids.max", "max\n".to_owned()),
        ("pids.peak", "7\n".to_owned()),
    ];
    if enabled.contains(&"memory") {
        files.push(("memory.max", "max\n".to_owned()));
        files.push(("memory.swap.max", "max\n".to_owned()));
        files.push(("memory.peak", "4096\n".to_owned()));
        files.push((
            "memory.events",
            "low 0\nhigh 0\nmax 1\noom 1\noom_kill 2\n".to_owned(),
        ));
    }
    for (name, content) in files {
        fs::write(dir.join(name), content)?;
    }
    Ok(())
}

/// rmdir like cgroupfs: EBUSY while processes or child groups remain, else the control files
/// go with the directory.
fn fake_rmdir(dir: &Path) -> io::Result<()> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
    }
    for entry in fs::read_dir(dir)? {
        fs::remove_file(entry?.path())?;
    }
    fs::remove_dir(dir)
}

const FAKE: FsOps = FsOps {
    name: "fake",
    mkdir: fake_mkdir,
    rmdir: fake_rmdir,
};

/// Like [`fake_mkdir`], but a job directory's `pids.max` is a directory, so writing it fails.
fn broken_pids_mkdir(dir: &Path) -> io::Result<()> {
    fake_mkdir(dir)?;
    if dir.file_name().unwrap().to_str().unwrap().starts_with("j-") {
        fs::remove_file(dir.join("pids.max"))?;
        fs::create_dir(dir.join("pids.max"))?;
    }
    Ok(())
}

fn busy_rmdir(_: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}

/// A fake cgroup2 root whose own `cgroup.subtree_control` holds `enabled`.
fn fake_v2_root(enabled: &str) -> TempDir {
    let tmp = TempDir::new().unwrap();
    fs::write(
        tmp.path().join("cgroup.controllers"),
        "cpu io memory pids\n",
    )
    .unwrap();
    fs::write(tmp.path().join("cgroup.subtree_control"), enabled).unwrap();
    fs::write(tmp.path().join("cgroup.procs"), "1\n").unwrap();
    tmp
}

fn v2_manager(root: &Path, ops: FsOps) -> CgroupManager {
    let layout = Layout::V2 {
        root: root.to_owned(),
    };
    CgroupManager::with_ops(layout, "stockade", ops).unwrap()
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

const MIB64: u64 = 64 << 20;

fn limits(memory: Option<u64>, pids: Option<u64>) -> Limits {
    Limits {
        memory_bytes: memory,
        pids,
    }
}

// ---------------------------------------------------------------------------------------------
// names

#[test]
fn parent_and_job_names_are_validated() {
    let layout = Layout::V2 {
        root: PathBuf::from("/nonexistent"),
    };
    for bad in [
        "",
        "/stockade",
        "a/../b",
        "..",
        "a//b",
        "a/",
        ".hidden",
        "a b",
        "a\nb",
        "ü",
    ] {
        let err = CgroupManager::new(layout.clone(), bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("invalid cgroup parent {bad:?}: ")),
            "{err}"
        );
    }
    for good in [
        "stockade",
        "system.slice/stockade.service/jobs",
        "user@1000.service",
    ] {
        CgroupManager::new(layout.clone(), good).unwrap();
    }
    let mgr = CgroupManager::new(layout, "stockade").unwrap();
    for bad in ["", "..", "a/b", "x y", &"x".repeat(256)] {
        let err = mgr.create(bad, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::InvalidName {
                    what: "job name",
                    ..
                }
            ),
            "{err}"
        );
        assert!(mgr.open(bad).is_err());
    }
}

#[test]
fn invalid_job_name_touches_nothing() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    mgr.create("../escape", &Limits::default()).unwrap_err();
    assert!(!root.path().join("stockade").exists());
}

// ---------------------------------------------------------------------------------------------
// v2

#[test]
fn v2_create_writes_limits_and_enables_controllers_on_our_parent_only() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    let job = mgr.create("j-1", &limits(Some(MIB64), Some(32))).unwrap();
    let parent = root.path().join("stockade");
    let dir = parent.join("j-1");

    assert_eq!(read(parent.join("cgroup.subtree_control")), "+memory +pids");
    assert_eq!(
        read(root.path().join("cgroup.subtree_control")),
        "memory pids"
    );
    assert_eq!(read(dir.join("memory.max")), "67108864");
    assert_eq!(read(dir.join("memory.swap.max")), "0");
    assert_eq!(read(dir.join("pids.max")), "32");
    assert_eq!(job.name(), "j-1");
    assert_eq!(job.procs_files(), vec![dir.join("cgroup.procs")]);
    assert_eq!(job.cgroup2_dir(), Some(dir.as_path()));
    assert!(!job.is_populated().unwrap());
    assert_eq!(job.pids().unwrap(), Vec::<i32>::new());

    // A second job reuses the parent and finds the controllers enabled already.
    let job2 = mgr.create("j-2", &limits(Some(MIB64), None)).unwrap();
    assert_eq!(read(parent.join("j-2/memory.max")), "67108864");
    assert_eq!(read(parent.join("j-2/pids.max")), "max\n");

    job.remove().unwrap();
    job2.remove().unwrap();
    assert!(!dir.exists());
    mgr.remove_parent_if_empty();
    assert!(!parent.exists());
}

#[test]
fn v2_without_limits_enables_memory_for_stats_when_available() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    let job = mgr.create("j-1", &Limits::default()).unwrap();
    assert_eq!(
        read(root.path().join("stockade/cgroup.subtree_control")),
        "+memory"
    );
    assert_eq!(read(root.path().join("stockade/j-1/memory.max")), "max\n");
    job.remove().unwrap();

    // Not available: no error without a limit, and nothing written.
    let root = fake_v2_root("");
    let mgr = v2_manager(root.path(), FAKE);
    let job = mgr.create("j-1", &Limits::default()).unwrap();
    assert_eq!(
        read(root.path().join("stockade/cgroup.subtree_control")),
        ""
    );
    assert_eq!(job.stats().peak_memory_bytes, None);
    job.remove().unwrap();
}

#[test]
fn v2_controller_missing_above_our_parent_is_an_error_with_a_hint() {
    let root = fake_v2_root("memory");
    let mgr = v2_manager(root.path(), FAKE);
    let err = mgr
        .create("j-1", &limits(Some(MIB64), Some(32)))
        .unwrap_err();
    let msg = err.to_string();
    let parent = root.path().join("stockade");
    assert_eq!(
        msg,
        format!(
            "controller pids is not available in {}/cgroup.controllers (it lists \"memory\"); \
             hint: enable it in {}/cgroup.subtree_control (stockade never writes above its \
             parent group), or with systemd give the unit that owns this subtree Delegate=yes",
            parent.display(),
            root.path().display()
        )
    );
    // Nothing written above our parent, nothing half-created.
    assert_eq!(read(root.path().join("cgroup.subtree_control")), "memory");
    assert_eq!(read(parent.join("cgroup.subtree_control")), "");
    assert!(!parent.join("j-1").exists());
    assert_eq!(mgr.leftovers().unwrap(), Vec::<String>::new());
}

#[test]
fn create_failure_midway_removes_what_it_created() {
    let root = fake_v2_root("memory pids");
    let ops = FsOps {
        name: "broken-pids",
        mkdir: broken_pids_mkdir,
        rmdir: fake_rmdir,
    };
    let mgr = v2_manager(root.path(), ops);
    let err = mgr
        .create("j-1", &limits(Some(MIB64), Some(32)))
        .unwrap_err();
    let path = root.path().join("stockade/j-1/pids.max");
    assert_eq!(
        err.to_string(),
        format!(
            "write \"32\" to {}: Is a directory (os error 21)",
            path.display()
        )
    );
    assert_eq!(err.errno(), Some(libc::EISDIR));
    assert!(!root.path().join("stockade/j-1").exists());
    // The parent is shared by all jobs and stays.
    assert!(root.path().join("stockade").is_dir());
}

#[test]
fn create_failure_with_failing_cleanup_reports_both() {
    let root = fake_v2_root("memory pids");
    let ops = FsOps {
        name: "broken-pids-busy-rmdir",
        mkdir: broken_pids_mkdir,
        rmdir: busy_rmdir,
    };
    let mgr = v2_manager(root.path(), ops);
    let err = mgr.create("j-1", &limits(None, Some(32))).unwrap_err();
    let dir = root.path().join("stockade/j-1");
    let msg = err.to_string();
    assert!(matches!(err, CgroupError::CleanupFailed { .. }), "{err:?}");
    assert!(
        msg.starts_with(&format!(
            "write \"32\" to {}/pids.max: Is a directory",
            dir.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "; cleanup also failed: rmdir {}/pids.max: Device or resource busy (os error 16)",
            dir.display()
        )),
        "{msg}"
    );
}

#[test]
fn create_refuses_an_existing_job_and_leaves_it_alone() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    let job = mgr.create("j-1", &Limits::default()).unwrap();
    let err = mgr.create("j-1", &limits(Some(MIB64), None)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "mkdir {}: File exists (os error 17); hint: a cgroup of that name already exists",
            root.path().join("stockade/j-1").display()
        )),
        "{msg}"
    );
    assert!(root.path().join("stockade/j-1/cgroup.procs").exists());
    job.remove().unwrap();
}

#[test]
fn leftovers_open_and_remove() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    assert_eq!(mgr.leftovers().unwrap(), Vec::<String>::new());
    mgr.create("j-2", &Limits::default()).unwrap();
    mgr.create("j-1", &limits(None, Some(5))).unwrap();
    assert_eq!(mgr.leftovers().unwrap(), vec!["j-1", "j-2"]);

    let job = mgr.open("j-2").unwrap();
    assert_eq!(
        job.procs_files(),
        vec![root.path().join("stockade/j-2/cgroup.procs")]
    );
    job.remove().unwrap();
    assert_eq!(mgr.leftovers().unwrap(), vec!["j-1"]);

    let err = mgr.open("nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "job cgroup \"nope\" not found under {}",
            root.path().join("stockade").display()
        )
    );

    mgr.remove_parent_if_empty(); // not empty: stays
    assert!(root.path().join("stockade").is_dir());
    mgr.open("j-1").unwrap().remove().unwrap();
    mgr.remove_parent_if_empty();
    assert!(!root.path().join("stockade").exists());
    mgr.remove_parent_if_empty(); // already gone: fine
}

#[test]
fn pids_populated_and_stats_from_files() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    let job = mgr.create("j-1", &Limits::default()).unwrap();
    let dir = root.path().join("stockade/j-1");
    // 0 is a process outside our pid namespace: never listed (kill(0) would hit our group).
    fs::write(dir.join("cgroup.procs"), "123\n0\n456\n").unwrap();
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    assert_eq!(job.pids().unwrap(), vec![123, 456]);
    assert!(job.is_populated().unwrap());
    assert_eq!(
        job.stats(),
        Stats {
            peak_memory_bytes: Some(4096),
            cpu_usage_ns: Some(1_234_000),
            oom_kills: Some(2),
            pids_peak: Some(7),
        }
    );

    fs::write(dir.join("cgroup.procs"), "12x\n").unwrap();
    let err = job.pids().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "parse {}/cgroup.procs: unexpected content \"12x\\n\"",
            dir.display()
        )
    );

    // A populated group cannot be removed: EBUSY after retries, with a hint.
    fs::write(dir.join("cgroup.procs"), "123\n").unwrap();
    let err = mgr.open("j-1").unwrap().remove().unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBUSY));
    assert!(
        err.to_string()
            .contains("; hint: the cgroup still has processes"),
        "{err}"
    );
    fs::write(dir.join("cgroup.procs"), "").unwrap();
    job.remove().unwrap();
}

#[test]
fn kill_all_writes_cgroup_kill_on_v2() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    let job = mgr.create("j-1", &Limits::default()).unwrap();
    job.kill_all().unwrap();
    assert_eq!(read(root.path().join("stockade/j-1/cgroup.kill")), "1");
    job.remove().unwrap();
}

#[test]
fn write_to_a_missing_control_file_hints_at_the_controller() {
    // Wrong on purpose: a v2 layout over a root that enables nothing, then a job dir whose
    // memory files do not exist. create() refuses earlier; write directly to show the message.
    let tmp = TempDir::new().unwrap();
    let err = fsops::write(&tmp.path().join("memory.max"), "1").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "write \"1\" to {}/memory.max: No such file or directory (os error 2); hint: \
             memory.max does not exist: the controller that provides it is not enabled for {}",
            tmp.path().display(),
            tmp.path().display()
        )
    );
    assert!(
        !tmp.path().join("memory.max").exists(),
        "writes never create files"
    );
}

// ---------------------------------------------------------------------------------------------
// v1 and hybrid

fn fake_v1_mounts(tmp: &Path, controllers: &[&str]) -> BTreeMap<String, PathBuf> {
    let mut v1 = BTreeMap::new();
    for c in controllers {
        let mount = tmp.join(c);
        fs::create_dir_all(&mount).unwrap();
        for part in c.split(',') {
            v1.insert(part.to_owned(), mount.clone());
        }
    }
    v1
}

#[test]
fn v1_create_uses_freezer_pids_memory_cpuacct() {
    let tmp = TempDir::new().unwrap();
    let v1 = fake_v1_mounts(
        tmp.path(),
        &["memory", "pids", "freezer", "cpu,cpuacct", "devices"],
    );
    let mgr = CgroupManager::with_ops(Layout::V1 { v1 }, "stockade", FAKE).unwrap();
    let job = mgr.create("j-1", &limits(Some(MIB64), Some(32))).unwrap();
    let dir = |c: &str| tmp.path().join(c).join("stockade/j-1");

    assert_eq!(
        job.procs_files(),
        vec![
            dir("freezer").join("cgroup.procs"),
            dir("pids").join("cgroup.procs"),
            dir("memory").join("cgroup.procs"),
            dir("cpu,cpuacct").join("cgroup.procs"),
        ]
    );
    assert!(!dir("devices").exists());
    assert_eq!(job.cgroup2_dir(), None);
    assert_eq!(
        read(dir("memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        read(dir("memory").join("memory.memsw.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(dir("pids").join("pids.max")), "32");
    assert_eq!(read(dir("freezer").join("pids.max")), "max\n");
    assert_eq!(
        job.stats(),
        Stats {
            peak_memory_bytes: Some(8192),
            cpu_usage_ns: Some(5000),
            oom_kills: Some(3),
            pids_peak: Some(7),
        }
    );
    // Tracking is the freezer hierarchy.
    fs::write(dir("freezer").join("cgroup.procs"), "77\n").unwrap();
    assert_eq!(job.pids().unwrap(), vec![77]);
    assert!(job.is_populated().unwrap());
    fs::write(dir("freezer").join("cgroup.procs"), "").unwrap();
    assert!(!job.is_populated().unwrap());
    // Nothing to kill: one freeze/thaw round, then done, the group left thawed.
    job.kill_all().unwrap();
    assert_eq!(read(dir("freezer").join("freezer.state")), "THAWED");

    assert_eq!(mgr.leftovers().unwrap(), vec!["j-1"]);
    job.remove().unwrap();
    for c in ["memory", "pids", "freezer", "cpu,cpuacct"] {
        assert!(!dir(c).exists(), "{c}");
    }
    mgr.remove_parent_if_empty();
    for c in ["memory", "pids", "freezer", "cpu,cpuacct"] {
        assert!(!tmp.path().join(c).join("stockade").exists(), "{c}");
    }
}

#[test]
fn v1_without_memory_refuses_a_memory_limit() {
    let tmp = TempDir::new().unwrap();
    let v1 = fake_v1_mounts(tmp.path(), &["pids", "freezer"]);
    let mgr = CgroupManager::with_ops(Layout::V1 { v1 }, "stockade", FAKE).unwrap();
    let err = mgr.create("j-1", &limits(Some(MIB64), None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "controller memory is not mounted (v1 (freezer,pids)); hint: mount it as cgroup v1 or \
         enable it in cgroup2, or drop the limit from the profile"
    );
    assert!(
        !tmp.path().join("pids/stockade").exists(),
        "refused before any mkdir"
    );
    // Without the limit it works.
    mgr.create("j-1", &Limits::default())
        .unwrap()
        .remove()
        .unwrap();
}

#[test]
fn hybrid_uses_unified_plus_v1_memory_and_pids_only_when_limited() {
    let tmp = TempDir::new().unwrap();
    let v1 = fake_v1_mounts(tmp.path(), &["memory", "pids", "freezer", "cpuacct"]);
    let unified = tmp.path().join("unified");
    fs::create_dir(&unified).unwrap();
    fs::write(unified.join("cgroup.controllers"), "").unwrap();
    fs::write(unified.join("cgroup.subtree_control"), "").unwrap();
    let layout = Layout::Hybrid {
        v1,
        unified: unified.clone(),
    };
    let mgr = CgroupManager::with_ops(layout, "stockade", FAKE).unwrap();
    let u = unified.join("stockade/j-1");
    let m = tmp.path().join("memory/stockade/j-1");
    let p = tmp.path().join("pids/stockade/j-1");

    let job = mgr.create("j-1", &Limits::default()).unwrap();
    assert_eq!(
        job.procs_files(),
        vec![u.join("cgroup.procs"), m.join("cgroup.procs")]
    );
    assert_eq!(job.cgroup2_dir(), Some(u.as_path()));
    assert_eq!(
        read(m.join("memory.limit_in_bytes")),
        "9223372036854771712\n"
    );
    // cpu from unified cpu.stat, memory from v1.
    assert_eq!(
        job.stats(),
        Stats {
            peak_memory_bytes: Some(8192),
            cpu_usage_ns: Some(1_234_000),
            oom_kills: Some(3),
            pids_peak: Some(7),
        }
    );
    job.remove().unwrap();

    let job = mgr.create("j-1", &limits(Some(MIB64), Some(9))).unwrap();
    assert_eq!(
        job.procs_files(),
        vec![
            u.join("cgroup.procs"),
            m.join("cgroup.procs"),
            p.join("cgroup.procs")
        ]
    );
    assert_eq!(read(m.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(p.join("pids.max")), "9");
    // Nothing written in the unified parent: no v2 controller needed.
    assert_eq!(read(unified.join("stockade/cgroup.subtree_control")), "");
    job.kill_all().unwrap();
    assert_eq!(read(u.join("cgroup.kill")), "1");
    let reopened = mgr.open("j-1").unwrap();
    assert_eq!(reopened.procs_files(), job.procs_files());
    job.remove().unwrap();
    assert!(!u.exists() && !m.exists() && !p.exists());
    mgr.remove_parent_if_empty();
    assert!(!unified.join("stockade").exists());
}

#[test]
fn hybrid_with_memory_only_in_cgroup2_uses_memory_max() {
    let tmp = TempDir::new().unwrap();
    let v1 = fake_v1_mounts(tmp.path(), &["pids"]);
    let unified = tmp.path().join("unified");
    fs::create_dir(&unified).unwrap();
    fs::write(unified.join("cgroup.controllers"), "memory").unwrap();
    fs::write(unified.join("cgroup.subtree_control"), "memory").unwrap();
    let layout = Layout::Hybrid {
        v1,
        unified: unified.clone(),
    };
    let mgr = CgroupManager::with_ops(layout, "stockade", FAKE).unwrap();
    let job = mgr.create("j-1", &limits(Some(MIB64), None)).unwrap();
    assert_eq!(
        read(unified.join("stockade/cgroup.subtree_control")),
        "+memory"
    );
    assert_eq!(read(unified.join("stockade/j-1/memory.max")), "67108864");
    assert_eq!(job.stats().peak_memory_bytes, Some(4096));
    job.remove().unwrap();
}

// ---------------------------------------------------------------------------------------------
// swap and CPU accounting

/// Like [`fake_mkdir`], but as a kernel without swap accounting: no `memory.swap.max`, no
/// `memory.memsw.*`.
fn no_swap_mkdir(dir: &Path) -> io::Result<()> {
    fake_mkdir(dir)?;
    for f in ["memory.swap.max", "memory.memsw.limit_in_bytes"] {
        let _ = fs::remove_file(dir.join(f));
    }
    Ok(())
}

#[test]
fn swap_is_disabled_where_accounted_and_reported_where_not() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    assert_eq!(
        mgr.create("j-0", &Limits::default()).unwrap().swap(),
        &Swap::NotLimited
    );
    let job = mgr.create("j-1", &limits(Some(MIB64), None)).unwrap();
    assert_eq!(job.swap(), &Swap::Disabled);

    let root = fake_v2_root("memory pids");
    let no_swap = FsOps {
        mkdir: no_swap_mkdir,
        ..FAKE
    };
    let mgr = v2_manager(root.path(), no_swap);
    let job = mgr.create("j-1", &limits(Some(MIB64), None)).unwrap();
    let dir = root.path().join("stockade/j-1");
    // The memory limit holds; the missing swap file is reported, not created.
    assert_eq!(read(dir.join("memory.max")), "67108864");
    assert_eq!(job.swap(), &Swap::Unavailable(dir.join("memory.swap.max")));
    assert!(!dir.join("memory.swap.max").exists());

    let tmp = TempDir::new().unwrap();
    let v1 = fake_v1_mounts(tmp.path(), &["memory", "freezer"]);
    let mgr = CgroupManager::with_ops(Layout::V1 { v1 }, "stockade", no_swap).unwrap();
    let job = mgr.create("j-1", &limits(Some(MIB64), None)).unwrap();
    let memsw = tmp
        .path()
        .join("memory/stockade/j-1/memory.memsw.limit_in_bytes");
    assert_eq!(job.swap(), &Swap::Unavailable(memsw));
}

#[test]
fn cpu_usage_comes_from_cpu_stat_or_cpuacct() {
    let root = fake_v2_root("memory pids");
    let mgr = v2_manager(root.path(), FAKE);
    let job = mgr.create("j-1", &Limits::default()).unwrap();
    // The fake's cpu.stat says usage_usec 1234.
    assert_eq!(job.cpu_usage_ns().unwrap(), 1_234_000);
    let stat = root.path().join("stockade/j-1/cpu.stat");
    fs::write(&stat, "user_usec 1\nsystem_usec 2\n").unwrap();
    let err = job.cpu_usage_ns().unwrap_err().to_string();
    assert!(err.contains(&stat.display().to_string()), "{err}");

    let tmp = TempDir::new().unwrap();
    let v1 = fake_v1_mounts(tmp.path(), &["freezer", "cpu,cpuacct"]);
    let mgr = CgroupManager::with_ops(Layout::V1 { v1 }, "stockade", FAKE).unwrap();
    assert_eq!(
        mgr.create("j-1", &Limits::default())
            .unwrap()
            .cpu_usage_ns()
            .unwrap(),
        5000
    );
    let tmp = TempDir::new().unwrap();
    let v1 = fake_v1_mounts(tmp.path(), &["freezer"]);
    let mgr = CgroupManager::with_ops(Layout::V1 { v1 }, "stockade", FAKE).unwrap();
    let err = mgr
        .create("j-1", &Limits::default())
        .unwrap()
        .cpu_usage_ns()
        .unwrap_err()
        .to_string();
    assert!(err.contains("cpuacct"), "{err}");
}

#[test]
fn has_controller_reads_v1_mounts_and_the_cgroup2_root() {
    let root = fake_v2_root("");
    let v2 = Layout::V2 {
        root: root.path().to_owned(),
    };
    // fake_v2_root's cgroup.controllers: cpu io memory pids.
    assert!(v2.has_controller("memory") && v2.has_controller("pids"));
    assert!(!v2.has_controller("hugetlb"));
    assert!(v2.has_controller("cpu-accounting"));
    let tmp = TempDir::new().unwrap();
    let v1 = Layout::V1 {
        v1: fake_v1_mounts(tmp.path(), &["memory", "freezer"]),
    };
    assert!(v1.has_controller("memory") && !v1.has_controller("pids"));
    assert!(!v1.has_controller("cpu-accounting"));
}
