//! Landlock tests. Pure ones check the rights mapping and the required-feature check for every
//! ABI. Enforcement tests re-run this test binary as a child (Landlock cannot be undone), which
//! applies a plan, attempts operations and prints the errno of each; the parent asserts them and
//! compares with a control child that runs the same operations without Landlock.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const CHILD_ENV: &str = "STOCKADE_LANDLOCK_CHILD";
const PLAN_ENV: &str = "STOCKADE_LANDLOCK_PLAN";
const OPS_ENV: &str = "STOCKADE_LANDLOCK_OPS";
const MARK: &str = "@@landlock ";
const OK: &str = "ok";

// ---------------------------------------------------------------------------------------------
// Pure tests

fn plan(fs: Vec<FsRule>) -> LandlockPlan {
    LandlockPlan {
        fs,
        tcp_connect: vec![],
        tcp_bind: vec![],
        scope_signals: false,
        scope_abstract_unix: false,
        required: true,
    }
}

fn rule(path: impl Into<PathBuf>, access: FsAccess) -> FsRule {
    FsRule {
        path: path.into(),
        access,
    }
}

const ALL_ABIS: [ABI; 10] = [
    ABI::V1,
    ABI::V2,
    ABI::V3,
    ABI::V4,
    ABI::V5,
    ABI::V6,
    ABI::V7,
    ABI::V8,
    ABI::V9,
    ABI::V10,
];

#[test]
fn handled_rights_cover_every_right_the_kernel_knows() {
    use AccessFs::*;
    let v5 = AccessFs::from_all(ABI::V5);
    // Spelled out once, so a crate upgrade that changes a set shows up here.
    let expected_v5: BitFlags<AccessFs> = Execute
        | WriteFile
        | ReadFile
        | ReadDir
        | RemoveDir
        | RemoveFile
        | MakeChar
        | MakeDir
        | MakeReg
        | MakeSock
        | MakeFifo
        | MakeBlock
        | MakeSym
        | Refer
        | Truncate
        | IoctlDev;
    assert_eq!(v5, expected_v5);
    for abi in ALL_ABIS {
        let handled = handled_fs(abi);
        // Never less than the target set (on older kernels the crate drops what they lack, or
        // refuses with HardRequirement), and always every right the kernel knows.
        assert!(handled.contains(v5), "{abi:?}");
        assert!(handled.contains(AccessFs::from_all(abi)), "{abi:?}");
        assert_eq!(handled.contains(ResolveUnix), abi >= ABI::V9, "{abi:?}");
    }
}

#[test]
fn rule_rights_per_access_and_object_type() {
    use AccessFs::*;
    let abi = ABI::V7;
    let handled = handled_fs(abi);
    let rights = |access, is_dir| rule_rights(access, is_dir, handled, abi);
    assert_eq!(
        rights(FsAccess::ReadExec, true),
        Execute | ReadFile | ReadDir
    );
    assert_eq!(rights(FsAccess::ReadExec, false), Execute | ReadFile);
    assert_eq!(rights(FsAccess::ReadOnly, true), ReadFile | ReadDir);
    assert_eq!(rights(FsAccess::ReadOnly, false), BitFlags::from(ReadFile));
    assert_eq!(rights(FsAccess::ReadWrite, true), handled);
    assert_eq!(
        rights(FsAccess::ReadWrite, false),
        ReadFile | WriteFile | Execute | Truncate | IoctlDev
    );

    // A kernel with resolve_unix: only ReadWrite grants it, on directories and on files.
    let abi = ABI::V9;
    let handled = handled_fs(abi);
    for is_dir in [true, false] {
        assert!(rule_rights(FsAccess::ReadWrite, is_dir, handled, abi).contains(ResolveUnix));
        assert!(!rule_rights(FsAccess::ReadOnly, is_dir, handled, abi).contains(ResolveUnix));
        assert!(!rule_rights(FsAccess::ReadExec, is_dir, handled, abi).contains(ResolveUnix));
    }

    // Every ABI: file rules carry only file rights, and every rule only handled rights.
    for abi in ALL_ABIS {
        let handled = handled_fs(abi);
        for access in [FsAccess::ReadExec, FsAccess::ReadOnly, FsAccess::ReadWrite] {
            let file = rule_rights(access, false, handled, abi);
            assert!(!file.is_empty());
            assert!(
                AccessFs::from_file(ABI::V10).contains(file),
                "{abi:?} {access}"
            );
            assert!(handled.contains(rule_rights(access, true, handled, abi)));
        }
    }
}

