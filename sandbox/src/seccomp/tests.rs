//! Unit tests (compiled programs run in a BPF interpreter, both architectures) and real-kernel
//! tests (filters installed in a re-executed child of this test binary).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

use super::*;
use crate::sys::probe_syscall;

const EPERM_RET: u32 = 0x0005_0000 | libc::EPERM as u32;
const ENOSYS_RET: u32 = 0x0005_0000 | libc::ENOSYS as u32;
const KILL_RET: u32 = SECCOMP_RET_KILL_PROCESS;
const ALLOW_RET: u32 = SECCOMP_RET_ALLOW;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

fn native() -> Arch {
    Arch::native().expect("tests run on x86_64 or aarch64")
}

fn allow_list(names: &[&str]) -> SeccompPolicy {
    SeccompPolicy {
        mode: SeccompMode::AllowList {
            allow: names.iter().map(|n| n.to_string()).collect(),
        },
        ..SeccompPolicy::default()
    }
}

// ---------------------------------------------------------------------------------------------
// A classic BPF interpreter for the opcodes seccompiler and `abi_filter` emit, combining stacked
// filters like the kernel's seccomp_run_filters: newest first, the lowest ACTION_ONLY value
// (as s32: kill < errno < allow) wins, the first seen among equals.
// ---------------------------------------------------------------------------------------------

struct Call {
    arch: u32,
    nr: u32,
    args: [u64; 6],
}

fn load(call: &Call, offset: u32) -> u32 {
    match offset {
        0 => call.nr,
        4 => call.arch,
        8 | 12 => 0, // instruction pointer
        16..=60 if offset & 3 == 0 => {
            let arg = call.args[((offset - 16) / 8) as usize];
            if (offset - 16) & 7 == 0 {
                arg as u32
            } else {
                (arg >> 32) as u32
            }
        }
        _ => panic!("load from invalid seccomp_data offset {offset}"),
    }
}

fn run_filter(filter: &[Instruction], call: &Call) -> u32 {
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = filter[pc];
        pc += 1;
        match i.code {
            0x20 => acc = load(call, i.k),
            0x54 => acc &= i.k,
            0x05 => pc += i.k as usize,
            0x15 | 0x25 | 0x35 | 0x45 => {
                let taken = match i.code {
                    0x15 => acc == i.k,
                    0x25 => acc > i.k,
                    0x35 => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x06 => return i.k,
            code => panic!("opcode {code:#x} not expected in a seccomp filter"),
        }
    }
}

fn run(compiled: &CompiledSeccomp, call: &Call) -> u32 {
    let action_only = |ret: u32| (ret & 0xffff_0000) as i32;
    let mut result = ALLOW_RET;
    for filter in compiled.filters.iter().rev() {
        let ret = run_filter(filter, call);
        if action_only(ret) < action_only(result) {
            result = ret;
        }
    }
    result
}

fn eval(compiled: &CompiledSeccomp, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
    let nr = arch
        .nr(name)
        .unwrap_or_else(|| panic!("{name} on {arch:?}"));
    run(
        compiled,
        &Call {
            arch: arch.audit_arch(),
            nr,
            args,
        },
    )
}

fn arg0(value: u64) -> [u64; 6] {
    [value, 0, 0, 0, 0, 0]
}

fn arg1(value: u64) -> [u64; 6] {
    [0, value, 0, 0, 0, 0]
}

// ---------------------------------------------------------------------------------------------
// Unit tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn default_policy_compiles_to_three_small_filters() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let compiled = compile_for(&SeccompPolicy::default(), arch).unwrap();
        assert_eq!(compiled.filters.len(), 3, "{arch:?}");
        compiled.verify().unwrap();
        let sizes: Vec<usize> = compiled.filters.iter().map(Vec::len).collect();
        println!(
            "default program on {}: {} instructions {sizes:?}, hash {}",
            arch.name(),
            compiled.instruction_count(),
            compiled.hash
        );
        assert!(compiled.instruction_count() < 600, "{sizes:?}");
    }
    assert_eq!(
        compile(&SeccompPolicy::default()).unwrap(),
        compile_for(&SeccompPolicy::default(), native()).unwrap()
    );
}

#[test]
fn unknown_syscall_is_named_with_the_arch() {
    let arch = std::env::consts::ARCH;
    let policy = SeccompPolicy {
        extra_deny: vec!["ptrace".into(), "frobnicate".into()],
        ..SeccompPolicy::default()
    };
    assert_eq!(
        compile(&policy).unwrap_err().to_string(),
        format!("unknown system call \"frobnicate\" on {arch}")
    );
    assert_eq!(
        compile(&allow_list(&["read", "wirte"]))
            .unwrap_err()
            .to_string(),
        format!("unknown system call \"wirte\" on {arch}")
    );
    let err = compile_for(&allow_list(&["Read"]), Arch::Aarch64).unwrap_err();
    assert_eq!(err.to_string(), "unknown system call \"Read\" on aarch64");
}

#[test]
fn a_call_of_the_other_architecture_is_skipped_and_reported() {
    let policy = SeccompPolicy {
        extra_deny: vec!["arch_prctl".into()],
        ..SeccompPolicy::default()
    };
    let compiled = compile_for(&policy, Arch::Aarch64).unwrap();
    let last = compiled.summary.last().unwrap();
    assert!(
        last.starts_with("not on aarch64 (nothing to filter): "),
        "{last}"
    );
    for name in [
        "arch_prctl",
        "iopl",
        "ioperm",
        "modify_ldt",
        "uselib",
        "_sysctl",
    ] {
        assert!(last.contains(name), "{name} missing from {last}");
    }
    // On x86_64 the same policy denies it.
    let x86 = compile_for(&policy, Arch::X86_64).unwrap();
    assert_eq!(eval(&x86, Arch::X86_64, "arch_prctl", [0; 6]), EPERM_RET);
}

#[test]
fn essential_and_namespace_calls_are_refused() {
    for name in ALWAYS_ALLOWED {
        let policy = SeccompPolicy {
            extra_deny: vec![name.to_string()],
            ..SeccompPolicy::default()
        };
        let err = compile(&policy).unwrap_err();
        assert!(
            matches!(err, SeccompError::Essential { .. }),
            "{name}: {err}"
        );
        assert!(err
            .to_string()
            .starts_with(&format!("system call \"{name}\" cannot be denied: ")));
    }
    assert_eq!(
        compile(&allow_list(&["read", "unshare"]))
            .unwrap_err()
            .to_string(),
        "system call \"unshare\" is in the allow list but allow_namespaces is false"
    );
    let mut policy = allow_list(&["read", "unshare", "setns"]);
    policy.allow_namespaces = true;
    compile(&policy).unwrap();
}

