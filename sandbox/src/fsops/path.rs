//! Request paths: relative to a workspace, checked lexically before the kernel sees them.
//!
//! The lexical check is not what keeps a path inside the workspace (the kernel does that, see
//! [`super::resolve`]); it refuses early, with a precise message, what can never be legitimate:
//! absolute paths, `..`, NUL bytes, names longer than `NAME_MAX`, paths longer than `PATH_MAX`.

use super::{FsError, FsErrorKind};

/// Longest file name component (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Longest path, including the terminating NUL the kernel counts (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// A checked path relative to a workspace root: zero or more plain components (no `.`, `..`,
/// empty components or `/`). Zero components is the workspace root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    components: Vec<String>,
}

impl RelPath {
    /// Check `raw`. `""` and `"."` are the workspace root; `a//b/./c` is `a/b/c`.
    pub fn parse(raw: &str) -> Result<RelPath, FsError> {
        let refuse = |why: &str| FsError::new(FsErrorKind::PathTraversal, raw, why);
        if raw.contains('\0') {
            return Err(refuse("the path contains a NUL byte"));
        }
        if raw.starts_with('/') {
            return Err(refuse(
                "absolute paths are refused: paths are relative to the workspace",
            ));
        }
        if raw.len() >= PATH_MAX {
            return Err(refuse(&format!(
                "the path is {} bytes long (at most {} allowed)",
                raw.len(),
                PATH_MAX - 1
            )));
        }
        let mut components = Vec::new();
        for c in raw.split('/') {
            match c {
                "" | "." => continue,
                ".." => return Err(refuse("`..` components are refused")),
                c if c.len() > NAME_MAX => {
                    return Err(refuse(&format!(
                        "a component is {} bytes long (at most {NAME_MAX} allowed)",
                        c.len()
                    )))
                }
                c => components.push(c.to_string()),
            }
        }
        Ok(RelPath { components })
    }

    /// The components, in order.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Whether this is the workspace root itself.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The parent and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &str)> {
        let (last, parent) = self.components.split_last()?;
        Some((
            RelPath {
                components: parent.to_vec(),
            },
            last,
        ))
    }

    /// `self/name` (`name` must be a single plain component, as from a directory listing).
    pub fn join(&self, name: &str) -> RelPath {
        let mut components = self.components.clone();
        components.push(name.to_string());
        RelPath { components }
    }

    /// The path as `a/b/c`, `.` for the root (what the kernel gets, and what policies match).
    pub fn as_str(&self) -> String {
        if self.components.is_empty() {
            ".".into()
        } else {
            self.components.join("/")
        }
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> String {
        let e = RelPath::parse(raw).unwrap_err();
        assert_eq!(e.kind, FsErrorKind::PathTraversal, "{raw:?}");
        e.message
    }

    #[test]
    fn plain_paths_normalise() {
        assert_eq!(RelPath::parse("a//b/./c/").unwrap().as_str(), "a/b/c");
        assert!(RelPath::parse("").unwrap().is_root());
        assert!(RelPath::parse(".").unwrap().is_root());
        assert!(RelPath::parse("./").unwrap().is_root());
        // Dots inside names are names.
        assert_eq!(RelPath::parse("...").unwrap().as_str(), "...");
        assert_eq!(RelPath::parse("a..b/.x").unwrap().as_str(), "a..b/.x");
    }

    #[test]
    fn what_can_never_be_inside_is_refused_with_a_reason() {
        assert_eq!(
            refused("../etc/passwd"),
            "../etc/passwd: `..` components are refused"
        );
        assert_eq!(
            refused("a/../../b"),
            "a/../../b: `..` components are refused"
        );
        // Even `..` that would stay inside: the kernel's word is the only one we trust.
        assert!(refused("a/b/../c").contains("`..`"));
        assert!(refused("/etc/shadow").contains("absolute paths are refused"));
        assert!(refused("a\0b").contains("NUL byte"));
        let long = "x".repeat(256);
        assert!(refused(&long).contains("component is 256 bytes long (at most 255 allowed)"));
        assert!(RelPath::parse(&"x".repeat(255)).is_ok());
        let deep = "a/".repeat(2048);
        assert!(refused(&deep).contains("the path is 4096 bytes long (at most 4095 allowed)"));
    }

    #[test]
    fn split_and_join() {
        let p = RelPath::parse("a/b/c").unwrap();
        let (parent, last) = p.split_last().unwrap();
        assert_eq!(parent.as_str(), "a/b");
        assert_eq!(last, "c");
        assert_eq!(parent.join("d").as_str(), "a/b/d");
        assert!(RelPath::parse("").unwrap().split_last().is_none());
    }
}
