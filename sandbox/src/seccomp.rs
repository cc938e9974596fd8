//! Seccomp: the system calls a job may not make. The supervisor compiles a profile's
//! [`SeccompPolicy`] into classic BPF when the profile is loaded ([`compile`]); the program travels
//! in the launch plan as plain data ([`CompiledSeccomp`]); the exec helper only installs it
//! ([`install`]), as its very last step before `execve`, so as few of its own calls as possible
//! run under the filter.
//!
//! # Filter layout
//!
//! Several small filters are stacked, each with one action, as `seccompiler` builds them. The
//! kernel runs every filter on every call and the most severe result wins (kill > errno > allow),
//! so each filter is correct on its own and none can widen another. They are installed in this
//! order (= the order of [`CompiledSeccomp::filters`]):
//!
//! | # | filter | on match | why |
//! |---|--------|----------|-----|
//! | 1 | ABI: `arch` is the native `AUDIT_ARCH_*`, and on x86_64 bit `0x40000000` (x32) of `nr` is clear | else kill the process | every other filter compares native numbers only; an i386 (`int 0x80`) or x32 call would slip past them with different numbers. Hand-written: `seccompiler` checks `arch` but not the x32 bit |
//! | 2 | `clone3` | `ENOSYS` | its flags sit in memory BPF cannot read; `ENOSYS` makes glibc (2.34+) fall back to `clone(2)`, whose flags filter 3 checks. `EPERM` or a kill would break every `pthread_create` instead |
//! | 3 | deny list (default mode): the [`default_deny_list`], `unshare` and `setns` (unless [`SeccompPolicy::allow_namespaces`]), `extra_deny`, and five argument checks: `ioctl(_, TIOCSTI or TIOCLINUX)`, `personality(p)` unless `p` is `0` (`PER_LINUX`) or `0xffffffff` (query), `clone(flags)` with any `CLONE_NEW*` flag, `setrlimit(RLIMIT_CORE, _)`, `prlimit64(_, RLIMIT_CORE, new, _)` with `new` not NULL | the [`DenyAction`] | everything else is allowed |
//!
//! In allow-list mode filter 3 is replaced by two:
//!
//! | # | filter | on match | why |
//! |---|--------|----------|-----|
//! | 3 | the argument checks above, for those of `ioctl`, `personality`, `clone`, `setrlimit`, `prlimit64` the list allows | the [`DenyAction`] | an allow list names calls, not arguments |
//! | 4 | allow list: the listed calls, minus `extra_deny`, plus [`ALWAYS_ALLOWED`] and `clone3` (left to filter 2) | allow; anything else gets the [`DenyAction`] | installed last: once it is in place, the `seccomp`/`prctl` calls that install further filters might be denied themselves |
//!
//! The ABI filter always kills, whatever the [`DenyAction`]: no job has a reason to use a foreign
//! ABI, and `EPERM` there would leave a probing job running. It kills on `nr == -1` too (harmless:
//! the kernel answers every number with the x32 bit set with `ENOSYS` or an x32 call).
//!
//! Every filter returns a constant for a given call number unless it looks at arguments, so the
//! kernel's seccomp action cache (Linux 5.11+) lets most allowed calls skip the filters entirely;
//! only `ioctl`, `clone`, `personality`, `setrlimit` and `prlimit64` run through them on every
//! call.
//!
//! # Argument checks
//!
//! Flags, commands and resource numbers are compared on their low 32 bits only, as the kernel
//! does: `ioctl`'s `cmd`, `personality`'s argument and the `resource` of `setrlimit` and
//! `prlimit64` are `unsigned int`, and `clone` uses only the low 32 bits of its flags, so
//! `0x1_0000_5412` is `TIOCSTI` to the kernel and to the filter alike. Pointers are compared on
//! all 64 bits (`prlimit64`'s `new`: only NULL is a read). `clone`'s flags
//! are argument 0 on both x86_64 and aarch64 (only the order of the later arguments differs).
//! `CLONE_NEWTIME` is not checked on `clone(2)`: its bit (`0x80`) lies in the exit-signal byte
//! there, and the kernel accepts it only from `clone3` (`ENOSYS` here) and `unshare` (denied).
//!
//! `RLIMIT_CORE` may be read, never set. The exec helper sets it to 1 (soft and hard): exactly 1
//! makes the kernel skip a core dump to a pipe `core_pattern` (`systemd-coredump`, apport), which
//! ignores any other limit ("RLIMIT_CORE is set to 1, aborting core" in `fs/coredump.c`), and it is
//! below the one page an ELF core file needs, so no file is written either. Lowering a limit needs
//! no privilege, so without this check a job could set 0 and have its memory piped to the host's
//! crash collector. `getrlimit` and `prlimit64` with `new == NULL` (glibc's `getrlimit`), and every
//! other resource, stay allowed. Neither architecture has a separate `ugetrlimit` (only i386 and
//! 32-bit arm do, and the ABI filter kills those).
//!
//! # Compatibility
//!
//! x86_64 and aarch64, system call tables of Linux 6.18 (`seccomp/tables.rs`). [`compile`]
//! refuses a name that neither architecture knows; a name only the other architecture has (say
//! `iopl` on aarch64) is skipped, since nothing can call it, and the summary says so. Filters for
//! other architectures are refused with [`SeccompError::UnsupportedArch`].
//!
//! # Test strategy
//!
//! Unit tests compile policies for both architectures and run the programs in a small BPF
//! interpreter that combines stacked filters the way the kernel does (every denied call, every
//! argument case, foreign ABIs). Real-kernel tests install the filter in a child process (the test
//! binary re-run on one test, so the test runner itself is never filtered; no root needed) and
//! check each probe fails with the exact errno, or kills the child with `SIGSYS`, while the same
//! probe in an unfiltered child gets a different answer from the kernel.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nix::errno::Errno;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use serde::{Deserialize, Serialize};