#[test]
fn hash_is_stable_and_changes_with_the_policy() {
    let base = SeccompPolicy::default();
    let a = compile(&base).unwrap();
    let b = compile(&base.clone()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.hash.len(), 16);
    assert!(a.hash.chars().all(|c| c.is_ascii_hexdigit()));

    let variants = [
        SeccompPolicy {
            extra_deny: vec!["kcmp".into()],
            ..base.clone()
        },
        SeccompPolicy {
            allow_namespaces: true,
            ..base.clone()
        },
        SeccompPolicy {
            deny_action: DenyAction::KillProcess,
            ..base.clone()
        },
        allow_list(&["read", "write"]),
    ];
    let mut hashes = vec![a.hash.clone()];
    for policy in &variants {
        let compiled = compile(policy).unwrap();
        assert_eq!(compiled.hash, compile(policy).unwrap().hash);
        hashes.push(compiled.hash);
    }
    let unique: std::collections::BTreeSet<_> = hashes.iter().collect();
    assert_eq!(unique.len(), hashes.len(), "{hashes:?}");
    // Order of names does not matter; duplicates neither.
    let p1 = SeccompPolicy {
        extra_deny: vec!["kcmp".into(), "mbind".into()],
        ..base.clone()
    };
    let p2 = SeccompPolicy {
        extra_deny: vec!["mbind".into(), "kcmp".into(), "kcmp".into()],
        ..base
    };
    assert_eq!(compile(&p1).unwrap().hash, compile(&p2).unwrap().hash);
}

#[test]
fn hash_covers_every_instruction() {
    let compiled = compile(&SeccompPolicy::default()).unwrap();
    let mut tampered = compiled.clone();
    tampered.filters[2][5].k ^= 1;
    assert_ne!(program_hash(&tampered.filters), compiled.hash);
    let err = tampered.verify().unwrap_err().to_string();
    assert!(
        err.starts_with("invalid compiled seccomp program: hash "),
        "{err}"
    );
    // Moving an instruction between filters changes the hash too.
    let mut moved = compiled.clone();
    let i = moved.filters[1].remove(0);
    moved.filters[0].push(i);
    assert_ne!(program_hash(&moved.filters), compiled.hash);

    let empty = CompiledSeccomp {
        filters: vec![],
        hash: program_hash(&[]),
        summary: vec![],
    };
    assert_eq!(
        empty.verify().unwrap_err().to_string(),
        "invalid compiled seccomp program: no filters"
    );
}

#[test]
fn summary_lists_every_denied_call() {
    let compiled = compile(&SeccompPolicy::default()).unwrap();
    let arch = native();
    for name in DEFAULT_DENY.iter().chain(NAMESPACE_CALLS).chain(&[
        "ioctl",
        "personality",
        "clone",
        "setrlimit",
        "prlimit64",
    ]) {
        let Some(nr) = arch.nr(name) else {
            continue;
        };
        let line = format!("deny {name} ({nr}) with EPERM");
        assert!(
            compiled.summary.iter().any(|l| l.starts_with(&line)),
            "no summary line for {name}: {:#?}",
            compiled.summary
        );
    }
    assert!(compiled.summary[0].starts_with("abi: "));
    assert!(compiled.summary[1].starts_with("clone3 "));
    let ioctl = compiled
        .summary
        .iter()
        .find(|l| l.starts_with("deny ioctl "))
        .unwrap();
    assert!(ioctl.ends_with("when arg1 (low 32 bits) is TIOCSTI (0x5412) or TIOCLINUX (0x541c)"));
    let line = |prefix: &str| {
        compiled
            .summary
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap()
            .clone()
    };
    assert!(line("deny setrlimit ").ends_with("when arg0 (low 32 bits) is RLIMIT_CORE (4)"));
    assert!(line("deny prlimit64 ")
        .ends_with("when arg1 (low 32 bits) is RLIMIT_CORE (4) and arg2 (new limit) is not NULL"));
    for line in &compiled.summary {
        println!("{line}");
    }
    // With namespaces allowed, unshare and setns are gone from the summary too.
    let open = compile(&SeccompPolicy {
        allow_namespaces: true,
        ..SeccompPolicy::default()
    })
    .unwrap();
    assert!(!open
        .summary
        .iter()
        .any(|l| l.starts_with("deny unshare") || l.starts_with("deny clone ")));
}

#[test]
fn every_listed_call_is_denied_on_both_architectures() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for action in [DenyAction::Errno, DenyAction::KillProcess] {
            let policy = SeccompPolicy {
                deny_action: action,
                extra_deny: vec!["kcmp".into()],
                ..SeccompPolicy::default()
            };
            let compiled = compile_for(&policy, arch).unwrap();
            let want = match action {
                DenyAction::Errno => EPERM_RET,
                DenyAction::KillProcess => KILL_RET,
            };
            let mut denied = 0;
            for name in DEFAULT_DENY.iter().chain(NAMESPACE_CALLS).chain(&["kcmp"]) {
                if arch.nr(name).is_none() {
                    continue;
                }
                denied += 1;
                assert_eq!(eval(&compiled, arch, name, [0; 6]), want, "{arch:?} {name}");
                // Whatever the arguments.
                assert_eq!(
                    eval(&compiled, arch, name, [u64::MAX; 6]),
                    want,
                    "{arch:?} {name}"
                );
            }
            assert!(denied > 50, "{arch:?}: {denied}");
            // Everything else in the table is allowed (with harmless arguments).
            let listed: Vec<&str> = DEFAULT_DENY
                .iter()
                .chain(NAMESPACE_CALLS)
                .chain(&["kcmp", "clone3", "personality"])
                .copied()
                .collect();
            for (name, _) in arch.table() {
                if !listed.contains(name) {
                    assert_eq!(eval(&compiled, arch, name, [0; 6]), ALLOW_RET, "{name}");
                }
            }
        }
    }
}

