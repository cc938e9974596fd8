//! Property: a request checked by [`check_request`] never gets more than its profile and the
//! daemon's workspace roots allow. Random requests combine deadlines around the profile's,
//! environment variables allowed or not, and workspace paths built from components that include
//! `..`, `.`, a symlink out of the root, a symlink to the root's parent, a regular file and
//! names that do not exist. Accepted: the deadline is at most the profile's, every variable is
//! allowed or fixed, and the workspace is a directory strictly below a root once every symlink
//! is resolved. Refused: the reason names the field (timeout, the variable, or the workspace).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use stockade_profiles::{HostAccounts, ProfileSet};
use stockade_protocol::JobRequest;

use super::check_request;

struct Layout {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

/// `root/{a/b, f, esc -> outside, up -> .., self -> .}` and `outside/`.
fn layout() -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(root.join("f"), "").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("esc")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    std::os::unix::fs::symlink(".", root.join("self")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("a/rel")).unwrap();
    Layout {
        _dir: dir,
        root,
        outside,
    }
}

/// Compiled once: loading compiles seccomp programs.
fn embedded() -> &'static ProfileSet {
    static SET: std::sync::OnceLock<ProfileSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| ProfileSet::embedded(&HostAccounts::none()).unwrap())
}

const PARTS: [&str; 10] = ["a", "b", "..", ".", "esc", "up", "self", "f", "rel", "nope"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_request_gets_more_than_its_profile_and_roots_allow(
        start in 0usize..3,
        parts in proptest::collection::vec(proptest::sample::select(PARTS.to_vec()), 0..5),
        timeout_ms in proptest::option::of(0u64..700_000),
        env in proptest::collection::vec(
            (proptest::sample::select(vec!["TERM", "TZ", "LD_PRELOAD", "PATH", "BASH_ENV"]), "[a-z]{0,4}"),
            0..3,
        ),
    ) {
        let l = layout();
        let set = embedded();
        let agent = set.get("agent").unwrap();
        let mut ws = [l.root.clone(), l.outside.clone(), l.root.parent().unwrap().to_path_buf()][start].clone();
        for p in &parts {
            ws.push(p);
        }
        let req = JobRequest {
            profile: "agent".into(),
            argv: vec!["true".into()],
            workspace: Some(ws.display().to_string()),
            timeout_ms,
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            cpu_limit_ms: None,
            idle_timeout_ms: None,
            output_limit_bytes: None,
        };
        let roots = [l.root.clone()];
        let real = std::fs::canonicalize(&ws).ok().filter(|r| r.is_dir());
        let ws_ok = real.as_ref().is_some_and(|r| r.starts_with(&l.root) && *r != l.root);
        let timeout_ok = timeout_ms.is_none_or(|t| t > 0 && u128::from(t) <= agent.wall_timeout.as_millis());
        let bad_env = env.iter().find(|(k, _)| !agent.env_allow.iter().any(|a| a == k));
        match check_request(set, &req, Some(&roots)) {
            Ok((profile, resolved, workspace)) => {
                prop_assert!(ws_ok && timeout_ok && bad_env.is_none(), "accepted {req:?}");
                prop_assert_eq!(&profile, agent);
                prop_assert!(resolved.wall_timeout <= agent.wall_timeout);
                let w = workspace.unwrap();
                prop_assert_eq!(Some(&w), real.as_ref());
                prop_assert!(w.starts_with(&l.root) && w != l.root && Path::new(&w).is_dir());
                for (k, v) in &resolved.env {
                    let allowed = agent.env_allow.contains(k);
                    prop_assert!(allowed || agent.env_set.get(k) == Some(v), "{k}={v}");
                }
            }
            Err(reason) => {
                prop_assert!(!(ws_ok && timeout_ok && bad_env.is_none()), "refused {req:?}: {reason}");
                // The first check that fails is named: deadline and environment, then workspace.
                if !timeout_ok {
                    prop_assert!(reason.starts_with("timeout "), "{reason}");
                } else if let Some((k, _)) = bad_env {
                    prop_assert!(reason.starts_with(&format!("environment variable {k} ")), "{reason}");
                } else {
                    prop_assert!(reason.starts_with("workspace "), "{reason}");
                }
            }
        }
    }
}