mod tables;

/// A profile's seccomp policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompPolicy {
    /// Deny list (the default) or allow list.
    #[serde(default)]
    pub mode: SeccompMode,
    /// More system calls to deny outright, by name.
    #[serde(default)]
    pub extra_deny: Vec<String>,
    /// Let the job create and join namespaces: `unshare`, `setns` and `clone` with `CLONE_NEW*`
    /// flags. Off by default.
    #[serde(default)]
    pub allow_namespaces: bool,
    /// What a denied call gets.
    #[serde(default)]
    pub deny_action: DenyAction,
}

/// Which calls a policy lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SeccompMode {
    /// Allow everything but the [`default_deny_list`] and the policy's additions.
    #[default]
    DenyList,
    /// Allow only the listed calls (plus [`ALWAYS_ALLOWED`]).
    AllowList {
        /// System call names.
        allow: Vec<String>,
    },
}

/// What a denied call gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyAction {
    /// The call fails with `EPERM` and the job goes on.
    #[default]
    Errno,
    /// The whole process is killed by `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`).
    KillProcess,
}

impl DenyAction {
    fn seccompiler(self) -> SeccompAction {
        match self {
            DenyAction::Errno => SeccompAction::Errno(libc::EPERM as u32),
            DenyAction::KillProcess => SeccompAction::KillProcess,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            DenyAction::Errno => "EPERM",
            DenyAction::KillProcess => "SIGSYS (process killed)",
        }
    }
}