#[test]
fn arguments_are_checked_on_their_low_32_bits() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let compiled = compile_for(&SeccompPolicy::default(), arch).unwrap();
        let ev = |name, args| eval(&compiled, arch, name, args);
        // ioctl: only terminal injection, whatever the upper half of cmd.
        assert_eq!(ev("ioctl", arg1(0x5412)), EPERM_RET);
        assert_eq!(ev("ioctl", arg1(0x541c)), EPERM_RET);
        assert_eq!(ev("ioctl", arg1(0xdead_beef_0000_5412)), EPERM_RET);
        assert_eq!(ev("ioctl", arg1(0x5401)), ALLOW_RET); // TCGETS
        assert_eq!(ev("ioctl", arg1(0x5413)), ALLOW_RET); // TIOCGWINSZ
        assert_eq!(ev("ioctl", arg0(0x5412)), ALLOW_RET); // fd, not cmd
                                                          // personality: only PER_LINUX and the query.
        assert_eq!(ev("personality", arg0(0)), ALLOW_RET);
        assert_eq!(ev("personality", arg0(0xffff_ffff)), ALLOW_RET);
        assert_eq!(ev("personality", arg0(0x1_0000_0000)), ALLOW_RET); // the kernel sees 0
        assert_eq!(ev("personality", arg0(0x0004_0000)), EPERM_RET); // ADDR_NO_RANDOMIZE
        assert_eq!(ev("personality", arg0(0x0000_0008)), EPERM_RET); // PER_LINUX32
        assert_eq!(ev("personality", arg0(0x0040_0000)), EPERM_RET); // READ_IMPLIES_EXEC
        assert_eq!(ev("personality", arg0(0xffff_fffe)), EPERM_RET);
        // clone: any CLONE_NEW* flag, alone or with others; plain forks and threads pass.
        for (flag_name, flag) in CLONE_NEW_FLAGS {
            let sigchld = libc::SIGCHLD as u64;
            assert_eq!(ev("clone", arg0(flag | sigchld)), EPERM_RET, "{flag_name}");
            assert_eq!(
                ev("clone", arg0(0xffff_ffff_0000_0000 | flag)),
                EPERM_RET,
                "{flag_name}"
            );
            assert_eq!(ev("clone", arg0(0x7fff_ffff & !0xff)), EPERM_RET);
        }
        let thread_flags = 0x003d_0f00; // glibc's pthread_create
        assert_eq!(ev("clone", arg0(thread_flags)), ALLOW_RET);
        assert_eq!(ev("clone", arg0(libc::SIGCHLD as u64)), ALLOW_RET); // fork
        assert_eq!(ev("clone", arg0(0x4111)), ALLOW_RET); // vfork|vm|SIGCHLD
        assert_eq!(ev("clone", arg0(0xffff_ffff_0000_0011)), ALLOW_RET);
        // Namespaces allowed: clone, unshare and setns pass.
        let open = compile_for(
            &SeccompPolicy {
                allow_namespaces: true,
                ..SeccompPolicy::default()
            },
            arch,
        )
        .unwrap();
        assert_eq!(eval(&open, arch, "clone", arg0(0x4000_0011)), ALLOW_RET);
        assert_eq!(eval(&open, arch, "unshare", arg0(0x1000_0000)), ALLOW_RET);
        assert_eq!(eval(&open, arch, "setns", [3, 0, 0, 0, 0, 0]), ALLOW_RET);
        assert_eq!(eval(&open, arch, "ioctl", arg1(0x5412)), EPERM_RET);
    }
}

#[test]
fn core_limit_may_be_read_but_never_set() {
    const CORE: u64 = 4;
    const NOFILE: u64 = 7;
    const PTR: u64 = 0x7ffd_1234_5678; // any non-NULL pointer
    let prlimit = |resource: u64, new: u64, old: u64| [0, resource, new, old, 0, 0];
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for (policy, want) in [
            (SeccompPolicy::default(), EPERM_RET),
            (
                SeccompPolicy {
                    deny_action: DenyAction::KillProcess,
                    ..SeccompPolicy::default()
                },
                KILL_RET,
            ),
            (
                SeccompPolicy {
                    allow_namespaces: true,
                    ..SeccompPolicy::default()
                },
                EPERM_RET,
            ),
            (
                allow_list(&["setrlimit", "prlimit64", "getrlimit"]),
                EPERM_RET,
            ),
        ] {
            let compiled = compile_for(&policy, arch).unwrap();
            let ev = |name, args| eval(&compiled, arch, name, args);
            let ctx = format!("{arch:?} {policy:?}");
            // Writes of RLIMIT_CORE, whatever the upper half of the resource.
            assert_eq!(ev("setrlimit", [CORE, PTR, 0, 0, 0, 0]), want, "{ctx}");
            assert_eq!(ev("setrlimit", [CORE, 0, 0, 0, 0, 0]), want, "{ctx}");
            assert_eq!(ev("setrlimit", arg0(0xffff_ffff_0000_0004)), want, "{ctx}");
            assert_eq!(ev("prlimit64", prlimit(CORE, PTR, 0)), want, "{ctx}");
            assert_eq!(ev("prlimit64", prlimit(CORE, PTR, PTR)), want, "{ctx}");
            assert_eq!(ev("prlimit64", [1234, CORE, PTR, 0, 0, 0]), want, "{ctx}"); // other pid
            assert_eq!(
                ev("prlimit64", prlimit(0x1_0000_0004, PTR, 0)),
                want,
                "{ctx}"
            );
            // A pointer is compared on all 64 bits: only NULL is a read.
            assert_eq!(
                ev("prlimit64", prlimit(CORE, 0x1_0000_0000, 0)),
                want,
                "{ctx}"
            );
            assert_eq!(
                ev("prlimit64", prlimit(CORE, 0xffff_ffff, 0)),
                want,
                "{ctx}"
            );
            // Reads of RLIMIT_CORE (glibc's getrlimit is prlimit64 with new == NULL).
            assert_eq!(ev("prlimit64", prlimit(CORE, 0, PTR)), ALLOW_RET, "{ctx}");
            assert_eq!(ev("prlimit64", prlimit(CORE, 0, 0)), ALLOW_RET, "{ctx}");
            assert_eq!(ev("getrlimit", [CORE, PTR, 0, 0, 0, 0]), ALLOW_RET, "{ctx}");
            // Every other resource, read or written.
            for resource in [
                0,
                1,
                2,
                3,
                5,
                6,
                NOFILE,
                8,
                15,
                0x1_0000_0000,
                0x4_0000_0000,
            ] {
                assert_eq!(
                    ev("setrlimit", [resource, PTR, 0, 0, 0, 0]),
                    ALLOW_RET,
                    "{ctx} {resource:#x}"
                );
                assert_eq!(
                    ev("prlimit64", prlimit(resource, PTR, PTR)),
                    ALLOW_RET,
                    "{ctx} {resource:#x}"
                );
            }
            // The resource is not the first argument of prlimit64.
            assert_eq!(ev("prlimit64", [CORE, NOFILE, PTR, 0, 0, 0]), ALLOW_RET);
        }
    }
    // An allow list without setrlimit/prlimit64 denies them whole; no argument-check filter
    // is needed for them.
    let plain = compile_for(&allow_list(&["getrlimit"]), native()).unwrap();
    assert_eq!(plain.filters.len(), 3);
    assert_eq!(
        eval(&plain, native(), "prlimit64", prlimit(CORE, 0, PTR)),
        EPERM_RET
    );
    assert_eq!(
        eval(&plain, native(), "getrlimit", [CORE, PTR, 0, 0, 0, 0]),
        ALLOW_RET
    );
    // extra_deny overrides the argument check: every call denied.
    let all = compile_for(
        &SeccompPolicy {
            extra_deny: vec!["prlimit64".into()],
            ..SeccompPolicy::default()
        },
        native(),
    )
    .unwrap();
    assert_eq!(
        eval(&all, native(), "prlimit64", prlimit(NOFILE, 0, PTR)),
        EPERM_RET
    );
}

