//! Unit tests of the resolver (both methods) and of the operations on descriptors. The kernel is
//! real; no root needed (the identity and daemon tests are in `tests/fs_ops.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use proptest::prelude::*;

use super::resolve::{open_beneath, Method, MAX_SYMLINKS};
use super::*;

const METHODS: [Method; 2] = [Method::Openat2, Method::Walk];

fn root_fd(p: &Path) -> OwnedFd {
    take_fd(
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap(),
    )
}

fn resolve(m: Method, root: &OwnedFd, path: &str, follow: bool) -> Result<(u64, u64), Errno> {
    let rel = RelPath::parse(path).unwrap();
    let fd = open_beneath(m, root.as_fd(), &rel, OFlag::O_PATH, Mode::empty(), follow)?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok((st.st_dev, st.st_ino))
}

fn id_of(p: &Path) -> (u64, u64) {
    let m = std::fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

/// A workspace `ws` next to an `outside` directory with a secret, plus every kind of escape.
fn hostile_tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path().join("ws");
    std::fs::create_dir_all(ws.join("d/e")).unwrap();
    std::fs::create_dir(t.path().join("outside")).unwrap();
    std::fs::write(t.path().join("outside/secret"), "host").unwrap();
    std::fs::write(ws.join("d/e/f"), "inside").unwrap();
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, ws.join(at)).unwrap();
    link("/etc/shadow", "shadow");
    link("../outside", "out_dir");
    link("../outside/secret", "out_file");
    link("chain2", "chain1");
    link("chain3", "chain2");
    link("../outside/secret", "chain3");
    link("/proc/self/root", "magic");
    link("loop_b", "loop_a");
    link("loop_a", "loop_b");
    link("d/e", "good_dir");
    link("good_dir/f", "good_file");
    link("d/../d/e/f", "dotdot_inside");
    link("d/../../outside/secret", "dotdot_out");
    (t, ws)
}

#[test]
fn escapes_are_refused_by_both_methods() {
    let (_t, ws) = hostile_tree();
    let root = root_fd(&ws);
    for m in METHODS {
        for (path, want) in [
            ("shadow", Errno::EXDEV),
            ("out_dir", Errno::EXDEV),
            ("out_dir/secret", Errno::EXDEV),
            ("out_file", Errno::EXDEV),
            ("chain1", Errno::EXDEV),
            ("magic", Errno::EXDEV),
            ("magic/etc/passwd", Errno::EXDEV),
            ("loop_a", Errno::ELOOP),
            ("dotdot_out", Errno::EXDEV),
            ("missing/x", Errno::ENOENT),
            ("d/e/f/x", Errno::ENOTDIR),
        ] {
            assert_eq!(resolve(m, &root, path, true), Err(want), "{m:?} {path}");
        }
        // Symlinks that stay inside are followed, unless the profile says no.
        let f = id_of(&ws.join("d/e/f"));
        for path in ["good_file", "good_dir/f", "dotdot_inside", "d/e/f"] {
            assert_eq!(resolve(m, &root, path, true), Ok(f), "{m:?} {path}");
        }
        for path in ["good_file", "good_dir/f", "dotdot_inside"] {
            assert_eq!(
                resolve(m, &root, path, false),
                Err(Errno::ELOOP),
                "{m:?} {path}"
            );
        }
        assert_eq!(resolve(m, &root, "d/e/f", false), Ok(f));
        assert_eq!(resolve(m, &root, "", false), Ok(id_of(&ws)));
    }
}

#[test]
fn a_mount_point_below_the_root_is_not_crossed() {
    // /proc is its own mount: resolving from / into it is what RESOLVE_NO_XDEV refuses.
    let root = root_fd(Path::new("/"));
    for m in METHODS {
        assert_eq!(
            resolve(m, &root, "proc/self", true),
            Err(Errno::EXDEV),
            "{m:?}"
        );
        assert!(resolve(m, &root, "etc", true).is_ok(), "{m:?}");
    }
}