#[test]
fn missing_features_per_kernel_abi() {
    let mut p = plan(vec![]);
    let names = |p: &LandlockPlan, abi| {
        missing_features(p, abi)
            .iter()
            .map(|f| f.feature)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&p, 1),
        [
            "truncate restriction",
            "tcp bind/connect rules",
            "ioctl_dev restriction"
        ]
    );
    assert_eq!(names(&p, 2), names(&p, 1));
    assert_eq!(
        names(&p, 3),
        ["tcp bind/connect rules", "ioctl_dev restriction"]
    );
    assert_eq!(names(&p, 4), ["ioctl_dev restriction"]);
    assert!(names(&p, 5).is_empty());
    p.scope_signals = true;
    assert_eq!(names(&p, 5), ["signal scoping"]);
    p.scope_abstract_unix = true;
    assert_eq!(
        names(&p, 5),
        ["signal scoping", "abstract unix socket scoping"]
    );
    for abi in [6, 7, 10, 99] {
        assert!(names(&p, abi).is_empty(), "abi {abi}");
    }
}

#[test]
fn error_messages_name_the_path_right_and_abi() {
    let mut p = plan(vec![]);
    p.scope_signals = true;
    let err = LandlockError::Unsupported {
        kernel_abi: 4,
        missing: missing_features(&p, 4),
    };
    assert_eq!(
        err.to_string(),
        "landlock is required but abi 4 of the running kernel cannot enforce ioctl_dev \
         restriction (needs abi 5), signal scoping (needs abi 6)"
    );
    assert_eq!(err.errno(), 0);

    let err = LandlockError::Path {
        path: "/nope".into(),
        access: FsAccess::ReadOnly,
        call: "open(O_PATH)",
        errno: Errno::ENOENT,
    };
    assert_eq!(
        err.to_string(),
        "landlock read_only rule on /nope: open(O_PATH): no such file or directory"
    );
    assert_eq!(err.errno(), libc::ENOENT);

    let err = LandlockError::NotEnforced {
        status: "partially_enforced",
        kernel_abi: 3,
    };
    assert_eq!(
        err.to_string(),
        "landlock is required but the ruleset was partially_enforced (kernel abi 3)"
    );
}

#[test]
fn plan_and_report_round_trip_through_the_wire_format() {
    let mut p = plan(vec![
        rule("/usr", FsAccess::ReadExec),
        rule("/work", FsAccess::ReadWrite),
    ]);
    p.tcp_connect = vec![443];
    let frame = crate::wire::encode(&p).unwrap();
    assert_eq!(crate::wire::decode::<LandlockPlan>(&frame[4..]).unwrap(), p);

    let report = LandlockReport {
        abi: 7,
        fs: Status::Enforced,
        net: Status::Enforced,
        scopes: Status::NotRequested,
        status: "fully_enforced".into(),
        missing_paths: vec!["/opt/tool".into()],
    };
    let frame = crate::wire::encode(&report).unwrap();
    assert_eq!(
        crate::wire::decode::<LandlockReport>(&frame[4..]).unwrap(),
        report
    );
    let applied = report.applied();
    let names: Vec<_> = applied.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["landlock.fs", "landlock.net", "landlock.scopes"]);
    assert_eq!(
        applied[0].detail,
        "abi 7, ruleset fully_enforced, skipped missing paths: /opt/tool"
    );
    assert_eq!(applied[2].status, Status::NotRequested);
}

#[test]
fn kernel_abi_agrees_with_the_unavailable_reason() {
    let abi = kernel_abi();
    assert_eq!(abi == 0, kernel_unavailable_reason().is_some(), "abi {abi}");
}

// ---------------------------------------------------------------------------------------------
// The child side

/// One operation a child attempts after applying its plan.
#[derive(Debug, Clone)]
enum Op {
    Read(PathBuf),
    List(PathBuf),
    /// Create a new file and write to it.
    Create(PathBuf),
    /// Open an existing file for writing, without truncating it.
    OpenWrite(PathBuf),
    /// `truncate(path, 0)`.
    Truncate(PathBuf),
    Mkdir(PathBuf),
    Remove(PathBuf),
    Rename(PathBuf, PathBuf),
    Link(PathBuf, PathBuf),
    /// Run a program; ok when it exits 0.
    Exec(PathBuf),
    Connect(u16),
    Bind(u16),
    ConnectAbstract(String),
    /// `kill(pid, 0)`.
    Signal0(i32),
    /// `kill(getpid(), 0)`.
    SignalSelf,
}