#[test]
fn clone3_gets_enosys_in_every_mode() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        for action in [DenyAction::Errno, DenyAction::KillProcess] {
            for mut policy in [
                SeccompPolicy::default(),
                SeccompPolicy {
                    extra_deny: vec!["clone3".into()],
                    ..SeccompPolicy::default()
                },
                allow_list(&["read"]),
                allow_list(&["read", "clone3"]),
            ] {
                policy.deny_action = action;
                let compiled = compile_for(&policy, arch).unwrap();
                assert_eq!(
                    eval(&compiled, arch, "clone3", [0; 6]),
                    ENOSYS_RET,
                    "{arch:?} {policy:?}"
                );
            }
        }
    }
}

#[test]
fn foreign_abis_are_killed() {
    for policy in [SeccompPolicy::default(), allow_list(&["getpid"])] {
        let x86 = compile_for(&policy, Arch::X86_64).unwrap();
        let arm = compile_for(&policy, Arch::Aarch64).unwrap();
        let call = |arch, nr| Call {
            arch,
            nr,
            args: [0; 6],
        };
        // x32: native arch value, nr with bit 30 set; also -1.
        assert_eq!(
            run(&x86, &call(Arch::X86_64.audit_arch(), 0x4000_0027)),
            KILL_RET
        );
        assert_eq!(
            run(&x86, &call(Arch::X86_64.audit_arch(), 0x4000_0000 + 101)),
            KILL_RET
        );
        assert_eq!(
            run(&x86, &call(Arch::X86_64.audit_arch(), u32::MAX)),
            KILL_RET
        );
        // i386 via int 0x80, and every other architecture.
        assert_eq!(run(&x86, &call(AUDIT_ARCH_I386, 20)), KILL_RET);
        assert_eq!(run(&x86, &call(Arch::Aarch64.audit_arch(), 172)), KILL_RET);
        assert_eq!(run(&arm, &call(AUDIT_ARCH_ARM, 20)), KILL_RET);
        assert_eq!(run(&arm, &call(Arch::X86_64.audit_arch(), 39)), KILL_RET);
        // Native getpid passes.
        assert_eq!(eval(&x86, Arch::X86_64, "getpid", [0; 6]), ALLOW_RET);
        assert_eq!(eval(&arm, Arch::Aarch64, "getpid", [0; 6]), ALLOW_RET);
    }
}

#[test]
fn allow_list_allows_only_what_it_lists() {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let mut policy = allow_list(&["read", "write", "ioctl", "clone", "ptrace", "openat"]);
        policy.extra_deny = vec!["ptrace".into()];
        let compiled = compile_for(&policy, arch).unwrap();
        // Argument checks (ioctl, clone) come before the allow list, which is last.
        assert_eq!(compiled.filters.len(), 4);
        let ev = |name, args| eval(&compiled, arch, name, args);
        for name in ["read", "write", "openat"].iter().chain(ALWAYS_ALLOWED) {
            assert_eq!(ev(name, [0; 6]), ALLOW_RET, "{name}");
        }
        for name in [
            "getpid",
            "mount",
            "ptrace",
            "personality",
            "socket",
            "seccomp",
        ] {
            assert_eq!(ev(name, [0; 6]), EPERM_RET, "{name}");
        }
        assert_eq!(ev("ioctl", arg1(0x5401)), ALLOW_RET);
        assert_eq!(ev("ioctl", arg1(0x5412)), EPERM_RET);
        assert_eq!(ev("clone", arg0(libc::SIGCHLD as u64)), ALLOW_RET);
        assert_eq!(
            ev("clone", arg0(0x4000_0000 | libc::SIGCHLD as u64)),
            EPERM_RET
        );
        assert_eq!(ev("clone3", [0; 6]), ENOSYS_RET);
        let allow_line = compiled
            .summary
            .iter()
            .find(|l| l.starts_with("allow list: "))
            .unwrap();
        assert!(allow_line.contains("(5 calls)"), "{allow_line}");
        assert!(!allow_line.contains("ptrace"), "{allow_line}");

        // Killing instead of EPERM.
        policy.deny_action = DenyAction::KillProcess;
        let kill = compile_for(&policy, arch).unwrap();
        assert_eq!(eval(&kill, arch, "getpid", [0; 6]), KILL_RET);
        assert_eq!(eval(&kill, arch, "ioctl", arg1(0x5412)), KILL_RET);
        assert_eq!(eval(&kill, arch, "read", [0; 6]), ALLOW_RET);
        assert_eq!(eval(&kill, arch, "clone3", [0; 6]), ENOSYS_RET);

        // Without ioctl, clone or personality there is nothing to check by argument.
        let plain = compile_for(&allow_list(&["read"]), arch).unwrap();
        assert_eq!(plain.filters.len(), 3);
    }
}

