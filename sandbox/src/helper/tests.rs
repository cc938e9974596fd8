//! Order and arguments of the confinement steps, against a recording double (no root needed).

use super::*;
use crate::landlock::{FsAccess, FsRule, LandlockPlan};
use crate::plan::{Bind, Mounts, Namespaces, Tmpfs};
use crate::seccomp::CompiledSeccomp;
use nix::mount::MsFlags;

#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    fail: Option<(&'static str, Errno)>,
    ppid: i32,
    exec_results: Vec<Errno>,
    next_fd: RawFd,
    in_pid_ns: bool,
    monitor_gone: bool,
}

impl Recorder {
    fn hit(&mut self, call: String) -> Result<(), Errno> {
        let name = call.split('(').next().unwrap_or_default().to_string();
        self.calls.push(call);
        match self.fail {
            Some((n, e)) if n == name => Err(e),
            _ => Ok(()),
        }
    }
}

impl Sys for Recorder {
    fn close_fds_except(&mut self, keep: RawFd) -> Result<(), Errno> {
        self.hit(format!("close_fds_except({keep})"))
    }
    fn setsid(&mut self) -> Result<(), Errno> {
        self.hit("setsid()".into())
    }
    fn set_pdeathsig(&mut self, sig: Signal) -> Result<(), Errno> {
        self.hit(format!("set_pdeathsig({sig})"))
    }
    fn parent_alive(&mut self, supervisor: i32) -> Result<(), String> {
        if self.in_pid_ns {
            return match self.monitor_gone {
                true => Err("the pid namespace's monitor is gone".into()),
                false => Ok(()),
            };
        }
        match self.ppid == supervisor {
            true => Ok(()),
            false => Err(format!(
                "supervisor pid {supervisor} is gone (parent is now {})",
                self.ppid
            )),
        }
    }
    fn getpid(&mut self) -> i32 {
        4242
    }
    fn write_file(&mut self, path: &Path, data: &str) -> Result<(), Errno> {
        self.hit(format!("write_file({}, {data})", path.display()))
    }
    fn unshare(&mut self, flags: nix::sched::CloneFlags) -> Result<(), Errno> {
        self.hit(format!("unshare({flags:?})"))
    }
    fn sethostname(&mut self, name: &str) -> Result<(), Errno> {
        self.hit(format!("sethostname({name})"))
    }
    fn enter_pid_namespace(&mut self, _plan: &LaunchPlan) -> Result<(), SetupError> {
        self.in_pid_ns = true;
        self.hit("enter_pid_namespace()".into())
            .map_err(|e| SetupError::sys(Step::Namespaces, "fork", e))
    }
    fn fork_job(&mut self) -> Result<(), SetupError> {
        self.hit("fork_job()".into())
            .map_err(|e| SetupError::sys(Step::Namespaces, "fork", e))
    }
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        let source = source.map(|s| s.display().to_string()).unwrap_or_default();
        self.hit(format!(
            "mount({source}, {}, {}, {flags:?}, {})",
            target.display(),
            fstype.unwrap_or(""),
            data.unwrap_or("")
        ))
    }
    fn lstat_kind(&mut self, path: &Path) -> Result<Kind, Errno> {
        Ok(match path.to_str() {
            Some("/bin") => Kind::Symlink("usr/bin".into()),
            Some("/dev/null") => Kind::File,
            _ => Kind::Dir,
        })
    }
    fn open_path(&mut self, path: &Path) -> Result<RawFd, Errno> {
        self.next_fd += 1;
        let fd = self.next_fd;
        self.hit(format!("open_path({}) = {fd}", path.display()))
            .map(|()| fd)
    }
    fn create_file(&mut self, path: &Path) -> Result<(), Errno> {
        self.hit(format!("create_file({})", path.display()))
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno> {
        self.hit(format!("symlink({}, {})", target.display(), link.display()))
    }
    fn pivot_root_here(&mut self) -> Result<(), Errno> {
        self.hit("pivot_root(., .)".into())
    }
    fn umount_detach(&mut self, path: &Path) -> Result<(), Errno> {
        self.hit(format!("umount_detach({})", path.display()))
    }
    fn mkdir_all(&mut self, path: &Path) -> Result<(), Errno> {
        self.hit(format!("mkdir_all({})", path.display()))
    }
    fn close(&mut self, fd: RawFd) {
        self.calls.push(format!("close({fd})"));
    }
    fn setrlimit(&mut self, l: Rlimit) -> Result<(), Errno> {
        self.hit(format!(
            "setrlimit({}, {}, {})",
            l.resource.name(),
            l.soft,
            l.hard
        ))
    }
    fn drop_bounding_ambient_inheritable(&mut self) -> Result<(), String> {
        self.hit("drop_bounding_ambient_inheritable()".into())
            .map_err(|e| e.to_string())
    }
    fn setgroups(&mut self, gids: &[u32]) -> Result<(), Errno> {
        self.hit(format!("setgroups({gids:?})"))
    }
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
        self.hit(format!("setresgid({gid})"))
    }
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
        self.hit(format!("setresuid({uid})"))
    }
    fn clear_and_verify_caps(&mut self) -> Result<(), String> {
        self.hit("clear_and_verify_caps()".into())
            .map_err(|e| e.to_string())
    }
    fn set_no_new_privs(&mut self) -> Result<(), Errno> {
        self.hit("set_no_new_privs()".into())
    }
    fn umask(&mut self, mask: u32) {
        self.calls.push(format!("umask({mask:o})"));
    }
    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        self.hit(format!("chdir({})", path.display()))
    }
    fn landlock(&mut self, plan: &LandlockPlan) -> Result<Vec<Applied>, SetupError> {
        self.hit(format!("landlock({} fs rules)", plan.fs.len()))
            .map_err(|e| SetupError::sys(Step::Landlock, "landlock", e))?;
        Ok(vec![Applied::enforced("landlock.fs", "test")])
    }
    fn seccomp(&mut self, filters: &CompiledSeccomp) -> Result<(), SetupError> {
        self.hit(format!("seccomp({} filters)", filters.filters.len()))
            .map_err(|e| SetupError::sys(Step::Seccomp, "seccomp", e))
    }
    fn report(&mut self, msg: &HelperMessage) -> Result<(), Errno> {
        let what = match msg {
            HelperMessage::Started(applied) => format!("started, {} mechanisms", applied.len()),
            HelperMessage::Failed(e) => format!("failed at {}", e.step),
        };
        self.hit(format!("report({what})"))
    }
    fn execve(&mut self, path: &CString, _argv: &[CString], _envp: &[CString]) -> Errno {
        self.calls
            .push(format!("execve({})", path.to_string_lossy()));
        if self.exec_results.is_empty() {
            Errno::ENOENT
        } else {
            self.exec_results.remove(0)
        }
    }
}

