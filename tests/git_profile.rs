//! The shipped `git` profile against a hostile repository, on the real kernel: a post-checkout
//! hook, a `core.fsmonitor` command, a credential helper and a `core.sshCommand` in the
//! repository's own `.git/config`, each of which would touch a marker file. `git checkout`,
//! `git status`, `git fetch` from a local path, `git credential fill` and a `git fetch` over ssh
//! under the profile run none of them. The same jobs under the same profile minus its git
//! environment run every one: the test can see what it claims to prevent.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const MARKERS: [&str; 4] = ["hook", "fsmonitor", "credential", "ssh"];

/// Host-side git for building the repositories: no system or global config of the host.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git (install it: apt-get install -y git)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ws/origin` (two branches) and `ws/repo` (a clone of it, armed), every file owned by `uid` so
/// git's ownership check passes and only the profile stands between the repository and its
/// commands. Returns the marker directory.
fn hostile_workspace(ws: &Path, uid: u32) -> std::path::PathBuf {
    let origin = ws.join("origin");
    std::fs::create_dir(&origin).unwrap();
    git(&origin, &["init", "-q"]);
    std::fs::write(origin.join("a.txt"), "a\n").unwrap();
    git(&origin, &["add", "a.txt"]);
    git(&origin, &["commit", "-qm", "a"]);
    git(&origin, &["checkout", "-qb", "other"]);
    std::fs::write(origin.join("b.txt"), "b\n").unwrap();
    git(&origin, &["add", "b.txt"]);
    git(&origin, &["commit", "-qm", "b"]);
    git(&origin, &["checkout", "-q", "main"]);
    git(ws, &["clone", "-q", "origin", "repo"]);
    let repo = ws.join("repo");
    let marks = ws.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let m = marks.display();
    let script = |name: &str, body: String| {
        let p = repo.join(".git").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        chmod(&p, 0o755);
        p
    };
    script("hooks/post-checkout", format!("touch {m}/hook"));
    let fsmonitor = script("fsmonitor.sh", format!("touch {m}/fsmonitor; exit 1"));
    let config = repo.join(".git/config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[core]\n\tfsmonitor = {}\n\tsshCommand = touch {m}/ssh; false\n\
         [credential]\n\thelper = \"!touch {m}/credential; echo\"\n",
        fsmonitor.display()
    ));
    std::fs::write(&config, text).unwrap();
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(ws)
        .status()
        .unwrap();
    assert!(status.success());
    marks
}

/// What a git job does with the repository.
fn script(ws: &Path) -> String {
    let w = ws.display();
    format!(
        "cd {w}/repo && git checkout -q other && git status --short && git fetch -q {w}/origin && \
         echo fetched; printf 'protocol=https\\nhost=example.invalid\\n\\n' | git credential fill; \
         git fetch -q ssh://example.invalid/x; echo done"
    )
}

fn fired(marks: &Path) -> Vec<&'static str> {
    MARKERS
        .into_iter()
        .filter(|m| marks.join(m).exists())
        .collect()
}

#[test]
fn the_git_profile_runs_none_of_a_hostile_repositorys_commands() {
    if !require_root("the_git_profile_runs_none_of_a_hostile_repositorys_commands") {
        return;
    }
    let uid = 61354;
    let env = TestEnv::new("git-hostile", uid);
    env.write_profile("g", &shipped_profile_toml("git", uid));
    let ws = env.shared_workspace("ws");
    let marks = hostile_workspace(&ws, uid);
    let ws_arg = ws.display().to_string();
    let out = env.exec_args(
        &["--profile", "g", "--workspace", &ws_arg, "--json"],
        &["sh", "-c", &script(&ws)],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert!(out.stdout.contains("fetched\n"), "{}", out.describe());
    assert!(out.stdout.ends_with("done\n"), "{}", out.describe());
    assert!(
        ws.join("repo/b.txt").exists(),
        "checkout of `other` did not happen"
    );
    assert_eq!(fired(&marks), Vec::<&str>::new(), "{}", out.describe());

    // Control: the same profile without its git environment (only PATH) runs every one.
    let bare = shipped_profile_toml("git", uid);
    let start = 1 + bare
        .find("\n[env.set]")
        .expect("the git profile has an [env.set] table");
    let bare = format!(
        "{}[env.set]\nPATH = \"/usr/local/bin:/usr/bin:/bin\"\nGIT_TERMINAL_PROMPT = \"0\"\n",
        &bare[..start]
    );
    env.write_profile("bare", &bare);
    let ws2 = env.shared_workspace("ws2");
    let marks2 = hostile_workspace(&ws2, uid);
    let ws2_arg = ws2.display().to_string();
    let out = env.exec_args(
        &["--profile", "bare", "--workspace", &ws2_arg, "--json"],
        &["sh", "-c", &script(&ws2)],
    );
    assert_eq!(out.code(), 0, "{}", out.describe());
    assert_eq!(fired(&marks2), MARKERS, "{}", out.describe());
    env.finish();
}
