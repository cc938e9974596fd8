//! What a profile lets clients do to files in a workspace: protected paths, denied extensions,
//! an optional allow-list of editable paths, size limits, whether symlinks are followed.

use super::path::RelPath;
use super::{FsError, FsErrorKind};

/// Extensions refused for writes unless a profile says otherwise: scripts and executables that an
/// upload could plant for someone to run.
pub const DEFAULT_DENIED_EXTENSIONS: [&str; 8] =
    ["sh", "bash", "bat", "cmd", "ps1", "exe", "dll", "so"];

/// Default largest write or append, in bytes. A write travels in one protocol frame (1 MiB, less
/// the envelope), so this is also the most a profile may set.
pub const DEFAULT_MAX_OP_BYTES: u64 = 960 * 1024;

/// Default cap on the entries one listing returns.
pub const DEFAULT_MAX_LIST_ENTRIES: u32 = 10_000;

/// A glob over workspace-relative paths: `/` separates components, `**` (a whole component)
/// matches zero or more components, `*` any run of characters within a component, `?` one
/// character. Matched against the whole path: `*.pem` is a top-level file, `**/*.pem` any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<String>,
}

impl Glob {
    /// Parse a pattern; refused: empty, absolute, `..`, or `**` mixed with other characters.
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty pattern".into());
        }
        if text.starts_with('/') {
            return Err("patterns are relative to the workspace; drop the leading `/`".into());
        }
        let parts: Vec<String> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_string)
            .collect();
        for p in &parts {
            if p == ".." {
                return Err("`..` has no meaning in a workspace pattern".into());
            }
            if p.contains("**") && p != "**" {
                return Err(format!("`**` must be a whole component (in {p:?})"));
            }
        }
        if parts.is_empty() {
            return Err("a pattern without components".into());
        }
        Ok(Glob {
            text: text.to_string(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` matches.
    pub fn matches(&self, path: &RelPath) -> bool {
        match_parts(&self.parts, path.components(), false)
    }

    /// Whether some path at or below `path` could match: a directory operation on `path` (remove
    /// it recursively, move it) would touch what this pattern protects.
    pub fn may_match_below(&self, path: &RelPath) -> bool {
        match_parts(&self.parts, path.components(), true)
    }
}

/// Match pattern components against path components. With `prefix`, a path that runs out while
/// pattern components remain counts as a match (something below it could match).
fn match_parts(pat: &[String], path: &[String], prefix: bool) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            // Zero components, or one more and try again.
            match_parts(rest, path, prefix)
                || (!path.is_empty() && match_parts(pat, &path[1..], prefix))
                || (prefix && path.is_empty())
        }
        Some((p, rest)) => match path.split_first() {
            None => prefix,
            Some((c, more)) => {
                match_component(p.as_bytes(), c.as_bytes()) && match_parts(rest, more, prefix)
            }
        },
    }
}

/// `*` and `?` within one component.
fn match_component(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_component(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_component(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_component(rest, &s[1..]),
    }
}

/// The file-operation policy of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesPolicy {
    /// Paths clients may never write, create, remove or rename (`denied`).
    pub protected: Vec<Glob>,
    /// Extensions (lower case, without the dot) refused for files clients write (`denied_extension`).
    pub denied_extensions: Vec<String>,
    /// If set, the only paths clients may modify (`denied` for any other).
    pub editable: Option<Vec<Glob>>,
    /// Largest write or append in bytes (`too_large`).
    pub max_op_bytes: u64,
    /// Bytes of regular files a workspace may hold after a write (`quota_exceeded`); `None`: no quota.
    pub quota_bytes: Option<u64>,
    /// Whether reads, listings and stats follow symlinks that stay inside the workspace.
    /// Modifying operations never follow symlinks.
    pub follow_symlinks: bool,
    /// Most entries one listing returns (then it says it was truncated).
    pub max_list_entries: u32,
}

impl Default for FilesPolicy {
    fn default() -> Self {
        FilesPolicy {
            protected: Vec::new(),
            denied_extensions: DEFAULT_DENIED_EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
            editable: None,
            max_op_bytes: DEFAULT_MAX_OP_BYTES,
            quota_bytes: None,
            follow_symlinks: true,
            max_list_entries: DEFAULT_MAX_LIST_ENTRIES,
        }
    }
}

impl FilesPolicy {
    /// May a client modify `path` (write, append, mkdir, remove, rename from or to)? `tree`: the
    /// operation may act on everything below `path` too (recursive remove, rename of a directory).
    pub fn check_modify(&self, path: &RelPath, tree: bool) -> Result<(), FsError> {
        if path.is_root() {
            return Err(FsError::new(
                FsErrorKind::Denied,
                path,
                "the workspace root itself cannot be modified",
            ));
        }
        for g in &self.protected {
            let hit = if tree {
                g.may_match_below(path)
            } else {
                g.matches(path)
            };
            if hit {
                let below = if tree && !g.matches(path) {
                    " (something below it)"
                } else {
                    ""
                };
                return Err(FsError::new(
                    FsErrorKind::Denied,
                    path,
                    &format!(
                        "protected by the profile's files.protected pattern {:?}{below}",
                        g.as_str()
                    ),
                ));
            }
        }
        if let Some(allow) = &self.editable {
            if !allow.iter().any(|g| g.matches(path)) {
                let pats: Vec<&str> = allow.iter().map(Glob::as_str).collect();
                return Err(FsError::new(
                    FsErrorKind::Denied,
                    path,
                    &format!("not in the profile's files.editable list {pats:?}"),
                ));
            }
        }
        Ok(())
    }

    /// May a client put file content at `path` (write, append, the target of a rename)?
    pub fn check_extension(&self, path: &RelPath) -> Result<(), FsError> {
        let Some((_, name)) = path.split_last() else {
            return Ok(());
        };
        // Windows ignores trailing dots and spaces (`x.exe.` runs as `x.exe`); so do we.
        let name = name.trim_end_matches(['.', ' ']).to_ascii_lowercase();
        if let Some((_, ext)) = name.rsplit_once('.') {
            if self.denied_extensions.iter().any(|d| d == ext) {
                return Err(FsError::new(
                    FsErrorKind::DeniedExtension,
                    path,
                    &format!("files ending in .{ext} are in the profile's files.denied_extensions"),
                ));
            }
        }
        Ok(())
    }

    /// Is `len` bytes within the per-operation limit?
    pub fn check_size(&self, path: &RelPath, len: u64) -> Result<(), FsError> {
        if len > self.max_op_bytes {
            return Err(FsError::new(
                FsErrorKind::TooLarge,
                path,
                &format!(
                    "{len} bytes exceed the profile's files.max_op_bytes = {}",
                    self.max_op_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn globs_match_whole_paths() {
        let hooks = Glob::new(".git/hooks/**").unwrap();
        assert!(hooks.matches(&p(".git/hooks/pre-commit")));
        assert!(hooks.matches(&p(".git/hooks/a/b")));
        assert!(
            hooks.matches(&p(".git/hooks")),
            "`**` matches zero components"
        );
        assert!(!hooks.matches(&p(".git/config")));
        assert!(!hooks.matches(&p("x/.git/hooks/y")));
        let star = Glob::new("*.pem").unwrap();
        assert!(star.matches(&p("key.pem")));
        assert!(!star.matches(&p("a/key.pem")));
        let any = Glob::new("**/*.pem").unwrap();
        assert!(any.matches(&p("key.pem")) && any.matches(&p("a/b/key.pem")));
        let q = Glob::new("a?c").unwrap();
        assert!(q.matches(&p("abc")) && !q.matches(&p("ac")) && !q.matches(&p("abbc")));
    }

    #[test]
    fn directories_above_a_protected_path_are_protected_as_trees() {
        let cfg = Glob::new(".git/config").unwrap();
        assert!(cfg.may_match_below(&p(".git")));
        assert!(cfg.may_match_below(&p(".git/config")));
        assert!(!cfg.may_match_below(&p("src")));
        assert!(!cfg.matches(&p(".git")));
        let hooks = Glob::new(".git/hooks/**").unwrap();
        assert!(hooks.may_match_below(&p(".git")));
        assert!(hooks.may_match_below(&p(".git/hooks/x")));
        assert!(!hooks.may_match_below(&p(".github")));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        assert!(Glob::new("/etc").unwrap_err().contains("leading `/`"));
        assert!(Glob::new("a/../b").unwrap_err().contains("`..`"));
        assert!(Glob::new("a**").unwrap_err().contains("whole component"));
        assert!(Glob::new("").is_err());
    }

    #[test]
    fn policy_checks_name_the_key() {
        let mut pol = FilesPolicy {
            protected: vec![
                Glob::new(".git/hooks/**").unwrap(),
                Glob::new(".git/config").unwrap(),
            ],
            ..FilesPolicy::default()
        };
        let e = pol.check_modify(&p(".git/config"), false).unwrap_err();
        assert_eq!(e.kind, FsErrorKind::Denied);
        assert_eq!(
            e.message,
            ".git/config: protected by the profile's files.protected pattern \".git/config\""
        );
        let e = pol.check_modify(&p(".git"), true).unwrap_err();
        assert!(e.message.contains("(something below it)"), "{}", e.message);
        assert!(
            pol.check_modify(&p(".git"), false).is_ok(),
            "mkdir .git itself is allowed"
        );
        assert!(pol.check_modify(&p("src/main.rs"), true).is_ok());
        assert_eq!(
            pol.check_modify(&p(""), false).unwrap_err().kind,
            FsErrorKind::Denied
        );

        for bad in [
            "run.sh",
            "RUN.SH",
            "x.exe.",
            "lib.so",
            "a/b/c.ps1",
            "x.exe ",
        ] {
            let e = pol.check_extension(&p(bad)).unwrap_err();
            assert_eq!(e.kind, FsErrorKind::DeniedExtension, "{bad}");
        }
        for ok in ["main.rs", "shell", "sh", "a.sh.txt", ".bashrc"] {
            assert!(pol.check_extension(&p(ok)).is_ok(), "{ok}");
        }

        pol.editable = Some(vec![
            Glob::new(".env").unwrap(),
            Glob::new("package.json").unwrap(),
        ]);
        assert!(pol.check_modify(&p(".env"), false).is_ok());
        let e = pol.check_modify(&p("src/x.js"), false).unwrap_err();
        assert_eq!(e.kind, FsErrorKind::Denied);
        assert!(e.message.contains("files.editable"), "{}", e.message);

        let e = pol
            .check_size(&p("big"), DEFAULT_MAX_OP_BYTES + 1)
            .unwrap_err();
        assert_eq!(e.kind, FsErrorKind::TooLarge);
        assert!(pol.check_size(&p("big"), DEFAULT_MAX_OP_BYTES).is_ok());
    }
}