#[test]
fn creating_through_a_symlink_never_lands_outside() {
    let (t, ws) = hostile_tree();
    let root = root_fd(&ws);
    for m in METHODS {
        for path in ["out_dir/new", "shadow", "out_file", "magic/tmp/x"] {
            let rel = RelPath::parse(path).unwrap();
            let r = open_beneath(
                m,
                root.as_fd(),
                &rel,
                OFlag::O_WRONLY | OFlag::O_CREAT,
                Mode::from_bits_truncate(0o644),
                true,
            );
            assert!(
                matches!(r, Err(Errno::EXDEV) | Err(Errno::ELOOP)),
                "{m:?} {path}: {r:?}"
            );
        }
    }
    assert!(!t.path().join("outside/new").exists());
    assert_eq!(
        std::fs::read_to_string(t.path().join("outside/secret")).unwrap(),
        "host"
    );
}

fn policy() -> FilesPolicy {
    FilesPolicy::default()
}

#[test]
fn operations_refuse_escapes_and_hardlinks_and_leave_the_host_file_alone() {
    let (t, ws) = hostile_tree();
    let secret = t.path().join("outside/secret");
    std::fs::hard_link(&secret, ws.join("hardlink")).unwrap();
    for m in METHODS {
        let w = Workspace::from_fd(root_fd(&ws), m, policy());
        for path in [
            "shadow",
            "out_file",
            "chain1",
            "magic/etc/passwd",
            "hardlink",
            "../outside/secret",
            "/etc/passwd",
        ] {
            let kind = |r: Result<(), FsError>| match r {
                Err(e) => e.kind,
                Ok(()) => panic!("{m:?} {path}: an operation succeeded"),
            };
            assert_eq!(
                kind(w.open_read(path, 0, None).map(drop)),
                FsErrorKind::PathTraversal,
                "{m:?} read {path}"
            );
            assert_eq!(
                kind(w.append(path, b"x").map(drop)),
                FsErrorKind::PathTraversal,
                "{m:?} append {path}"
            );
            for atomic in [true, false] {
                let r = w.write(path, b"x", WriteOptions { atomic, mode: None });
                assert_eq!(
                    kind(r.map(drop)),
                    FsErrorKind::PathTraversal,
                    "{m:?} write {path}"
                );
            }
            assert_eq!(
                kind(w.stat(path).map(drop)),
                FsErrorKind::PathTraversal,
                "{m:?} stat {path}"
            );
        }
        for path in ["out_dir", "out_dir/x", "magic", "../x", "/tmp"] {
            let r = w.list(path, false);
            assert_eq!(
                r.unwrap_err().kind,
                FsErrorKind::PathTraversal,
                "{m:?} ls {path}"
            );
            let r = w.mkdir(&format!("{path}/new"), true, None);
            assert_eq!(
                r.unwrap_err().kind,
                FsErrorKind::PathTraversal,
                "{m:?} mkdir {path}"
            );
        }
        assert_eq!(
            w.remove("out_dir/secret", false).unwrap_err().kind,
            FsErrorKind::PathTraversal
        );
        assert_eq!(
            w.rename("d/e/f", "out_dir/f", false).unwrap_err().kind,
            FsErrorKind::PathTraversal
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host");
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 2);
    assert_eq!(
        std::fs::read_dir(t.path().join("outside")).unwrap().count(),
        1
    );
}

#[test]
fn write_read_list_mkdir_remove_rename_work_inside() {
    let t = tempfile::tempdir().unwrap();
    for m in METHODS {
        let ws = t.path().join(m.name());
        std::fs::create_dir(&ws).unwrap();
        let w = Workspace::from_fd(root_fd(&ws), m, policy());
        assert!(w.mkdir("a/b/c", true, None).unwrap());
        assert!(
            !w.mkdir("a/b/c", true, None).unwrap(),
            "exists: -p is quiet"
        );
        assert_eq!(
            w.mkdir("a/b/c", false, None).unwrap_err().kind,
            FsErrorKind::Exists
        );
        assert_eq!(
            w.mkdir("x/y", false, None).unwrap_err().kind,
            FsErrorKind::NotFound
        );
        assert_eq!(
            w.write("a/b/c/f.txt", b"hello", WriteOptions::default())
                .unwrap(),
            5
        );
        assert_eq!(w.append("a/b/c/f.txt", b" world").unwrap(), 11);
        let h = w.open_read("a/b/c/f.txt", 6, Some(100)).unwrap();
        assert_eq!((h.size, h.len), (11, 5));
        let mut buf = vec![0u8; 5];
        assert_eq!(h.read_chunk(h.offset, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"world");
        w.write(
            "a/b/c/f.txt",
            b"new",
            WriteOptions {
                atomic: false,
                mode: Some(0o600),
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(ws.join("a/b/c/f.txt")).unwrap(), b"new");
        let e = w.stat("a/b/c/f.txt").unwrap();
        assert_eq!((e.kind, e.size, e.mode), (EntryKind::File, 3, 0o600));
        let l = w.list("", true).unwrap();
        let names: Vec<&str> = l.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/c", "a/b/c/f.txt"]);
        assert!(!l.truncated);
        assert_eq!(
            w.open_read("a", 0, None).unwrap_err().kind,
            FsErrorKind::IsADirectory
        );
        assert_eq!(
            w.list("a/b/c/f.txt", false).unwrap_err().kind,
            FsErrorKind::NotADirectory
        );
        w.rename("a/b/c/f.txt", "g.txt", false).unwrap();
        w.write("h.txt", b"h", WriteOptions::default()).unwrap();
        assert_eq!(
            w.rename("g.txt", "h.txt", false).unwrap_err().kind,
            FsErrorKind::Exists
        );
        w.rename("g.txt", "h.txt", true).unwrap();
        assert_eq!(std::fs::read(ws.join("h.txt")).unwrap(), b"new");
        assert_eq!(
            w.remove("a", false).unwrap_err().kind,
            FsErrorKind::Io(libc::ENOTEMPTY)
        );
        assert_eq!(w.remove("a", true).unwrap(), 3);
        assert_eq!(w.remove("h.txt", false).unwrap(), 1);
        assert_eq!(
            std::fs::read_dir(&ws).unwrap().count(),
            0,
            "no temporary file left"
        );
    }
}

#[test]
fn policy_is_enforced_before_anything_changes() {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    std::fs::write(ws.join(".git/config"), "cfg").unwrap();
    std::fs::write(ws.join("big"), vec![0u8; 100]).unwrap();
    let pol = FilesPolicy {
        protected: vec![
            Glob::new(".git/hooks/**").unwrap(),
            Glob::new(".git/config").unwrap(),
        ],
        quota_bytes: Some(150),
        max_op_bytes: 80,
        ..FilesPolicy::default()
    };
    let w = Workspace::from_fd(root_fd(ws), Method::detect(), pol);
    let kind = |r: Result<(), FsError>| r.unwrap_err().kind;
    assert_eq!(
        kind(
            w.write(".git/config", b"x", WriteOptions::default())
                .map(drop)
        ),
        FsErrorKind::Denied
    );
    assert_eq!(
        kind(
            w.write(".git/hooks/pre-commit", b"x", WriteOptions::default())
                .map(drop)
        ),
        FsErrorKind::Denied
    );
    assert_eq!(kind(w.remove(".git", true).map(drop)), FsErrorKind::Denied);
    assert_eq!(kind(w.rename(".git", "g", false)), FsErrorKind::Denied);
    assert_eq!(
        kind(w.write("run.sh", b"x", WriteOptions::default()).map(drop)),
        FsErrorKind::DeniedExtension
    );
    w.write("run.txt", b"x", WriteOptions::default()).unwrap();
    assert_eq!(
        kind(w.rename("run.txt", "run.sh", false)),
        FsErrorKind::DeniedExtension
    );
    assert_eq!(
        kind(w.write("x", &[0u8; 81], WriteOptions::default()).map(drop)),
        FsErrorKind::TooLarge
    );
    // 100 + 1 in use; 60 more would be 161 > 150. Replacing `big` by 60 bytes is fine.
    assert_eq!(
        kind(w.write("y", &[0u8; 60], WriteOptions::default()).map(drop)),
        FsErrorKind::QuotaExceeded
    );
    w.write("big", &[1u8; 60], WriteOptions::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.join(".git/config")).unwrap(),
        "cfg"
    );
    assert!(!ws.join("run.sh").exists() && !ws.join("x").exists() && !ws.join("y").exists());
}

#[test]
fn a_failed_atomic_write_keeps_the_old_content_and_leaves_no_temporary_file() {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    std::fs::write(ws.join("f"), "old").unwrap();
    // RLIMIT_FSIZE cannot be set per thread, so make the write fail at rename instead: the
    // target became a non-empty directory between our look and the rename.
    let w = Workspace::from_fd(root_fd(ws), Method::detect(), policy());
    let dir = root_fd(ws);
    std::fs::create_dir(ws.join("d")).unwrap();
    std::fs::write(ws.join("d/x"), "x").unwrap();
    let err = atomic_replace(
        dir.as_fd(),
        "d",
        &RelPath::parse("d").unwrap(),
        b"new",
        0o644,
    )
    .unwrap_err();
    assert_eq!(err.kind, FsErrorKind::IsADirectory, "{err:?}");
    assert_eq!(std::fs::read_to_string(ws.join("d/x")).unwrap(), "x");
    let names: Vec<String> = std::fs::read_dir(ws)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(TMP_PREFIX)),
        "{names:?}"
    );
    assert_eq!(w.open_read("f", 0, None).unwrap().size, 3);
}