/// Compiled filters, ready to install: plain data, so they travel in the launch plan and the
/// helper does no policy work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledSeccomp {
    /// BPF programs, in installation order (see the module docs).
    pub filters: Vec<Vec<Instruction>>,
    /// FNV-1a 64 of every instruction, 16 hex digits: names the program in reports.
    pub hash: String,
    /// What is denied and how, one line each, for `stockade profiles explain`.
    pub summary: Vec<String>,
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// Operation.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// Why a policy could not be compiled or a program installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// A name no supported architecture knows.
    #[error("unknown system call \"{name}\" on {arch}")]
    UnknownSyscall {
        /// The name as written.
        name: String,
        /// The architecture compiled for.
        arch: &'static str,
    },
    /// A call every process needs was listed in `extra_deny`.
    #[error("system call \"{name}\" cannot be denied: {reason}")]
    Essential {
        /// The name.
        name: String,
        /// Why it is needed.
        reason: &'static str,
    },
    /// An allow list names a namespace call while `allow_namespaces` is false.
    #[error("system call \"{name}\" is in the allow list but allow_namespaces is false")]
    NamespaceCallAllowed {
        /// `unshare` or `setns`.
        name: String,
    },
    /// No system call table for this architecture.
    #[error("seccomp filters are not supported on {arch} (only x86_64 and aarch64)")]
    UnsupportedArch {
        /// The architecture.
        arch: &'static str,
    },
    /// `seccompiler` could not build a filter (too many instructions, ...).
    #[error("cannot build the {filter} filter: {message}")]
    Build {
        /// Which filter.
        filter: &'static str,
        /// seccompiler's error.
        message: String,
    },
    /// A compiled program that is not what [`compile`] produces.
    #[error("invalid compiled seccomp program: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// [`install`] was called before `PR_SET_NO_NEW_PRIVS`.
    #[error("no_new_privs is not set: seccomp must be installed after PR_SET_NO_NEW_PRIVS")]
    NoNewPrivs,
    /// The kernel refused a filter. The filters before `index` are installed: do not exec.
    #[error("seccomp(SECCOMP_SET_MODE_FILTER) of filter {index} of {count} failed: {}", errno_text(*.errno))]
    Install {
        /// 1-based position of the refused filter.
        index: usize,
        /// Number of filters.
        count: usize,
        /// The kernel's answer.
        errno: Errno,
    },
}

impl SeccompError {
    /// The errno behind an installation failure, if any (for the helper's setup error).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SeccompError::Install { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn errno_text(errno: Errno) -> String {
    format!("{errno:?}: {}", errno.desc().to_lowercase())
}

/// Calls denied outright in deny-list mode, whatever the policy says. Names that do not exist on
/// the running architecture (`iopl`, `ioperm`, `modify_ldt`, `uselib`, ... on aarch64) are skipped.
///
/// Beyond these, deny-list mode denies `unshare` and `setns` unless namespaces are allowed, and
/// `ioctl`, `personality`, `clone`, `setrlimit` and `prlimit64` for certain arguments (see the
/// module docs).
pub fn default_deny_list() -> &'static [&'static str] {
    DEFAULT_DENY
}

const DEFAULT_DENY: &[&str] = &[
    // Reading or writing other processes' memory.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    // Mount table and root directory: the classic and the new mount API.
    "mount",
    "umount2",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "pivot_root",
    "chroot",
    // Large kernel attack surface that build and agent jobs do not need.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Kernel images and modules.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    // Host administration.
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "quotactl_fd",
    "vhangup",
    "syslog",
    "sethostname",
    "setdomainname",
    "fanotify_init",
    // File handles bypass path-based checks (the "shocker" container escape).
    "open_by_handle_at",
    "name_to_handle_at",
    // Clocks.
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    // x86 I/O ports and local descriptor tables.
    "iopl",
    "ioperm",
    "modify_ldt",
    // Obsolete: unused by current software, kept only as attack surface.
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "lookup_dcookie",
    "nfsservctl",
];

/// Namespace calls, denied unless [`SeccompPolicy::allow_namespaces`].
const NAMESPACE_CALLS: &[&str] = &["unshare", "setns"];

/// Calls an allow list always includes, and `extra_deny` may not name: without them a process
/// cannot return from a signal handler, restart an interrupted sleep, exit, or (the exec helper)
/// start the job at all.
pub const ALWAYS_ALLOWED: &[&str] = &[
    "rt_sigreturn",
    "restart_syscall",
    "exit",
    "exit_group",
    "execve",
];

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541c;
const PER_LINUX: u64 = 0;
const PERSONALITY_QUERY: u64 = 0xffff_ffff;
/// The job's core limit is 1 (a pipe `core_pattern` is skipped only at exactly 1): it may read
/// it, never set it.
const RLIMIT_CORE: u64 = libc::RLIMIT_CORE as u64;
/// The `CLONE_NEW*` flags `clone(2)` accepts (`CLONE_NEWTIME` is `clone3`/`unshare` only).
const CLONE_NEW_FLAGS: &[(&str, u64)] = &[
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
];