#[test]
fn abi_filter_is_exactly_as_documented() {
    let x86 = abi_filter(Arch::X86_64);
    let want = [
        (0x20, 0, 0, 4),
        (0x15, 1, 0, 0xc000_003e),
        (0x06, 0, 0, 0x8000_0000),
        (0x20, 0, 0, 0),
        (0x45, 0, 1, 0x4000_0000),
        (0x06, 0, 0, 0x8000_0000),
        (0x06, 0, 0, 0x7fff_0000),
    ];
    let got: Vec<_> = x86.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
    assert_eq!(got, want);
    assert_eq!(abi_filter(Arch::Aarch64).len(), 4);
    assert_eq!(abi_filter(Arch::Aarch64)[1].k, 0xc000_00b7);
}

#[test]
fn tables_are_sorted_and_unique() {
    for (arch, table) in [
        (Arch::X86_64, tables::X86_64),
        (Arch::Aarch64, tables::AARCH64),
    ] {
        for pair in table.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{arch:?}: {pair:?} out of order");
        }
        let mut numbers: Vec<u32> = table.iter().map(|(_, nr)| *nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), table.len(), "{arch:?}: duplicate numbers");
        // Every number below the x32 bit; the shared block from 424 on is identical.
        assert!(numbers.iter().all(|nr| *nr < X32_SYSCALL_BIT));
        let other = arch.others().next().unwrap();
        for (name, nr) in table.iter().filter(|(_, nr)| *nr >= 424) {
            assert_eq!(other.nr(name), Some(*nr), "{name}");
        }
    }
    // Every name the module lists exists (on x86_64, which has them all): a typo in the deny
    // list would otherwise be skipped as "not on this architecture".
    for name in DEFAULT_DENY
        .iter()
        .chain(NAMESPACE_CALLS)
        .chain(ALWAYS_ALLOWED)
        .chain(&["clone", "clone3", "ioctl", "personality"])
    {
        assert!(Arch::X86_64.nr(name).is_some(), "{name}");
    }
    assert_eq!(Arch::X86_64.nr("clone3"), Some(435));
    assert_eq!(Arch::X86_64.nr("file_setattr"), Some(469));
    assert_eq!(Arch::Aarch64.nr("open_tree_attr"), Some(467));
    assert_eq!(Arch::Aarch64.nr("iopl"), None);
}

macro_rules! libc_numbers {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), libc::$name)),*]
    };
}

#[test]
fn tables_agree_with_libc() {
    let arch = native();
    let common = libc_numbers![
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_mount,
        SYS_umount2,
        SYS_move_mount,
        SYS_open_tree,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_mount_setattr,
        SYS_pivot_root,
        SYS_chroot,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_swapon,
        SYS_swapoff,
        SYS_reboot,
        SYS_acct,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_vhangup,
        SYS_syslog,
        SYS_sethostname,
        SYS_setdomainname,
        SYS_fanotify_init,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_lookup_dcookie,
        SYS_nfsservctl,
        SYS_unshare,
        SYS_setns,
        SYS_clone,
        SYS_clone3,
        SYS_ioctl,
        SYS_personality,
        SYS_exit,
        SYS_exit_group,
        SYS_rt_sigreturn,
        SYS_restart_syscall,
        SYS_execve,
        SYS_read,
        SYS_write,
        SYS_openat,
        SYS_getpid,
        SYS_getppid,
        SYS_seccomp,
        SYS_prctl,
        SYS_futex,
        SYS_mmap,
        SYS_munmap,
        SYS_landlock_create_ruleset,
        SYS_mseal,
        SYS_kcmp,
    ];
    #[cfg(target_arch = "x86_64")]
    let specific = libc_numbers![
        SYS_iopl,
        SYS_ioperm,
        SYS_modify_ldt,
        SYS_uselib,
        SYS_ustat,
        SYS_sysfs,
        SYS__sysctl,
        SYS_arch_prctl,
        SYS_fchmodat2,
        SYS_fork,
        SYS_vfork,
        SYS_open,
        SYS_stat,
    ];
    #[cfg(target_arch = "aarch64")]
    let specific = libc_numbers![SYS_newfstatat, SYS_fstat];
    for (constant, nr) in common.iter().chain(specific.iter()) {
        let name = constant.strip_prefix("SYS_").unwrap();
        assert_eq!(arch.nr(name), Some(*nr as u32), "{name}");
    }
}

#[test]
fn compiled_program_round_trips_through_the_control_socket_encoding() {
    let compiled = compile(&allow_list(&["read", "ioctl"])).unwrap();
    let frame = crate::wire::encode(&compiled).unwrap();
    let back: CompiledSeccomp = crate::wire::decode(&frame[4..]).unwrap();
    assert_eq!(back, compiled);
    back.verify().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Real-kernel tests. Each runs this test binary again on `child_entry` only, with CHILD_ENV
// naming the case, so the filter lands in that child and never in the test runner.
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "STOCKADE_SECCOMP_CHILD";

fn child_test_name() -> String {
    let path = module_path!();
    let (_crate, rest) = path.split_once("::").unwrap();
    format!("{rest}::child_entry")
}

/// Run `case` in a child; return its output.
fn run_child(case: &str) -> Output {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            &child_test_name(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, case)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("CHILD {case}")),
        "child {case} did not run the case: status {:?}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `PROBE label result` lines of a child that must have finished normally.
fn probes(case: &str) -> BTreeMap<String, String> {
    let out = run_child(case);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("DONE {case}")),
        "child {case} failed: {:?}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("PROBE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Assert the child `case` was killed by SIGSYS after arming its probe.
fn assert_killed_by_sigsys(case: &str) {
    let out = run_child(case);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("ARMED {case}")), "{text}");
    assert!(!text.contains(&format!("DONE {case}")), "{text}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "child {case}: {:?}\nstdout:\n{text}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn show(result: Result<libc::c_long, Errno>) -> String {
    match result {
        Ok(v) => format!("ok:{v}"),
        Err(e) => format!("err:{e:?}"),
    }
}

fn probe(label: &str, nr: libc::c_long, args: [libc::c_long; 6]) {
    println!("PROBE {label} {}", show(probe_syscall(nr, args)));
}

fn args(a: &[libc::c_long]) -> [libc::c_long; 6] {
    let mut out = [0; 6];
    out[..a.len()].copy_from_slice(a);
    out
}

fn install_in_child(policy: &SeccompPolicy) {
    let compiled = compile(policy).unwrap();
    nix::sys::prctl::set_no_new_privs().unwrap();
    install(&compiled).unwrap();
}

const CLONE_THREAD: libc::c_long = libc::CLONE_THREAD as libc::c_long;
const CORE: libc::c_long = libc::RLIMIT_CORE as libc::c_long;
const NOFILE: libc::c_long = libc::RLIMIT_NOFILE as libc::c_long;

/// Read and lower limits through libc, as a job would: RLIMIT_CORE to 0 (what re-enables a
/// pipe core dump), RLIMIT_NOFILE by one.
fn rlimit_probes() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let ok = |r: Result<(), Errno>| show(r.map(|()| 0)).replace("ok:0", "ok");
    println!(
        "PROBE libc-getrlimit-CORE {}",
        ok(getrlimit(Resource::RLIMIT_CORE).map(drop))
    );
    println!(
        "PROBE libc-setrlimit-CORE-lower {}",
        ok(setrlimit(Resource::RLIMIT_CORE, 0, 0))
    );
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let lower = hard - 1;
    println!(
        "PROBE libc-setrlimit-NOFILE-lower {}",
        ok(setrlimit(Resource::RLIMIT_NOFILE, soft.min(lower), lower))
    );
    println!(
        "PROBE libc-getrlimit-NOFILE-lowered {}",
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((_, h)) if h == lower => "ok".to_string(),
            other => format!("{other:?}"),
        }
    );
}