// ---- Property test: both methods against a model, on random trees with random symlinks ----

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File,
    Link(String),
}

/// The model: RESOLVE_BENEATH semantics over an in-memory tree, symlinks followed.
fn model(tree: &BTreeMap<Vec<String>, Node>, path: &[String]) -> Result<Vec<String>, Errno> {
    let mut cur: Vec<String> = Vec::new();
    let mut rest: VecDeque<String> = path.iter().cloned().collect();
    let mut links = 0;
    while let Some(name) = rest.pop_front() {
        let last = rest.is_empty();
        match name.as_str() {
            "." => continue,
            ".." => {
                if cur.pop().is_none() {
                    return Err(Errno::EXDEV);
                }
                continue;
            }
            _ => {}
        }
        let mut p = cur.clone();
        p.push(name);
        match tree.get(&p) {
            None => return Err(Errno::ENOENT),
            Some(Node::Link(t)) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::ELOOP);
                }
                if t.starts_with('/') {
                    return Err(Errno::EXDEV);
                }
                let mut parts: Vec<String> = t
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                if t.ends_with('/') {
                    parts.push(".".into());
                }
                for c in parts.into_iter().rev() {
                    rest.push_front(c);
                }
            }
            Some(Node::File) if !last => return Err(Errno::ENOTDIR),
            Some(Node::File) => return Ok(p),
            Some(Node::Dir) => cur = p,
        }
    }
    Ok(cur)
}