impl Op {
    fn encode(&self) -> String {
        let p = |p: &Path| p.to_str().expect("utf-8 test path").to_owned();
        let fields: Vec<String> = match self {
            Op::Read(a) => vec!["read".into(), p(a)],
            Op::List(a) => vec!["list".into(), p(a)],
            Op::Create(a) => vec!["create".into(), p(a)],
            Op::OpenWrite(a) => vec!["open_write".into(), p(a)],
            Op::Truncate(a) => vec!["truncate".into(), p(a)],
            Op::Mkdir(a) => vec!["mkdir".into(), p(a)],
            Op::Remove(a) => vec!["remove".into(), p(a)],
            Op::Rename(a, b) => vec!["rename".into(), p(a), p(b)],
            Op::Link(a, b) => vec!["link".into(), p(a), p(b)],
            Op::Exec(a) => vec!["exec".into(), p(a)],
            Op::Connect(port) => vec!["connect".into(), port.to_string()],
            Op::Bind(port) => vec!["bind".into(), port.to_string()],
            Op::ConnectAbstract(name) => vec!["connect_abstract".into(), name.clone()],
            Op::Signal0(pid) => vec!["signal0".into(), pid.to_string()],
            Op::SignalSelf => vec!["signal_self".into()],
        };
        fields.join("\t")
    }

    fn decode(line: &str) -> Op {
        let f: Vec<&str> = line.split('\t').collect();
        let path = |i: usize| PathBuf::from(f[i]);
        let num = |i: usize| f[i].parse::<i64>().expect("number");
        match f[0] {
            "read" => Op::Read(path(1)),
            "list" => Op::List(path(1)),
            "create" => Op::Create(path(1)),
            "open_write" => Op::OpenWrite(path(1)),
            "truncate" => Op::Truncate(path(1)),
            "mkdir" => Op::Mkdir(path(1)),
            "remove" => Op::Remove(path(1)),
            "rename" => Op::Rename(path(1), path(2)),
            "link" => Op::Link(path(1), path(2)),
            "exec" => Op::Exec(path(1)),
            "connect" => Op::Connect(num(1) as u16),
            "bind" => Op::Bind(num(1) as u16),
            "connect_abstract" => Op::ConnectAbstract(f[1].to_owned()),
            "signal0" => Op::Signal0(num(1) as i32),
            "signal_self" => Op::SignalSelf,
            other => panic!("unknown op {other}"),
        }
    }

    /// `"ok"`, or the errno name (`"EACCES"`), or how a program failed.
    fn run(&self) -> String {
        use std::net::{TcpListener, TcpStream};
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixStream};