/// `__X32_SYSCALL_BIT`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's limit on one filter (`BPF_MAXINSNS`).
const MAX_FILTER_LEN: usize = 4096;

// Classic BPF opcodes and seccomp return values for the hand-written ABI filter.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// Architectures with a system call table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// `AUDIT_ARCH_*`: `EM_*` | 64-bit | little-endian.
    fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => 0xc000_003e,
            Arch::Aarch64 => 0xc000_00b7,
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }

    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => tables::X86_64,
            Arch::Aarch64 => tables::AARCH64,
        }
    }

    fn others(self) -> impl Iterator<Item = Arch> {
        [Arch::X86_64, Arch::Aarch64]
            .into_iter()
            .filter(move |a| *a != self)
    }

    /// The call's number on this architecture.
    fn nr(self, name: &str) -> Option<u32> {
        let table = self.table();
        table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }

    /// `Ok(Some(nr))` if this architecture has the call, `Ok(None)` if only another one does.
    fn resolve(self, name: &str) -> Result<Option<u32>, SeccompError> {
        if let Some(nr) = self.nr(name) {
            return Ok(Some(nr));
        }
        if self.others().any(|a| a.nr(name).is_some()) {
            return Ok(None);
        }
        Err(SeccompError::UnknownSyscall {
            name: name.to_string(),
            arch: self.name(),
        })
    }
}

/// When a listed call is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    IoctlTerminalInjection,
    PersonalityChange,
    CloneNewNamespace,
    SetrlimitCore,
    PrlimitCoreWrite,
}

impl When {
    fn rules(self) -> Result<Vec<SeccompRule>, String> {
        let dword = |arg: u8, op: SeccompCmpOp, value: u64| {
            SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
                .map_err(|e| e.to_string())
        };
        let rule =
            |conds: Vec<SeccompCondition>| SeccompRule::new(conds).map_err(|e| e.to_string());
        match self {
            When::Always => Ok(vec![]),
            When::IoctlTerminalInjection => Ok(vec![
                rule(vec![dword(1, SeccompCmpOp::Eq, TIOCSTI)?])?,
                rule(vec![dword(1, SeccompCmpOp::Eq, TIOCLINUX)?])?,
            ]),
            When::PersonalityChange => Ok(vec![rule(vec![
                dword(0, SeccompCmpOp::Ne, PER_LINUX)?,
                dword(0, SeccompCmpOp::Ne, PERSONALITY_QUERY)?,
            ])?]),
            When::CloneNewNamespace => CLONE_NEW_FLAGS
                .iter()
                .map(|(_, flag)| rule(vec![dword(0, SeccompCmpOp::MaskedEq(*flag), *flag)?]))
                .collect(),
            When::SetrlimitCore => Ok(vec![rule(vec![dword(0, SeccompCmpOp::Eq, RLIMIT_CORE)?])?]),
            // `new` is a pointer: all 64 bits, so 0x1_0000_0000 counts as a write.
            When::PrlimitCoreWrite => Ok(vec![rule(vec![
                dword(1, SeccompCmpOp::Eq, RLIMIT_CORE)?,
                SeccompCondition::new(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0)
                    .map_err(|e| e.to_string())?,
            ])?]),
        }
    }

    fn describe(self) -> String {
        match self {
            When::Always => String::new(),
            When::IoctlTerminalInjection => format!(
                " when arg1 (low 32 bits) is TIOCSTI ({TIOCSTI:#x}) or TIOCLINUX ({TIOCLINUX:#x})"
            ),
            When::PersonalityChange => format!(
                " unless arg0 (low 32 bits) is PER_LINUX ({PER_LINUX:#x}) or the query {PERSONALITY_QUERY:#x}"
            ),
            When::CloneNewNamespace => {
                let names: Vec<&str> = CLONE_NEW_FLAGS.iter().map(|(n, _)| *n).collect();
                format!(" when arg0 has any of {}", names.join("|"))
            }
            When::SetrlimitCore => {
                format!(" when arg0 (low 32 bits) is RLIMIT_CORE ({RLIMIT_CORE})")
            }
            When::PrlimitCoreWrite => format!(
                " when arg1 (low 32 bits) is RLIMIT_CORE ({RLIMIT_CORE}) and arg2 (new limit) is not NULL"
            ),
        }
    }
}