/// Probes whose kernel answer (no filter) is known and is not EPERM: (label, call, arguments).
/// `fd` is an open /dev/null. Pointers are null; `clone` always carries CLONE_THREAD without
/// CLONE_SIGHAND, which the kernel rejects before creating anything.
fn argument_probes(fd: libc::c_long) -> Vec<(String, libc::c_long, [libc::c_long; 6])> {
    let mut list = vec![
        (
            "ptrace-bogus-request".to_string(),
            libc::SYS_ptrace,
            args(&[0x4242]),
        ),
        (
            "io_uring_setup".into(),
            libc::SYS_io_uring_setup,
            args(&[1]),
        ),
        ("bpf-bad-cmd".into(), libc::SYS_bpf, args(&[9999])),
        (
            "perf_event_open".into(),
            libc::SYS_perf_event_open,
            args(&[0, 0, -1, -1]),
        ),
        ("keyctl-bad-op".into(), libc::SYS_keyctl, args(&[9999])),
        ("add_key".into(), libc::SYS_add_key, args(&[])),
        (
            "userfaultfd-bad-flags".into(),
            libc::SYS_userfaultfd,
            args(&[0x101]),
        ),
        ("mount".into(), libc::SYS_mount, args(&[])),
        ("ioctl-TIOCSTI".into(), libc::SYS_ioctl, args(&[fd, 0x5412])),
        (
            "ioctl-TIOCSTI-high-bits".into(),
            libc::SYS_ioctl,
            args(&[fd, 0x7_0000_5412]),
        ),
        (
            "ioctl-TIOCLINUX".into(),
            libc::SYS_ioctl,
            args(&[fd, 0x541c]),
        ),
        ("ioctl-TCGETS".into(), libc::SYS_ioctl, args(&[fd, 0x5401])),
        (
            "personality-query".into(),
            libc::SYS_personality,
            args(&[0xffff_ffff]),
        ),
        (
            "personality-PER_LINUX".into(),
            libc::SYS_personality,
            args(&[0]),
        ),
        (
            "personality-high-bits".into(),
            libc::SYS_personality,
            args(&[0x1_0000_0000]),
        ),
        (
            "personality-ADDR_NO_RANDOMIZE".into(),
            libc::SYS_personality,
            args(&[0x0004_0000]),
        ),
        (
            "unshare-bad-flags".into(),
            libc::SYS_unshare,
            args(&[0x1000_0001]),
        ),
        ("setns".into(), libc::SYS_setns, args(&[-1])),
        (
            "clone-thread-without-sighand".into(),
            libc::SYS_clone,
            args(&[CLONE_THREAD]),
        ),
        ("clone3".into(), libc::SYS_clone3, args(&[])),
        // RLIMIT_CORE (4): written through a NULL or page-zero pointer, so the kernel answers
        // EFAULT without the filter and no limit changes either way.
        (
            "setrlimit-CORE".into(),
            libc::SYS_setrlimit,
            args(&[CORE, 0]),
        ),
        (
            "setrlimit-CORE-high-bits".into(),
            libc::SYS_setrlimit,
            args(&[0x1_0000_0000 | CORE, 0]),
        ),
        (
            "setrlimit-NOFILE".into(),
            libc::SYS_setrlimit,
            args(&[NOFILE, 0]),
        ),
        (
            "prlimit64-CORE-write".into(),
            libc::SYS_prlimit64,
            args(&[0, CORE, 1, 0]),
        ),
        (
            "prlimit64-CORE-write-high-bits".into(),
            libc::SYS_prlimit64,
            args(&[0, 0x1_0000_0000 | CORE, 1, 0]),
        ),
        (
            "prlimit64-CORE-read".into(),
            libc::SYS_prlimit64,
            args(&[0, CORE, 0, 0]),
        ),
        (
            "prlimit64-CORE-read-page-zero".into(),
            libc::SYS_prlimit64,
            args(&[0, CORE, 0, 1]),
        ),
        (
            "prlimit64-NOFILE-write".into(),
            libc::SYS_prlimit64,
            args(&[0, NOFILE, 1, 0]),
        ),
    ];
    for (name, flag) in CLONE_NEW_FLAGS {
        list.push((
            format!("clone-{name}"),
            libc::SYS_clone,
            args(&[CLONE_THREAD | *flag as libc::c_long]),
        ));
    }
    list
}