        fn io(r: std::io::Result<()>) -> String {
            match r {
                Ok(()) => OK.into(),
                Err(e) => match e.raw_os_error() {
                    Some(code) => format!("{:?}", Errno::from_raw(code)),
                    None => e.to_string(),
                },
            }
        }
        fn nix(r: nix::Result<()>) -> String {
            match r {
                Ok(()) => OK.into(),
                Err(e) => format!("{e:?}"),
            }
        }
        match self {
            Op::Read(p) => io(fs::read(p).map(drop)),
            Op::List(p) => io(fs::read_dir(p).and_then(|mut d| d.try_for_each(|e| e.map(drop)))),
            Op::Create(p) => io(fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .and_then(|mut f| f.write_all(b"new"))),
            Op::OpenWrite(p) => io(fs::OpenOptions::new().write(true).open(p).map(drop)),
            Op::Truncate(p) => nix(nix::unistd::truncate(p, 0)),
            Op::Mkdir(p) => io(fs::create_dir(p)),
            Op::Remove(p) => io(fs::remove_file(p)),
            Op::Rename(a, b) => io(fs::rename(a, b)),
            Op::Link(a, b) => io(fs::hard_link(a, b)),
            Op::Exec(p) => match Command::new(p).status() {
                Ok(s) if s.success() => OK.into(),
                Ok(s) => format!("exit {s}"),
                Err(e) => io(Err(e)),
            },
            Op::Connect(port) => io(TcpStream::connect(("127.0.0.1", *port)).map(drop)),
            Op::Bind(port) => io(TcpListener::bind(("127.0.0.1", *port)).map(drop)),
            Op::ConnectAbstract(name) => io(SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| UnixStream::connect_addr(&addr))
                .map(drop)),
            Op::Signal0(pid) => nix(nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                None,
            )),
            Op::SignalSelf => nix(nix::sys::signal::kill(nix::unistd::getpid(), None)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn encode<T: Serialize>(value: &T) -> String {
    hex(&bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encode"))
}

fn decode<T: serde::de::DeserializeOwned>(s: &str) -> T {
    bincode::serde::decode_from_slice(&unhex(s), bincode::config::standard())
        .expect("decode")
        .0
}

/// The libtest name of one of this module's tests, e.g. `landlock::tests::fs_rights`.
fn test_path(test: &str) -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::{test}")
}

/// First line of every enforcement test: in the child it applies the plan, runs the operations,
/// prints their results and exits; in the parent it returns.
fn child_side(test: &str) {
    match std::env::var(CHILD_ENV) {
        Ok(name) if name == test => {}
        Ok(name) => panic!("child for {name} ran test {test}"),
        Err(_) => return,
    }
    let plan: Option<LandlockPlan> = decode(&std::env::var(PLAN_ENV).expect(PLAN_ENV));
    let ops: Vec<Op> = std::env::var(OPS_ENV)
        .expect(OPS_ENV)
        .lines()
        .filter(|l| !l.is_empty())
        .map(Op::decode)
        .collect();
    // As in the exec helper: no_new_privs comes before Landlock.
    nix::sys::prctl::set_no_new_privs().expect("set no_new_privs");
    let mut out = std::io::stdout().lock();
    match plan.map(|p| apply(&p)) {
        None => writeln!(out, "{MARK}apply none").unwrap(),
        Some(Ok(report)) => writeln!(out, "{MARK}apply ok {}", encode(&report)).unwrap(),
        Some(Err(e)) => {
            writeln!(out, "{MARK}apply err {} {e}", e.errno()).unwrap();
            out.flush().unwrap();
            std::process::exit(0);
        }
    }
    for (i, op) in ops.iter().enumerate() {
        writeln!(out, "{MARK}op {i} {}", op.run()).unwrap();
    }
    out.flush().unwrap();
    std::process::exit(0);
}

/// What a child reported.
#[derive(Debug)]
struct Outcome {
    /// `None` for a control child; else the report, or (errno, message).
    apply: Option<Result<LandlockReport, (i32, String)>>,
    /// One result per operation, in order.
    ops: Vec<String>,
}

impl Outcome {
    fn report(&self) -> &LandlockReport {
        match &self.apply {
            Some(Ok(report)) => report,
            other => panic!("expected landlock to apply, got {other:?}"),
        }
    }
}

/// Run `test`'s child side with `plan` (`None`: a control without Landlock) and `ops`.
fn run_child(test: &str, plan: Option<&LandlockPlan>, ops: &[Op]) -> Outcome {
    let exe = std::env::current_exe().expect("current_exe");
    let ops_text: Vec<String> = ops.iter().map(Op::encode).collect();
    let output = Command::new(exe)
        .args([
            "--exact",
            &test_path(test),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, test)
        .env(PLAN_ENV, encode(&plan.cloned()))
        .env(OPS_ENV, ops_text.join("\n"))
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let diag = || {
        format!(
            "child {test} exited {}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    };
    assert!(output.status.success(), "{}", diag());
    let mut apply = None;
    let mut results = Vec::new();
    let mut saw_apply = false;
    for line in stdout.lines() {
        // libtest prints `test NAME ... ` without a newline before the test's own output.
        let Some(at) = line.find(MARK) else {
            continue;
        };
        let rest = &line[at + MARK.len()..];
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "apply" => {
                saw_apply = true;
                let (what, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                apply = match what {
                    "none" => None,
                    "ok" => Some(Ok(decode(rest))),
                    "err" => {
                        let (errno, msg) = rest.split_once(' ').unwrap_or((rest, ""));
                        Some(Err((errno.parse().unwrap(), msg.to_owned())))
                    }
                    _ => panic!("bad line {line}\n{}", diag()),
                }
            }
            "op" => {
                let (i, result) = rest.split_once(' ').expect("op line");
                assert_eq!(i.parse::<usize>().unwrap(), results.len(), "{}", diag());
                results.push(result.to_owned());
            }
            _ => panic!("bad line {line}\n{}", diag()),
        }
    }
    assert!(saw_apply, "child printed no result\n{}", diag());
    if !matches!(apply, Some(Err(_))) {
        assert_eq!(results.len(), ops.len(), "{}", diag());
    }
    Outcome {
        apply,
        ops: results,
    }
}

/// Whether the kernel has Landlock ABI `min`. Skips loudly otherwise, and fails under
/// `STOCKADE_REQUIRE_PRIVILEGED=1` (CI).
fn kernel_has(min: u32) -> bool {
    let abi = kernel_abi();
    if abi >= min {
        return true;
    }
    let msg = format!(
        "landlock abi {abi} on this kernel, test needs {min}{}",
        kernel_unavailable_reason()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    if std::env::var("STOCKADE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{msg} (STOCKADE_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Read-execute rules for the system directories a dynamically linked program needs.
fn system_rules() -> Vec<FsRule> {
    let mut rules: Vec<FsRule> = ["/usr", "/bin", "/lib", "/lib64", "/lib32"]
        .iter()
        .filter(|p| Path::new(p).exists())
        .map(|p| rule(*p, FsAccess::ReadExec))
        .collect();
    if Path::new("/etc/ld.so.cache").exists() {
        // A rule on a regular file: carries only file rights.
        rules.push(rule("/etc/ld.so.cache", FsAccess::ReadOnly));
    }
    rules
}

fn true_binary() -> PathBuf {
    ["/usr/bin/true", "/bin/true"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("a `true` binary")
}

fn write(path: &Path, data: &str) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Enforcement tests

/// The tree every file system test run gets fresh (each run changes it).
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for d in ["ro", "rx", "rw", "denied"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        write(&root.join("denied/secret"), "secret");
        write(&root.join("denied/other"), "other");
        write(&root.join("ro/file"), "read-only data");
        write(&root.join("ro/victim"), "do not remove");
        write(&root.join("rw/existing"), "read-write data");
        fs::copy(true_binary(), root.join("ro/true")).unwrap();
        fs::copy(true_binary(), root.join("rx/true")).unwrap();
        symlink(root.join("denied/secret"), root.join("ro/link")).unwrap();
        // A hard link planted before the job starts (Landlock is path-based: it is readable).
        fs::hard_link(root.join("denied/secret"), root.join("rw/planted")).unwrap();
        Tree { _dir: dir, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn plan(&self) -> LandlockPlan {
        let mut rules = system_rules();
        rules.push(rule(self.p("ro"), FsAccess::ReadOnly));
        rules.push(rule(self.p("rx"), FsAccess::ReadExec));
        rules.push(rule(self.p("rw"), FsAccess::ReadWrite));
        plan(rules)
    }

    /// The operations of [`fs_rights_are_enforced`] with the errno Landlock must give each.
    fn cases(&self) -> Vec<(Op, &'static str)> {
        let p = |rel| self.p(rel);
        vec![
            (Op::Read(p("denied/secret")), "EACCES"),
            (Op::List(p("denied")), "EACCES"),
            (Op::Read("/etc/passwd".into()), "EACCES"),
            (Op::Read(p("ro/file")), OK),
            (Op::List(p("ro")), OK),
            (Op::Create(p("ro/new")), "EACCES"),
            (Op::OpenWrite(p("ro/file")), "EACCES"),
            (Op::Truncate(p("ro/file")), "EACCES"),
            (Op::Remove(p("ro/victim")), "EACCES"),
            (Op::Mkdir(p("ro/dir")), "EACCES"),
            // A symlink beneath an allowed path to a denied file: the target's path decides.
            (Op::Read(p("ro/link")), "EACCES"),
            // A new hard link from a denied directory into an allowed one would widen access:
            // refused by the refer check with EXDEV. A rename fails earlier, with EACCES: the
            // source directory lacks remove_file (measured on Linux 6.18, ABI 7).
            (Op::Link(p("denied/secret"), p("rw/linked")), "EXDEV"),
            (Op::Rename(p("denied/other"), p("rw/stolen")), "EACCES"),
            // ...but a link planted before the job started is readable (documented limitation).
            (Op::Read(p("rw/planted")), OK),
            (Op::Create(p("rw/new")), OK),
            (Op::Mkdir(p("rw/sub")), OK),
            (Op::Rename(p("rw/new"), p("rw/sub/moved")), OK),
            (Op::Truncate(p("rw/existing")), OK),
            (Op::OpenWrite(p("rw/existing")), OK),
            (Op::Remove(p("rw/sub/moved")), OK),
            (Op::Exec(p("rx/true")), OK),
            (Op::Exec(p("ro/true")), "EACCES"),
        ]
    }
}

#[test]
fn fs_rights_are_enforced() {
    const TEST: &str = "fs_rights_are_enforced";
    child_side(TEST);
    if !kernel_has(FS_TARGET_ABI) {
        return;
    }
    let control_tree = Tree::new();
    let cases = control_tree.cases();
    let ops: Vec<Op> = cases.iter().map(|(op, _)| op.clone()).collect();
    let control = run_child(TEST, None, &ops);
    for ((op, _), got) in cases.iter().zip(&control.ops) {
        assert_eq!(got, OK, "control: {op:?}");
    }

    let tree = Tree::new();
    let cases = tree.cases();
    let ops: Vec<Op> = cases.iter().map(|(op, _)| op.clone()).collect();
    let confined = run_child(TEST, Some(&tree.plan()), &ops);
    let report = confined.report();
    assert_eq!(report.fs, Status::Enforced);
    let mismatches: Vec<String> = cases
        .iter()
        .zip(&confined.ops)
        .filter(|((_, want), got)| got != want)
        .map(|((op, want), got)| format!("{op:?}: want {want}, got {got}"))
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    // Nothing leaked into the allowed directory.
    assert!(!tree.p("rw/linked").exists());
    assert!(!tree.p("rw/stolen").exists());
    assert!(tree.p("denied/other").exists());
}

#[test]
fn rules_on_files_carry_file_rights_only() {
    const TEST: &str = "rules_on_files_carry_file_rights_only";
    child_side(TEST);
    if !kernel_has(FS_TARGET_ABI) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel);
    write(&p("ro"), "ro");
    write(&p("rw"), "rw");
    write(&p("unlisted"), "unlisted");
    fs::copy(true_binary(), p("rx")).unwrap();
    let mut rules = system_rules();
    rules.extend([
        rule(p("ro"), FsAccess::ReadOnly),
        rule(p("rw"), FsAccess::ReadWrite),
        rule(p("rx"), FsAccess::ReadExec),
        // A character device: write and ioctl_dev, no directory rights.
        rule("/dev/null", FsAccess::ReadWrite),
    ]);
    // required: a directory-only right on a file would be a HardRequirement error.
    let plan = plan(rules);
    let cases = [
        (Op::Read(p("ro")), OK),
        (Op::OpenWrite(p("ro")), "EACCES"),
        (Op::Truncate(p("ro")), "EACCES"),
        (Op::Read(p("rw")), OK),
        (Op::OpenWrite(p("rw")), OK),
        (Op::Truncate(p("rw")), OK),
        (Op::Exec(p("rx")), OK),
        (Op::Read(p("unlisted")), "EACCES"),
        (Op::List(dir.path().to_path_buf()), "EACCES"),
        (Op::OpenWrite("/dev/null".into()), OK),
    ];
    let ops: Vec<Op> = cases.iter().map(|(op, _)| op.clone()).collect();
    let control = run_child(TEST, None, &ops);
    assert!(control.ops.iter().all(|r| r == OK), "{control:?}");
    write(&p("rw"), "rw");
    write(&p("ro"), "ro");
    let confined = run_child(TEST, Some(&plan), &ops);
    assert_eq!(confined.report().fs, Status::Enforced);
    let got: Vec<&str> = confined.ops.iter().map(String::as_str).collect();
    let want: Vec<&str> = cases.iter().map(|(_, w)| *w).collect();
    assert_eq!(got, want, "{ops:#?}");
}

#[test]
fn tcp_connect_and_bind_follow_the_port_lists() {
    const TEST: &str = "tcp_connect_and_bind_follow_the_port_lists";
    child_side(TEST);
    if !kernel_has(NET_ABI) {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listening = listener.local_addr().unwrap().port();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ops = [Op::Connect(listening), Op::Bind(free)];

    let control = run_child(TEST, None, &ops);
    assert_eq!(control.ops, [OK, OK]);

    // Empty lists: every TCP connect and bind is denied.
    let denied = run_child(TEST, Some(&plan(vec![])), &ops);
    assert_eq!(denied.report().net, Status::Enforced);
    assert_eq!(denied.ops, ["EACCES", "EACCES"]);

    // A port in the other list does not count.
    let mut crossed = plan(vec![]);
    crossed.tcp_connect = vec![free];
    crossed.tcp_bind = vec![listening];
    assert_eq!(
        run_child(TEST, Some(&crossed), &ops).ops,
        ["EACCES", "EACCES"]
    );

    let mut allowed = plan(vec![]);
    allowed.tcp_connect = vec![listening];
    allowed.tcp_bind = vec![free];
    assert_eq!(run_child(TEST, Some(&allowed), &ops).ops, [OK, OK]);
    drop(listener);
}

#[test]
fn scopes_deny_abstract_sockets_and_signals_outside_the_domain() {
    const TEST: &str = "scopes_deny_abstract_sockets_and_signals_outside_the_domain";
    child_side(TEST);
    if !kernel_has(SCOPE_ABI) {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "stockade-landlock-test-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let parent = std::process::id() as i32;
    let ops = [
        Op::ConnectAbstract(name.clone()),
        Op::Signal0(parent),
        Op::SignalSelf,
    ];

    let control = run_child(TEST, None, &ops);
    assert_eq!(control.ops, [OK, OK, OK]);

    // Landlock without scopes: neither is restricted.
    let unscoped = run_child(TEST, Some(&plan(vec![])), &ops);
    assert_eq!(unscoped.report().scopes, Status::NotRequested);
    assert_eq!(unscoped.ops, [OK, OK, OK]);

    let mut both = plan(vec![]);
    both.scope_abstract_unix = true;
    both.scope_signals = true;
    let scoped = run_child(TEST, Some(&both), &ops);
    assert_eq!(scoped.report().scopes, Status::Enforced);
    // Signals to the job's own domain stay allowed.
    assert_eq!(scoped.ops, ["EPERM", "EPERM", OK]);

    // The two scopes are independent.
    let mut signals = plan(vec![]);
    signals.scope_signals = true;
    assert_eq!(run_child(TEST, Some(&signals), &ops).ops, [OK, "EPERM", OK]);
    let mut sockets = plan(vec![]);
    sockets.scope_abstract_unix = true;
    assert_eq!(run_child(TEST, Some(&sockets), &ops).ops, ["EPERM", OK, OK]);
}

#[test]
fn missing_paths_fail_a_required_plan_and_are_skipped_otherwise() {
    const TEST: &str = "missing_paths_fail_a_required_plan_and_are_skipped_otherwise";
    child_side(TEST);
    if !kernel_has(FS_TARGET_ABI) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let present = dir.path().join("present");
    let missing = dir.path().join("missing");
    write(&present, "here");
    let mut p = plan(vec![
        rule(&present, FsAccess::ReadOnly),
        rule(&missing, FsAccess::ReadWrite),
    ]);
    let ops = [Op::Read(present.clone())];

    let required = run_child(TEST, Some(&p), &ops);
    match &required.apply {
        Some(Err((errno, msg))) => {
            assert_eq!(*errno, libc::ENOENT);
            assert_eq!(
                msg,
                &format!(
                    "landlock read_write rule on {}: open(O_PATH): no such file or directory",
                    missing.display()
                )
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }

    p.required = false;
    let best_effort = run_child(TEST, Some(&p), &ops);
    let report = best_effort.report();
    assert_eq!(report.missing_paths, [missing]);
    assert_eq!(report.fs, Status::Enforced);
    assert_eq!(best_effort.ops, [OK]);
}

#[test]
fn report_says_everything_is_enforced_on_this_kernel() {
    const TEST: &str = "report_says_everything_is_enforced_on_this_kernel";
    child_side(TEST);
    if !kernel_has(SCOPE_ABI) {
        return;
    }
    let mut p = plan(vec![]);
    p.scope_signals = true;
    p.scope_abstract_unix = true;
    p.tcp_connect = vec![443, 443, 80];
    let outcome = run_child(TEST, Some(&p), &[]);
    let report = outcome.report();
    assert_eq!(report.abi, kernel_abi());
    assert!(report.abi >= SCOPE_ABI, "{report:?}");
    assert_eq!(report.fs, Status::Enforced);
    assert_eq!(report.net, Status::Enforced);
    assert_eq!(report.scopes, Status::Enforced);
    assert_eq!(report.status, "fully_enforced");
    assert!(report.missing_paths.is_empty());

    // Best effort asks the same of a kernel that has it all.
    p.required = false;
    let outcome = run_child(TEST, Some(&p), &[]);
    assert_eq!(outcome.report(), report);
}
