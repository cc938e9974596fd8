//! The `[files]` section: what clients may do to files in a job's workspace over the socket.

use serde::Deserialize;
use stockade_sandbox::fsops::policy::{
    DEFAULT_DENIED_EXTENSIONS, DEFAULT_MAX_LIST_ENTRIES, DEFAULT_MAX_OP_BYTES,
};
use stockade_sandbox::fsops::{FilesPolicy, Glob};

/// Most entries one listing may be allowed to return.
const MAX_LIST_ENTRIES: u32 = 100_000;
/// Upper bound of `quota_mib`: 1 PiB.
const MAX_QUOTA_MIB: u64 = 1 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesFile {
    #[serde(default)]
    protected: Vec<String>,
    #[serde(default = "default_denied_extensions")]
    denied_extensions: Vec<String>,
    editable: Option<Vec<String>>,
    #[serde(default = "default_max_op_kib")]
    max_op_kib: u64,
    quota_mib: Option<u64>,
    #[serde(default = "yes")]
    follow_symlinks: bool,
    #[serde(default = "default_max_list_entries")]
    max_list_entries: u32,
}

impl Default for FilesFile {
    fn default() -> Self {
        FilesFile {
            protected: Vec::new(),
            denied_extensions: default_denied_extensions(),
            editable: None,
            max_op_kib: default_max_op_kib(),
            quota_mib: None,
            follow_symlinks: true,
            max_list_entries: DEFAULT_MAX_LIST_ENTRIES,
        }
    }
}

fn default_denied_extensions() -> Vec<String> {
    DEFAULT_DENIED_EXTENSIONS
        .iter()
        .map(|e| e.to_string())
        .collect()
}

fn default_max_op_kib() -> u64 {
    DEFAULT_MAX_OP_BYTES / 1024
}

fn default_max_list_entries() -> u32 {
    DEFAULT_MAX_LIST_ENTRIES
}

fn yes() -> bool {
    true
}

/// Validate into a policy; each problem goes to `problem(key, value, reason)`.
pub(crate) fn compile(f: FilesFile, problem: &mut dyn FnMut(&str, String, &str)) -> FilesPolicy {
    let mut globs = |key: &str, list: &[String]| -> Vec<Glob> {
        list.iter()
            .filter_map(|p| match Glob::new(p) {
                Ok(g) => Some(g),
                Err(e) => {
                    problem(key, format!("{p:?}"), &e);
                    None
                }
            })
            .collect()
    };
    let protected = globs("files.protected", &f.protected);
    let editable = f.editable.as_deref().map(|l| globs("files.editable", l));
    let mut denied_extensions = Vec::new();
    for e in &f.denied_extensions {
        let norm = e.trim_start_matches('.').to_ascii_lowercase();
        if norm.is_empty() || norm.contains(['/', '.', '\0']) {
            problem(
                "files.denied_extensions",
                format!("{e:?}"),
                "an extension is one non-empty name part without `/` or inner dots, like \"sh\"",
            );
        } else {
            denied_extensions.push(norm);
        }
    }
    let max_kib = DEFAULT_MAX_OP_BYTES / 1024;
    if f.max_op_kib == 0 || f.max_op_kib > max_kib {
        problem(
            "files.max_op_kib",
            f.max_op_kib.to_string(),
            &format!("must be between 1 and {max_kib} (a write travels in one protocol frame)"),
        );
    }
    if let Some(q) = f.quota_mib {
        if q == 0 || q > MAX_QUOTA_MIB {
            problem(
                "files.quota_mib",
                q.to_string(),
                &format!("must be between 1 and {MAX_QUOTA_MIB}; omit the key for no quota"),
            );
        }
    }
    if f.max_list_entries == 0 || f.max_list_entries > MAX_LIST_ENTRIES {
        problem(
            "files.max_list_entries",
            f.max_list_entries.to_string(),
            &format!("must be between 1 and {MAX_LIST_ENTRIES}"),
        );
    }
    FilesPolicy {
        protected,
        denied_extensions,
        editable,
        max_op_bytes: f.max_op_kib.min(max_kib) * 1024,
        quota_bytes: f.quota_mib.map(|m| m << 20),
        follow_symlinks: f.follow_symlinks,
        max_list_entries: f.max_list_entries,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{parse_profile, HostAccounts, ProfileSet};

    const MINIMAL: &str =
        "[identity]\nuid = 61000\ngid = 61000\n[limits]\nwall_timeout_secs = 60\n";

    fn errors(files: &str) -> Vec<String> {
        let text = format!("{MINIMAL}[files]\n{files}\n");
        match parse_profile(Path::new("p.toml"), "p", &text, &HostAccounts::none()) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn defaults_and_the_git_profile() {
        let set = ProfileSet::embedded(&HostAccounts::none()).unwrap();
        let agent = &set.get("agent").unwrap().files;
        assert!(agent.protected.is_empty() && agent.editable.is_none());
        assert_eq!(
            agent.denied_extensions,
            ["sh", "bash", "bat", "cmd", "ps1", "exe", "dll", "so"]
        );
        assert_eq!((agent.max_op_bytes, agent.quota_bytes), (960 * 1024, None));
        assert!(agent.follow_symlinks);
        let git = &set.get("git").unwrap().files;
        let pats: Vec<&str> = git.protected.iter().map(|g| g.as_str()).collect();
        assert_eq!(pats, [".git/hooks/**", ".git/config"]);
    }

    #[test]
    fn keys_are_validated_with_key_value_and_reason() {
        let text = format!(
            "{MINIMAL}[files]\nprotected = [\"a\"]\ndenied_extensions = [\".PY\", \"js\"]\n\
             editable = [\".env\"]\nmax_op_kib = 4\nquota_mib = 2\nfollow_symlinks = false\n"
        );
        let p = parse_profile(Path::new("p.toml"), "p", &text, &HostAccounts::none()).unwrap();
        assert_eq!(p.files.denied_extensions, ["py", "js"]);
        assert_eq!(p.files.max_op_bytes, 4096);
        assert_eq!(p.files.quota_bytes, Some(2 << 20));
        assert!(!p.files.follow_symlinks);
        assert_eq!(p.files.editable.as_ref().map(Vec::len), Some(1));

        assert_eq!(
            errors("protected = [\"/etc/passwd\"]"),
            ["p.toml: files.protected = \"/etc/passwd\": patterns are relative to the workspace; drop the leading `/`"]
        );
        assert_eq!(
            errors("max_op_kib = 2048"),
            ["p.toml: files.max_op_kib = 2048: must be between 1 and 960 (a write travels in one protocol frame)"]
        );
        assert!(errors("denied_extensions = [\"tar.gz\"]")[0].contains("files.denied_extensions"));
        assert!(errors("quota_mib = 0")[0].contains("files.quota_mib = 0"));
        assert!(errors("editable = [\"../x\"]")[0].contains("files.editable"));
        assert!(errors("max_list_entries = 0")[0].contains("files.max_list_entries"));
        assert!(errors("protcted = []")[0].contains("unknown field"));
    }
}