fn plan() -> LaunchPlan {
    LaunchPlan {
        job_id: "j-test".into(),
        argv: vec!["sh".into(), "-c".into(), "true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/ws".into(),
        uid: 61000,
        gid: 61000,
        supplementary_gids: vec![],
        umask: 0o022,
        rlimits: vec![Rlimit {
            resource: RlimitResource::NoFile,
            soft: 256,
            hard: 256,
        }],
        cgroup_procs: vec![
            "/cg/memory/j/cgroup.procs".into(),
            "/cg/unified/j/cgroup.procs".into(),
        ],
        parent_pid: 100,
        namespaces: Namespaces {
            net: true,
            ipc: true,
            uts: true,
            cgroup: true,
            mount: true,
            pid: true,
        },
        mounts: Mounts {
            binds: vec![
                Bind {
                    path: "/usr".into(),
                    writable: false,
                },
                Bind {
                    path: "/bin".into(),
                    writable: false,
                },
                Bind {
                    path: "/dev/null".into(),
                    writable: true,
                },
                Bind {
                    path: "/tmp/ws".into(),
                    writable: true,
                },
            ],
            tmpfs: vec![Tmpfs {
                target: "/tmp".into(),
                size_bytes: 1024,
                noexec: false,
                owner: None,
            }],
            proc: true,
        },
        landlock: Some(LandlockPlan {
            fs: vec![FsRule {
                path: "/ws".into(),
                access: FsAccess::ReadWrite,
            }],
            tcp_connect: vec![],
            tcp_bind: vec![],
            scope_signals: true,
            scope_abstract_unix: true,
            required: true,
        }),
        seccomp: Some(crate::seccomp::compile(&Default::default()).unwrap()),
    }
}

#[test]
fn steps_run_in_the_documented_order() {
    let mut sys = Recorder {
        ppid: 100,
        exec_results: vec![Errno::ENOENT, Errno::E2BIG],
        ..Default::default()
    };
    let err = apply(&mut sys, &plan(), 7).unwrap_err();
    assert_eq!(
        sys.calls,
        [
            "close_fds_except(7)",
            "setsid()",
            "set_pdeathsig(SIGKILL)",
            "write_file(/cg/memory/j/cgroup.procs, 4242)",
            "write_file(/cg/unified/j/cgroup.procs, 4242)",
            "unshare(CloneFlags(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET))",
            "sethostname(stockade)",
            // fork into the pid namespace (this process stays outside as the monitor); fork
            // cleared the parent-death signal of the child: armed again
            "enter_pid_namespace()",
            "set_pdeathsig(SIGKILL)",
            // the job's root: propagation off, hold every source before anything covers it
            "mount(, /, , MsFlags(MS_REC | MS_PRIVATE), )",
            "open_path(/usr) = 1",
            "open_path(/dev/null) = 2",
            "open_path(/tmp/ws) = 3",
            // a fresh tmpfs root, then entries parents first: /tmp before /tmp/ws
            "mount(tmpfs, /tmp, tmpfs, MsFlags(MS_NOSUID | MS_NODEV), size=1m,mode=0755)",
            "mkdir_all(/tmp)",
            "mkdir_all(/tmp/usr)",
            "mount(/proc/self/fd/1, /tmp/usr, , MsFlags(MS_BIND | MS_REC), )",
            "mount(, /tmp/usr, , MsFlags(MS_RDONLY | MS_NOSUID | MS_REMOUNT | MS_BIND), )",
            "mkdir_all(/tmp)",
            "symlink(usr/bin, /tmp/bin)",
            "mkdir_all(/tmp)",
            "mkdir_all(/tmp/tmp)",
            "mount(tmpfs, /tmp/tmp, tmpfs, MsFlags(MS_NOSUID | MS_NODEV), size=1024,mode=1777)",
            // a fresh procfs, mounted by pid 1 of the namespace
            "mkdir_all(/tmp)",
            "mkdir_all(/tmp/proc)",
            "mount(proc, /tmp/proc, proc, MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), )",
            "mkdir_all(/tmp/dev)",
            "create_file(/tmp/dev/null)",
            "mount(/proc/self/fd/2, /tmp/dev/null, , MsFlags(MS_BIND | MS_REC), )",
            "mkdir_all(/tmp/tmp)",
            "mkdir_all(/tmp/tmp/ws)",
            "mount(/proc/self/fd/3, /tmp/tmp/ws, , MsFlags(MS_BIND | MS_REC), )",
            "close(1)",
            "close(2)",
            "close(3)",
            // enter it, drop the old root
            "chdir(/tmp)",
            "pivot_root(., .)",
            "umount_detach(.)",
            "chdir(/)",
            "setrlimit(RLIMIT_CORE, 1, 1)",
            "setrlimit(RLIMIT_NOFILE, 256, 256)",
            "drop_bounding_ambient_inheritable()",
            "setgroups([])",
            "setresgid(61000)",
            "setresuid(61000)",
            // setresuid cleared PDEATHSIG: it must be armed again after it
            "set_pdeathsig(SIGKILL)",
            "clear_and_verify_caps()",
            "set_no_new_privs()",
            "umask(22)",
            "chdir(/ws)",
            // Landlock after no_new_privs and chdir; seccomp last before the report and execve
            "landlock(1 fs rules)",
            // this process stays as init; the job (pid 2) goes on
            "fork_job()",
            "setsid()",
            "seccomp(3 filters)",
            "report(started, 19 mechanisms)",
            "execve(/usr/bin/sh)",
            "execve(/bin/sh)",
        ]
    );
    // ENOENT on the first PATH entry moves on; E2BIG on the second is final and reported.
    assert_eq!(err.step, Step::Exec);
    assert_eq!(err.errno, Errno::E2BIG as i32);
    assert_eq!(err.syscall, "execve(/bin/sh)");
}

#[test]
fn a_failing_step_stops_everything_after_it() {
    let mut sys = Recorder {
        ppid: 100,
        fail: Some(("setresuid", Errno::EPERM)),
        ..Default::default()
    };
    let err = apply(&mut sys, &plan(), 3).unwrap_err();
    assert_eq!(err.step, Step::Identity);
    assert_eq!(err.syscall, "setresuid(61000, 61000, 61000)");
    assert_eq!(err.errno, libc::EPERM);
    assert_eq!(
        sys.calls.last().map(String::as_str),
        Some("setresuid(61000)")
    );
    assert!(!sys.calls.iter().any(|c| c.starts_with("execve")));
}

#[test]
fn a_dead_supervisor_stops_setup_before_the_cgroup_is_joined() {
    let mut sys = Recorder {
        ppid: 1,
        ..Default::default()
    };
    let err = apply(&mut sys, &plan(), 3).unwrap_err();
    assert_eq!(err.step, Step::ParentDeathSignal);
    assert!(
        err.message.contains("supervisor pid 100 is gone"),
        "{}",
        err.message
    );
    assert!(!sys.calls.iter().any(|c| c.starts_with("write_file")));
}

#[test]
fn command_not_found_names_the_command_and_path() {
    let mut sys = Recorder {
        ppid: 100,
        ..Default::default()
    };
    let mut p = plan();
    p.argv = vec!["no-such-cmd".into()];
    let err = apply(&mut sys, &p, 3).unwrap_err();
    assert_eq!(err.step, Step::Exec);
    assert_eq!(err.errno, libc::ENOENT);
    assert_eq!(
        err.message,
        "command not found: no-such-cmd (searched PATH=/usr/bin:/bin)"
    );
}

#[test]
fn malformed_plans_are_refused_before_any_side_effect() {
    let mut sys = Recorder {
        ppid: 100,
        ..Default::default()
    };
    let mut p = plan();
    p.argv = vec!["a\0b".into()];
    let err = apply(&mut sys, &p, 3).unwrap_err();
    assert_eq!(err.step, Step::ReadPlan);
    assert!(sys.calls.is_empty(), "{:?}", sys.calls);
    p.argv.clear();
    assert!(apply(&mut sys, &p, 3)
        .unwrap_err()
        .message
        .contains("empty command"));
    assert!(sys.calls.is_empty());
    let mut p = plan();
    p.rlimits.push(Rlimit {
        resource: RlimitResource::Core,
        soft: u64::MAX,
        hard: u64::MAX,
    });
    let err = apply(&mut sys, &p, 3).unwrap_err();
    assert!(
        err.message.contains("RLIMIT_CORE is fixed"),
        "{}",
        err.message
    );
    assert!(sys.calls.is_empty());
}

#[test]
fn a_dead_monitor_stops_setup_before_the_mounts() {
    let mut sys = Recorder {
        ppid: 100,
        monitor_gone: true,
        ..Default::default()
    };
    let err = apply(&mut sys, &plan(), 3).unwrap_err();
    assert_eq!(err.step, Step::ParentDeathSignal);
    assert_eq!(err.message, "the pid namespace's monitor is gone");
    assert!(!sys.calls.iter().any(|c| c.starts_with("mount")));
}

#[test]
fn without_a_pid_namespace_nothing_forks_and_proc_is_not_mounted() {
    let mut sys = Recorder {
        ppid: 100,
        ..Default::default()
    };
    let mut p = plan();
    p.namespaces.pid = false;
    p.mounts.proc = false;
    apply(&mut sys, &p, 3).unwrap_err();
    assert!(
        !sys.calls
            .iter()
            .any(|c| c.contains("fork") || c.contains("enter_pid") || c.contains("proc, ")),
        "{:?}",
        sys.calls
    );
    assert!(sys
        .calls
        .iter()
        .any(|c| c == "report(started, 18 mechanisms)"));
}

#[test]
fn a_budgeted_workspace_is_a_tmpfs_owned_by_the_job() {
    let mut sys = Recorder {
        ppid: 100,
        ..Default::default()
    };
    let mut p = plan();
    // The workspace is no longer bound from the host: a tmpfs of its own, the job's, 0700.
    p.mounts.binds.retain(|b| b.path != Path::new("/tmp/ws"));
    p.mounts.tmpfs.push(Tmpfs {
        target: "/tmp/ws".into(),
        size_bytes: 64 << 20,
        noexec: false,
        owner: Some((61000, 61000)),
    });
    let _ = apply(&mut sys, &p, 3);
    let mounts: Vec<&String> = sys
        .calls
        .iter()
        .filter(|c| c.starts_with("mount(tmpfs"))
        .collect();
    assert_eq!(
        mounts,
        [
            "mount(tmpfs, /tmp, tmpfs, MsFlags(MS_NOSUID | MS_NODEV), size=1m,mode=0755)",
            "mount(tmpfs, /tmp/tmp, tmpfs, MsFlags(MS_NOSUID | MS_NODEV), size=1024,mode=1777)",
            "mount(tmpfs, /tmp/tmp/ws, tmpfs, MsFlags(MS_NOSUID | MS_NODEV), size=67108864,mode=0700,uid=61000,gid=61000)",
        ]
    );
    assert!(!sys
        .calls
        .iter()
        .any(|c| c.contains("/tmp/tmp/ws, , MsFlags(MS_BIND")));
}