/// (label, with the default filter, without).
fn expected_argument_probes() -> Vec<(String, String, String)> {
    let mut want: Vec<(String, String, String)> = [
        ("ptrace-bogus-request", "err:EPERM", "err:ESRCH"),
        ("io_uring_setup", "err:EPERM", "err:EFAULT"),
        ("bpf-bad-cmd", "err:EPERM", "err:EINVAL"),
        ("perf_event_open", "err:EPERM", "err:EFAULT"),
        ("keyctl-bad-op", "err:EPERM", "err:EOPNOTSUPP"),
        ("add_key", "err:EPERM", "err:EFAULT"),
        ("userfaultfd-bad-flags", "err:EPERM", "err:EINVAL"),
        ("mount", "err:EPERM", "err:EFAULT"),
        ("ioctl-TIOCSTI", "err:EPERM", "err:ENOTTY"),
        ("ioctl-TIOCSTI-high-bits", "err:EPERM", "err:ENOTTY"),
        ("ioctl-TIOCLINUX", "err:EPERM", "err:ENOTTY"),
        ("ioctl-TCGETS", "err:ENOTTY", "err:ENOTTY"),
        ("personality-query", "ok:0", "ok:0"),
        ("personality-PER_LINUX", "ok:0", "ok:0"),
        ("personality-high-bits", "ok:0", "ok:0"),
        ("personality-ADDR_NO_RANDOMIZE", "err:EPERM", "ok:0"),
        ("unshare-bad-flags", "err:EPERM", "err:EINVAL"),
        ("setns", "err:EPERM", "err:EBADF"),
        ("clone-thread-without-sighand", "err:EINVAL", "err:EINVAL"),
        ("clone3", "err:ENOSYS", "err:EINVAL"),
        ("setrlimit-CORE", "err:EPERM", "err:EFAULT"),
        ("setrlimit-CORE-high-bits", "err:EPERM", "err:EFAULT"),
        ("setrlimit-NOFILE", "err:EFAULT", "err:EFAULT"),
        ("prlimit64-CORE-write", "err:EPERM", "err:EFAULT"),
        ("prlimit64-CORE-write-high-bits", "err:EPERM", "err:EFAULT"),
        ("prlimit64-CORE-read", "ok:0", "ok:0"),
        ("prlimit64-CORE-read-page-zero", "err:EFAULT", "err:EFAULT"),
        ("prlimit64-NOFILE-write", "err:EFAULT", "err:EFAULT"),
        // Through libc (glibc: prlimit64 for both), with real memory.
        ("libc-getrlimit-CORE", "ok", "ok"),
        ("libc-setrlimit-CORE-lower", "err:EPERM", "ok"),
        ("libc-setrlimit-NOFILE-lower", "ok", "ok"),
        ("libc-getrlimit-NOFILE-lowered", "ok", "ok"),
    ]
    .iter()
    .map(|(l, f, u)| (l.to_string(), f.to_string(), u.to_string()))
    .collect();
    for (name, _) in CLONE_NEW_FLAGS {
        want.push((
            format!("clone-{name}"),
            "err:EPERM".into(),
            "err:EINVAL".into(),
        ));
    }
    want
}

/// Arguments for probing each default-denied call under the filter: harmless even if the
/// filter let the call through (invalid flags, lengths or descriptors, null or page-zero
/// pointers), so a broken filter cannot change the host.
fn harmless_args(name: &str) -> Option<[libc::c_long; 6]> {
    Some(match name {
        // Would hang up the terminal of whoever runs the tests: only the interpreter covers it.
        "vhangup" => return None,
        "ptrace" => args(&[0x4242]), // not PTRACE_TRACEME
        "sethostname" | "setdomainname" => args(&[0, 65]), // longer than __NEW_UTS_LEN
        "acct" => args(&[1]),        // EFAULT, never "accounting off"
        "kexec_load" => args(&[0, 0, 0, 0x100]), // unknown flag, never "unload"
        "kexec_file_load" => args(&[-1, -1, 0, 0, 0x8000_0000]),
        "fanotify_init" => args(&[0x8000_0000]),
        "userfaultfd" => args(&[0x101]),
        "keyctl" | "bpf" => args(&[9999]),
        "unshare" => args(&[0x1]),
        "setns" | "finit_module" | "quotactl_fd" | "fsconfig" | "fsmount" | "io_uring_enter"
        | "io_uring_register" => args(&[-1]),
        _ => args(&[]),
    })
}

#[test]
fn child_entry() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful when a real-kernel test runs this binary as its child.
    };
    println!("CHILD {case}");
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&devnull) as libc::c_long;
    match case.as_str() {
        "deny" | "deny-unfiltered" => {
            let filtered = case == "deny";
            if filtered {
                install_in_child(&SeccompPolicy::default());
            }
            for (label, nr, a) in argument_probes(fd) {
                probe(&label, nr, a);
            }
            rlimit_probes();
            if filtered {
                probe("ptrace-TRACEME", libc::SYS_ptrace, args(&[0]));
                println!(
                    "PROBE unshare-CLONE_NEWUSER {}",
                    show(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map(|()| 0))
                );
                let arch = native();
                for name in DEFAULT_DENY.iter().chain(NAMESPACE_CALLS) {
                    if let (Some(nr), Some(a)) = (arch.nr(name), harmless_args(name)) {
                        probe(&format!("denied-{name}"), nr.into(), a);
                    }
                }
            }
            // Threads: glibc tries clone3, gets ENOSYS, falls back to clone.
            let thread = std::thread::spawn(|| 7).join();
            println!(
                "PROBE thread {}",
                if matches!(thread, Ok(7)) {
                    "ok"
                } else {
                    "failed"
                }
            );
            // fork+exec (posix_spawn: clone3, then clone(CLONE_VM|CLONE_VFORK)).
            let status = Command::new("true").status().map(|s| s.success());
            println!("PROBE spawn-true {status:?}");
            // The filter is inherited across fork and exec: unshare(1) asks for a network
            // namespace through unshare(2).
            match Command::new("unshare").args(["-n", "true"]).output() {
                Ok(out) => println!(
                    "PROBE unshare-cmd exit={:?},eperm={}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).contains("Operation not permitted")
                ),
                Err(e) => println!("PROBE unshare-cmd missing:{e}"),
            }
        }
        "allow" => {
            // Everything this table knows except getppid (namespace calls stay denied).
            let allow: Vec<&str> = native()
                .table()
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| !["getppid", "unshare", "setns"].contains(n))
                .collect();
            install_in_child(&allow_list(&allow));
            probe("getppid", libc::SYS_getppid, args(&[]));
            probe("getpid-is-positive", libc::SYS_getpid, args(&[]));
            probe("ptrace-bogus-request", libc::SYS_ptrace, args(&[0x4242]));
            probe("ioctl-TIOCSTI", libc::SYS_ioctl, args(&[fd, 0x5412]));
            probe("clone3", libc::SYS_clone3, args(&[]));
            probe(
                "prlimit64-CORE-write",
                libc::SYS_prlimit64,
                args(&[0, CORE, 1, 0]),
            );
            probe(
                "prlimit64-CORE-read",
                libc::SYS_prlimit64,
                args(&[0, CORE, 0, 0]),
            );
            probe("setrlimit-CORE", libc::SYS_setrlimit, args(&[CORE, 0]));
            rlimit_probes();
            probe(
                "clone-CLONE_NEWNET",
                libc::SYS_clone,
                args(&[CLONE_THREAD | 0x4000_0000]),
            );
            let thread = std::thread::spawn(|| 7).join();
            println!(
                "PROBE thread {}",
                if matches!(thread, Ok(7)) {
                    "ok"
                } else {
                    "failed"
                }
            );
            let status = Command::new("true").status().map(|s| s.success());
            println!("PROBE spawn-true {status:?}");
        }
        "no-nnp" => {
            if nix::sys::prctl::get_no_new_privs().unwrap() {
                println!("PROBE install inherited-no-new-privs");
                println!("DONE {case}");
                return;
            }
            let compiled = compile(&SeccompPolicy::default()).unwrap();
            let result = install(&compiled);
            println!(
                "PROBE install {}",
                match result {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string().replace(' ', "_"),
                }
            );
        }
        "kill" => {
            install_in_child(&SeccompPolicy {
                deny_action: DenyAction::KillProcess,
                ..SeccompPolicy::default()
            });
            println!("ARMED {case}");
            probe("ptrace", libc::SYS_ptrace, args(&[0x4242]));
        }
        #[cfg(target_arch = "x86_64")]
        "x32" | "x32-unfiltered" => {
            if case == "x32" {
                install_in_child(&SeccompPolicy::default());
            }
            println!("ARMED {case}");
            probe("x32-getpid", 0x4000_0000 | libc::SYS_getpid, args(&[]));
        }
        #[cfg(target_arch = "x86_64")]
        "i386" | "i386-unfiltered" => {
            if case == "i386" {
                install_in_child(&SeccompPolicy::default());
            }
            println!("ARMED {case}");
            let pid = crate::sys::i386_getpid();
            println!("PROBE i386-getpid {}", pid == i64::from(std::process::id()));
        }
        other => panic!("unknown child case {other}"),
    }
    println!("DONE {case}");
}