/// Calls checked by argument, and for which policies.
fn argument_checks(policy: &SeccompPolicy) -> Vec<(&'static str, When)> {
    let mut checks = vec![
        ("ioctl", When::IoctlTerminalInjection),
        ("personality", When::PersonalityChange),
        ("setrlimit", When::SetrlimitCore),
        ("prlimit64", When::PrlimitCoreWrite),
    ];
    if !policy.allow_namespaces {
        checks.push(("clone", When::CloneNewNamespace));
    }
    checks
}

/// Compile `policy` for the architecture this crate was built for.
pub fn compile(policy: &SeccompPolicy) -> Result<CompiledSeccomp, SeccompError> {
    let arch = Arch::native().ok_or(SeccompError::UnsupportedArch {
        arch: std::env::consts::ARCH,
    })?;
    compile_for(policy, arch)
}

fn compile_for(policy: &SeccompPolicy, arch: Arch) -> Result<CompiledSeccomp, SeccompError> {
    let mut out = Builder {
        arch,
        filters: Vec::new(),
        summary: Vec::new(),
        absent: Vec::new(),
    };
    let action = policy.deny_action;

    // Validate every name before building anything.
    let mut extra = BTreeMap::new();
    for name in &policy.extra_deny {
        if let Some(reason) = essential(name) {
            return Err(SeccompError::Essential {
                name: name.clone(),
                reason,
            });
        }
        match arch.resolve(name)? {
            Some(nr) => {
                extra.insert(nr, name.as_str());
            }
            None => out.absent.push(name.clone()),
        }
    }

    // 1. ABI: first, so that every later filter only ever sees native call numbers.
    out.filters.push(abi_filter(arch));
    out.summary.push(match arch {
        Arch::X86_64 => "abi: only native x86_64 calls; i386 (int 0x80) and x32 (nr | 0x40000000) kill the process".to_string(),
        Arch::Aarch64 => "abi: only native aarch64 calls; 32-bit arm calls kill the process".to_string(),
    });

    // 2. clone3 -> ENOSYS, so libc falls back to clone(2), whose flags filter 3 can see.
    let clone3 = arch
        .nr("clone3")
        .expect("every supported architecture has clone3");
    out.seccompiler(
        "clone3",
        BTreeMap::from([(clone3, When::Always)]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    out.summary.push(format!(
        "clone3 ({clone3}): ENOSYS, so libc falls back to clone(2), whose flags the filter checks"
    ));

    match &policy.mode {
        SeccompMode::DenyList => {
            let mut deny: BTreeMap<u32, (&str, When)> = BTreeMap::new();
            let namespaces: &[&str] = if policy.allow_namespaces {
                &[]
            } else {
                NAMESPACE_CALLS
            };
            let always = DEFAULT_DENY.iter().chain(namespaces).copied();
            for name in always {
                match arch.nr(name) {
                    Some(nr) => {
                        deny.insert(nr, (name, When::Always));
                    }
                    None => out.absent.push(name.to_string()),
                }
            }
            for (name, when) in argument_checks(policy) {
                let nr = arch
                    .nr(name)
                    .expect("every argument-checked call exists on every architecture");
                deny.entry(nr).or_insert((name, when));
            }
            for (&nr, &name) in &extra {
                if nr == clone3 {
                    continue; // Already ENOSYS (filter 2): EPERM would defeat the fallback.
                }
                // Denying outright overrides an argument check on the same call.
                deny.insert(nr, (name, When::Always));
            }
            // 3. The deny list.
            out.seccompiler(
                "deny-list",
                deny.iter().map(|(nr, (_, when))| (*nr, *when)).collect(),
                SeccompAction::Allow,
                action.seccompiler(),
            )?;
            for (nr, (name, when)) in &deny {
                out.summary.push(format!(
                    "deny {name} ({nr}) with {}{}",
                    action.describe(),
                    when.describe()
                ));
            }
        }
        SeccompMode::AllowList { allow } => {
            let mut allowed: BTreeMap<u32, &str> = BTreeMap::new();
            for name in allow {
                if !policy.allow_namespaces && NAMESPACE_CALLS.contains(&name.as_str()) {
                    return Err(SeccompError::NamespaceCallAllowed { name: name.clone() });
                }
                match arch.resolve(name)? {
                    Some(nr) if !extra.contains_key(&nr) => {
                        allowed.insert(nr, name.as_str());
                    }
                    Some(_) => {} // extra_deny wins.
                    None => out.absent.push(name.clone()),
                }
            }
            let listed: Vec<&str> = allowed.values().copied().collect();
            for name in ALWAYS_ALLOWED {
                let nr = arch.nr(name).expect("essential calls exist everywhere");
                allowed.insert(nr, name);
            }
            // clone3 is decided by filter 2 alone: denying it here (EPERM or a kill) would stop
            // libc from falling back to clone(2).
            allowed.insert(clone3, "clone3");

            // 3. Argument checks for the allowed calls that have them.
            let checks: BTreeMap<u32, When> = argument_checks(policy)
                .into_iter()
                .filter_map(|(name, when)| {
                    let nr = arch.nr(name)?;
                    allowed.contains_key(&nr).then_some((nr, when))
                })
                .collect();
            if !checks.is_empty() {
                out.seccompiler(
                    "argument-check",
                    checks.clone(),
                    SeccompAction::Allow,
                    action.seccompiler(),
                )?;
                for (nr, when) in &checks {
                    let name = allowed[nr];
                    out.summary.push(format!(
                        "deny {name} ({nr}) with {}{}",
                        action.describe(),
                        when.describe()
                    ));
                }
            }
            // 4. The allow list, last: from here on, calls outside it (perhaps the very
            //    seccomp/prctl calls that install filters) are denied.
            out.seccompiler(
                "allow-list",
                allowed.keys().map(|nr| (*nr, When::Always)).collect(),
                action.seccompiler(),
                SeccompAction::Allow,
            )?;
            out.summary.push(format!(
                "allow list: {} ({} calls); always allowed: {}; everything else: {}",
                if listed.is_empty() {
                    "(empty)".to_string()
                } else {
                    listed.join(", ")
                },
                listed.len(),
                ALWAYS_ALLOWED.join(", "),
                action.describe()
            ));
        }
    }
    if !extra.is_empty() {
        out.summary.push(format!(
            "extra_deny: {}",
            extra.values().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    if !out.absent.is_empty() {
        out.absent.sort();
        out.absent.dedup();
        out.summary.push(format!(
            "not on {} (nothing to filter): {}",
            arch.name(),
            out.absent.join(", ")
        ));
    }
    let hash = program_hash(&out.filters);
    Ok(CompiledSeccomp {
        filters: out.filters,
        hash,
        summary: out.summary,
    })
}

/// Why a call may not be denied, if it is essential.
fn essential(name: &str) -> Option<&'static str> {
    match name {
        "rt_sigreturn" | "restart_syscall" => Some("the kernel's signal return path needs it"),
        "exit" | "exit_group" => Some("every process needs it to exit"),
        "execve" => Some("the exec helper needs it to start the job"),
        _ => None,
    }
}

struct Builder {
    arch: Arch,
    filters: Vec<Vec<Instruction>>,
    summary: Vec<String>,
    absent: Vec<String>,
}

impl Builder {
    /// Build one filter with seccompiler: `on_match` for the listed calls (as `When` says),
    /// `otherwise` for every other call.
    fn seccompiler(
        &mut self,
        filter: &'static str,
        calls: BTreeMap<u32, When>,
        otherwise: SeccompAction,
        on_match: SeccompAction,
    ) -> Result<(), SeccompError> {
        let build = |message: String| SeccompError::Build { filter, message };
        let mut rules = BTreeMap::new();
        for (nr, when) in calls {
            rules.insert(i64::from(nr), when.rules().map_err(build)?);
        }
        let program: seccompiler::BpfProgram =
            SeccompFilter::new(rules, otherwise, on_match, self.arch.target())
                .and_then(TryInto::try_into)
                .map_err(|e| build(e.to_string()))?;
        self.filters.push(
            program
                .into_iter()
                .map(|i| Instruction {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect(),
        );
        Ok(())
    }
}

/// Filter 1: kill anything but the native ABI.
fn abi_filter(arch: Arch) -> Vec<Instruction> {
    let stmt = |code, k| Instruction {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| Instruction { code, jt, jf, k };
    let mut program = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, arch.audit_arch(), 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    ];
    if arch == Arch::X86_64 {
        // x32 calls arrive with AUDIT_ARCH_X86_64 and nr | __X32_SYSCALL_BIT.
        program.extend([
            stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
            jump(BPF_JMP_JSET_K, X32_SYSCALL_BIT, 0, 1),
            stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        ]);
    }
    program.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    program
}

/// FNV-1a 64 over the filter count, then each filter's length and instructions (little-endian
/// `code`, `jt`, `jf`, `k`), so no two different programs share a byte stream.
fn program_hash(filters: &[Vec<Instruction>]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&(filters.len() as u32).to_le_bytes());
    for filter in filters {
        feed(&(filter.len() as u32).to_le_bytes());
        for i in filter {
            feed(&i.code.to_le_bytes());
            feed(&[i.jt, i.jf]);
            feed(&i.k.to_le_bytes());
        }
    }
    let mut hex = String::with_capacity(16);
    let _ = write!(hex, "{hash:016x}");
    hex
}

impl CompiledSeccomp {
    /// Total number of BPF instructions over all filters.
    pub fn instruction_count(&self) -> usize {
        self.filters.iter().map(Vec::len).sum()
    }

    /// Check the program is installable and matches its hash (so the hash in a job's report
    /// names what was installed).
    pub fn verify(&self) -> Result<(), SeccompError> {
        let invalid = |reason: String| Err(SeccompError::Invalid { reason });
        if self.filters.is_empty() {
            return invalid("no filters".to_string());
        }
        for (i, filter) in self.filters.iter().enumerate() {
            if filter.is_empty() || filter.len() > MAX_FILTER_LEN {
                return invalid(format!(
                    "filter {} has {} instructions (1 to {MAX_FILTER_LEN} allowed)",
                    i + 1,
                    filter.len()
                ));
            }
        }
        let actual = program_hash(&self.filters);
        if actual != self.hash {
            return invalid(format!(
                "hash {} does not match the instructions (hash {actual})",
                self.hash
            ));
        }
        Ok(())
    }
}

/// Install every filter of `compiled`, in order, on the calling thread (the exec helper is
/// single-threaded; its children and the job inherit them).
///
/// Requires `PR_SET_NO_NEW_PRIVS` to be set already: it is checked, never set here, so a reordered
/// helper fails instead of silently changing its step order. On error the filters before the one
/// that failed stay installed; the caller must not exec.
pub fn install(compiled: &CompiledSeccomp) -> Result<(), SeccompError> {
    compiled.verify()?;
    let count = compiled.filters.len();
    match nix::sys::prctl::get_no_new_privs() {
        Ok(true) => {}
        Ok(false) => return Err(SeccompError::NoNewPrivs),
        Err(errno) => {
            return Err(SeccompError::Install {
                index: 1,
                count,
                errno,
            })
        }
    }
    for (i, filter) in compiled.filters.iter().enumerate() {
        let program: seccompiler::BpfProgram = filter
            .iter()
            .map(|i| seccompiler::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        seccompiler::apply_filter(&program).map_err(|e| {
            let errno = match &e {
                seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => {
                    Errno::from_raw(io.raw_os_error().unwrap_or(libc::EINVAL))
                }
                _ => Errno::EINVAL,
            };
            SeccompError::Install {
                index: i + 1,
                count,
                errno,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