fn arb_component() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_string)
}

fn arb_target() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just(".."), Just(".")],
            1..5,
        ),
        any::<bool>(),
    )
        .prop_map(|(abs, parts, slash)| {
            let mut s = if abs {
                format!("/{}", parts.join("/"))
            } else {
                parts.join("/")
            };
            if slash {
                s.push('/');
            }
            s
        })
}

fn arb_tree() -> impl Strategy<Value = Vec<(Vec<String>, u8, String)>> {
    prop::collection::vec(
        (
            prop::collection::vec(arb_component(), 1..4),
            0u8..3,
            arb_target(),
        ),
        0..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn resolver_matches_the_model(
        spec in arb_tree(),
        queries in prop::collection::vec(prop::collection::vec(arb_component(), 1..5), 1..12),
    ) {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        // Decoys outside: an escape that the model says is EXDEV must not reach them anyway.
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        let mut tree = BTreeMap::new();
        for (path, kind, target) in spec {
            let parent_ok = path.len() == 1
                || matches!(tree.get(&path[..path.len() - 1]), Some(Node::Dir));
            if !parent_ok || tree.contains_key(&path) {
                continue;
            }
            let real = ws.join(path.join("/"));
            let node = match kind {
                0 => { std::fs::create_dir(&real).unwrap(); Node::Dir }
                1 => { std::fs::write(&real, path.join("/")).unwrap(); Node::File }
                _ => { std::os::unix::fs::symlink(&target, &real).unwrap(); Node::Link(target) }
            };
            tree.insert(path, node);
        }
        let root = root_fd(&ws);
        for q in queries {
            let want = model(&tree, &q).map(|p| id_of(&ws.join(p.join("/"))));
            let path = q.join("/");
            for m in METHODS {
                let got = resolve(m, &root, &path, true);
                prop_assert_eq!(got, want, "{:?} {} in {:?}", m, path, tree);
            }
        }
    }
}