#[test]
fn kernel_default_filter_denies_with_the_right_errno() {
    let filtered = probes("deny");
    let unfiltered = probes("deny-unfiltered");
    for (label, with, without) in expected_argument_probes() {
        assert_eq!(
            filtered.get(&label),
            Some(&with),
            "{label} under the filter"
        );
        assert_eq!(
            unfiltered.get(&label),
            Some(&without),
            "{label} without a filter"
        );
    }
    assert_eq!(filtered["ptrace-TRACEME"], "err:EPERM");
    assert_eq!(filtered["unshare-CLONE_NEWUSER"], "err:EPERM");
    let arch = native();
    let mut probed = 0;
    for name in DEFAULT_DENY.iter().chain(NAMESPACE_CALLS) {
        if arch.nr(name).is_some() && harmless_args(name).is_some() {
            probed += 1;
            assert_eq!(
                filtered.get(&format!("denied-{name}")).map(String::as_str),
                Some("err:EPERM"),
                "{name}"
            );
        }
    }
    assert!(probed > 50, "{probed}");
    for case in [&filtered, &unfiltered] {
        assert_eq!(case["thread"], "ok");
        assert_eq!(case["spawn-true"], "Ok(true)");
    }
    match filtered["unshare-cmd"].as_str() {
        s if s.starts_with("missing:") => eprintln!("SKIP unshare(1) probe: {s}"),
        s => assert_eq!(s, "exit=Some(1),eperm=true"),
    }
    if nix::unistd::geteuid().is_root() {
        // Control: without the filter root may create a network namespace.
        assert_eq!(unfiltered["unshare-cmd"], "exit=Some(0),eperm=false");
    }
}

#[test]
fn kernel_kill_action_kills_with_sigsys() {
    assert_killed_by_sigsys("kill");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn kernel_x32_calls_are_killed() {
    assert_killed_by_sigsys("x32");
    // Control: without the filter the same call returns (a pid with x32 support, else ENOSYS).
    let out = probes("x32-unfiltered");
    let result = &out["x32-getpid"];
    assert!(
        result.starts_with("ok:") || result == "err:ENOSYS",
        "{result}"
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn kernel_i386_calls_are_killed() {
    let control = run_child("i386-unfiltered");
    if control.status.signal() == Some(libc::SIGSEGV) {
        // int 0x80 faults before any filter runs when IA32 emulation is off.
        eprintln!("SKIP kernel_i386_calls_are_killed: this kernel has no IA32 emulation");
        return;
    }
    let text = String::from_utf8_lossy(&control.stdout);
    assert!(
        control.status.success() && text.contains("PROBE i386-getpid true"),
        "{:?}\n{text}",
        control.status
    );
    assert_killed_by_sigsys("i386");
}

#[test]
fn kernel_allow_list_denies_the_rest() {
    let got = probes("allow");
    assert_eq!(got["getppid"], "err:EPERM");
    assert!(got["getpid-is-positive"].starts_with("ok:"));
    assert_eq!(got["ptrace-bogus-request"], "err:ESRCH"); // allowed by this list
    assert_eq!(got["ioctl-TIOCSTI"], "err:EPERM");
    assert_eq!(got["clone3"], "err:ENOSYS");
    assert_eq!(got["prlimit64-CORE-write"], "err:EPERM");
    assert_eq!(got["prlimit64-CORE-read"], "ok:0");
    assert_eq!(got["setrlimit-CORE"], "err:EPERM");
    assert_eq!(got["libc-getrlimit-CORE"], "ok");
    assert_eq!(got["libc-setrlimit-CORE-lower"], "err:EPERM");
    assert_eq!(got["libc-setrlimit-NOFILE-lower"], "ok");
    assert_eq!(got["clone-CLONE_NEWNET"], "err:EPERM");
    assert_eq!(got["thread"], "ok");
    assert_eq!(got["spawn-true"], "Ok(true)");
}

#[test]
fn kernel_install_requires_no_new_privs() {
    let got = probes("no-nnp");
    if got["install"] == "inherited-no-new-privs" {
        eprintln!("SKIP kernel_install_requires_no_new_privs: the test runs with no_new_privs set");
        return;
    }
    assert_eq!(
        got["install"],
        "no_new_privs_is_not_set:_seccomp_must_be_installed_after_PR_SET_NO_NEW_PRIVS"
    );
}
