//! Profiles: what each kind of job may do, as TOML, validated before anything is set up.
//!
//! A profile file is parsed with `deny_unknown_fields` at every level (a misspelt key must never
//! silently widen a policy), validated into a [`Profile`], and a job request can only narrow it
//! ([`Profile::resolve`]). The three default profiles (`agent`, `build`, `git`) are embedded in
//! the binary; `--profiles DIR` replaces the whole set, so what an operator sees in DIR is exactly
//! what runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use stockade_sandbox::fsops::FilesPolicy;
use stockade_sandbox::landlock::{FsAccess, FsRule, LandlockPlan};
use stockade_sandbox::seccomp::{CompiledSeccomp, SeccompPolicy};
pub use stockade_sandbox::Namespaces;

mod limits;
pub use limits::{HostLimits, HostNote};
pub mod explain;
mod files;
mod inherit;

pub use inherit::ELLIPSIS;

/// The default profiles shipped in the binary: (name, TOML text).
pub const EMBEDDED: [(&str, &str); 3] = [
    ("agent", include_str!("../defaults/agent.toml")),
    ("build", include_str!("../defaults/build.toml")),
    ("git", include_str!("../defaults/git.toml")),
];

/// Upper bound for any deadline: a week.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Upper bound for the grace period.
const MAX_GRACE_SECS: u64 = 300;
/// Upper bound for sizes given in MiB: 1 PiB (keeps `<< 20` far from overflow).
const MAX_MIB: u64 = 1 << 30;
/// The overflow uid/gid (`nobody`/`nogroup`): shared with every unmapped file on the host.
const OVERFLOW_ID: u32 = 65534;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: Option<String>,
    identity: IdentityFile,
    limits: LimitsFile,
    #[serde(default)]
    env: EnvFile,
    #[serde(default)]
    namespaces: NamespacesFile,
    #[serde(default)]
    filesystem: FilesystemFile,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    seccomp: SeccompPolicy,
    #[serde(default)]
    mechanisms: MechanismsFile,
    #[serde(default)]
    files: files::FilesFile,
    #[serde(default)]
    secrets: BTreeMap<String, SecretFile>,
}

/// `[secrets] NAME = { file = "...", env = "VAR" }`: a root-only file whose content the job gets
/// in an environment variable, and which is redacted from everything the job streams.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    file: String,
    env: String,
}

/// A secret a profile references: where stockade reads it and how the job gets it. The value is
/// read when a job starts, never at load, and never kept in the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    /// Name, shown in redactions as `[REDACTED:name]`.
    pub name: String,
    /// Absolute path of a regular file owned by root, not readable by group or others.
    pub file: PathBuf,
    /// Environment variable the job gets the value in.
    pub env: String,
}

/// Landlock filesystem rules. Every path not listed here (nor the workspace, nor the private
/// `/tmp` and `/dev/shm`) is denied for every access right the kernel knows. A trailing `?`
/// makes a path optional (skipped where the host lacks it, e.g. `/lib64` on arm64).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesystemFile {
    #[serde(default = "default_read_exec")]
    read_exec: Vec<String>,
    #[serde(default = "default_read_only")]
    read_only: Vec<String>,
    #[serde(default = "default_read_write")]
    read_write: Vec<String>,
}

impl Default for FilesystemFile {
    fn default() -> Self {
        FilesystemFile {
            read_exec: default_read_exec(),
            read_only: default_read_only(),
            read_write: default_read_write(),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn default_read_exec() -> Vec<String> {
    strings(&[
        "/usr", "/bin?", "/sbin?", "/lib?", "/lib64?", "/lib32?", "/etc",
    ])
}

fn default_read_only() -> Vec<String> {
    strings(&["/proc", "/dev/urandom", "/dev/random"])
}

fn default_read_write() -> Vec<String> {
    strings(&["/dev/null", "/dev/zero", "/dev/full"])
}

/// Landlock TCP rules (the job's own network namespace already has no route anywhere).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    #[serde(default)]
    tcp_connect: Vec<u16>,
    #[serde(default)]
    tcp_bind: Vec<u16>,
}

/// Whether each mechanism must be enforced.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MechanismsFile {
    #[serde(default)]
    landlock: Requirement,
    #[serde(default)]
    seccomp: Requirement,
    /// Cgroup limits (memory, pids, CPU time) and the workspace budget.
    #[serde(default)]
    limits: Requirement,
}

/// How a profile wants a mechanism.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// Refuse the job if the kernel cannot enforce it fully.
    #[default]
    Required,
    /// Enforce what the kernel can; report the rest.
    BestEffort,
    /// Do not apply it (shown in `explain` and in every enforcement report).
    Off,
}

/// Namespaces a job gets of its own. Every one defaults to on: a profile must opt out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesFile {
    #[serde(default = "yes")]
    net: bool,
    #[serde(default = "yes")]
    ipc: bool,
    #[serde(default = "yes")]
    uts: bool,
    #[serde(default = "yes")]
    cgroup: bool,
    #[serde(default = "yes")]
    mount: bool,
    #[serde(default = "yes")]
    pid: bool,
}

impl Default for NamespacesFile {
    fn default() -> Self {
        NamespacesFile {
            net: true,
            ipc: true,
            uts: true,
            cgroup: true,
            mount: true,
            pid: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    uid: u32,
    gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
// Signed, so that a negative value is refused by our validation naming the key, rather than by
// the TOML deserializer with a message that does not.
struct LimitsFile {
    wall_timeout_secs: i64,
    #[serde(default = "default_grace")]
    grace_secs: i64,
    memory_mib: Option<i64>,
    pids: Option<i64>,
    nofile: Option<i64>,
    fsize_mib: Option<i64>,
    #[serde(default = "default_tmp_mib")]
    tmp_mib: i64,
    #[serde(default = "default_shm_mib")]
    shm_mib: i64,
    cpu_secs: Option<i64>,
    idle_timeout_secs: Option<i64>,
    output_mib: Option<i64>,
    workspace_mib: Option<i64>,
}

fn default_grace() -> i64 {
    5
}

fn default_tmp_mib() -> i64 {
    256
}

fn default_shm_mib() -> i64 {
    64
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFile {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    allow: Vec<String>,
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Name (the file stem).
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// Uid jobs run as (never 0, never the overflow uid, never a host account).
    pub uid: u32,
    /// Gid jobs run as (never 0, never the overflow gid, never a host group).
    pub gid: u32,
    /// Wall-clock deadline.
    pub wall_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a job is ended.
    pub grace: Duration,
    /// Cgroup memory limit in bytes (no swap).
    pub memory_bytes: Option<u64>,
    /// Cgroup pids limit.
    pub pids: Option<u64>,
    /// RLIMIT_NOFILE.
    pub nofile: Option<u64>,
    /// RLIMIT_FSIZE in bytes.
    pub fsize_bytes: Option<u64>,
    /// Fixed environment.
    pub env_set: BTreeMap<String, String>,
    /// Names a request may add to the environment.
    pub env_allow: Vec<String>,
    /// Namespaces the job gets of its own.
    pub namespaces: Namespaces,
    /// Size of the private `/tmp` (with the mount namespace), bytes.
    pub tmp_bytes: u64,
    /// Size of the private `/dev/shm` (with the mount namespace), bytes.
    pub shm_bytes: u64,
    /// Host paths a job sees (its root is built from them) and, with Landlock, may access.
    pub fs: Vec<FsRule>,
    /// Landlock rules without the per-job paths (workspace, private `/tmp`); `None`: off.
    pub landlock: Option<LandlockPlan>,
    /// Seccomp filters, compiled at load; `None`: off.
    pub seccomp: Option<CompiledSeccomp>,
    /// CPU time of the whole job (its cgroup's usage), `limits.cpu_secs`.
    pub cpu_limit: Option<Duration>,
    /// No output for this long ends the job, `limits.idle_timeout_secs`.
    pub idle_timeout: Option<Duration>,
    /// Bytes of stdout + stderr delivered before the job is ended, `limits.output_mib`.
    pub output_limit_bytes: Option<u64>,
    /// Size of a fresh workspace (a tmpfs in the job's mount namespace), `limits.workspace_mib`.
    pub workspace_bytes: Option<u64>,
    /// `mechanisms.limits`: whether a limit this host cannot enforce refuses the profile.
    pub limits_requirement: Requirement,
    /// Limits this host cannot fully enforce, found by [`ProfileSet::check_host`] for a
    /// `best_effort` profile; each goes into every job's enforcement report.
    pub host_notes: Vec<HostNote>,
    /// The file the profile came from (for errors found after loading).
    pub file: PathBuf,
    /// What clients may do to files in this profile's workspaces (`[files]`).
    pub files: FilesPolicy,
    /// How Landlock and seccomp are wanted.
    pub mechanisms: Mechanisms,
    /// Secrets delivered to every job, by name.
    pub secrets: Vec<SecretRef>,
    /// The profiles this one inherits from, parent first (empty without `extends`).
    pub extends: Vec<String>,
    /// SHA-256 of the compiled policy (everything that decides what a job may do; not the name,
    /// description or inheritance chain), 64 hex digits. Every result record carries it.
    pub hash: String,
}

/// How a profile wants each mechanism that can be required or best effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mechanisms {
    /// `mechanisms.landlock`.
    pub landlock: Requirement,
    /// `mechanisms.seccomp`.
    pub seccomp: Requirement,
}

/// What a job request asks on top of its profile. It may only narrow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// A shorter deadline.
    pub timeout: Option<Duration>,
    /// Extra environment; names must be in the profile's `env.allow`.
    pub env: Vec<(String, String)>,
    /// A lower CPU-time limit.
    pub cpu_limit: Option<Duration>,
    /// A shorter idle timeout.
    pub idle_timeout: Option<Duration>,
    /// A lower output limit, bytes.
    pub output_limit_bytes: Option<u64>,
}

/// A profile narrowed by a request: what one job gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Wall-clock deadline.
    pub wall_timeout: Duration,
    /// Grace period.
    pub grace: Duration,
    /// Complete environment of the job.
    pub env: Vec<(String, String)>,
    /// CPU-time limit of the whole job.
    pub cpu_limit: Option<Duration>,
    /// Idle (no output) timeout.
    pub idle_timeout: Option<Duration>,
    /// Output limit, bytes of stdout + stderr.
    pub output_limit_bytes: Option<u64>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

impl Profile {
    /// Narrow this profile by a request, or refuse it naming the field.
    pub fn resolve(&self, req: &Overrides) -> Result<Resolved, Rejection> {
        let wall_timeout = match req.timeout {
            None => self.wall_timeout,
            Some(t) if t.is_zero() => {
                return Err(Rejection("timeout must be greater than 0".into()));
            }
            Some(t) if t > self.wall_timeout => {
                return Err(Rejection(format!(
                    "timeout {}s exceeds profile {}'s wall_timeout_secs = {} (a request may only shorten it)",
                    fmt_secs(t),
                    self.name,
                    self.wall_timeout.as_secs()
                )));
            }
            Some(t) => t,
        };
        let mut env: BTreeMap<String, String> = self.env_set.clone();
        for (k, v) in &req.env {
            if !self.env_allow.iter().any(|a| a == k) {
                return Err(Rejection(format!(
                    "environment variable {k} is not in profile {}'s env.allow {:?}",
                    self.name, self.env_allow
                )));
            }
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(Rejection(format!("invalid environment variable {k:?}")));
            }
            env.insert(k.clone(), v.clone());
        }
        if req.cpu_limit.is_some() {
            limits::host_can_enforce(self, "cgroup.cpu_time", "a CPU limit")?;
        }
        let cpu_limit = limits::narrow_duration(
            "CPU limit",
            "limits.cpu_secs",
            &self.name,
            self.cpu_limit,
            req.cpu_limit,
        )?;
        let idle_timeout = limits::narrow_duration(
            "idle timeout",
            "limits.idle_timeout_secs",
            &self.name,
            self.idle_timeout,
            req.idle_timeout,
        )?;
        let output_limit_bytes = limits::narrow_bytes(
            "output limit",
            "limits.output_mib",
            &self.name,
            self.output_limit_bytes,
            req.output_limit_bytes,
        )?;
        Ok(Resolved {
            wall_timeout,
            grace: self.grace,
            env: env.into_iter().collect(),
            cpu_limit,
            idle_timeout,
            output_limit_bytes,
        })
    }
}

fn fmt_secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", d.as_secs_f64())
    }
}

/// One problem with one profile: file, key, value and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// The profile file (or `<embedded>/NAME.toml`).
    pub file: PathBuf,
    /// Dotted key, if the problem is one key's.
    pub key: Option<String>,
    /// The offending value as written.
    pub value: Option<String>,
    /// Why it is wrong.
    pub reason: String,
    /// What the operator probably meant.
    pub hint: Option<String>,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match (&self.key, &self.value) {
            (Some(k), Some(v)) => write!(f, ": {k} = {v}")?,
            (Some(k), None) => write!(f, ": {k}")?,
            _ => {}
        }
        write!(f, ": {}", self.reason)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found while loading a profile set (all of them, not just the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileErrors {}

/// Host accounts a profile's uid/gid must not collide with (from /etc/passwd and /etc/group),
/// and which filesystem paths exist.
#[derive(Debug, Clone, Default)]
pub struct HostAccounts {
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
    /// `None`: ask the real filesystem; `Some`: only these paths exist (for tests, so a loaded
    /// profile does not depend on the host).
    paths: Option<std::collections::BTreeSet<PathBuf>>,
}

impl HostAccounts {
    /// Read `passwd` and `group` files (normally `/etc/passwd`, `/etc/group`). A missing file
    /// counts as empty.
    pub fn read(passwd: &Path, group: &Path) -> HostAccounts {
        HostAccounts {
            users: parse_ids(passwd),
            groups: parse_ids(group),
            paths: None,
        }
    }

    /// No accounts (for tests).
    pub fn none() -> HostAccounts {
        HostAccounts::default()
    }

    /// The same host, but only `paths` exist (for tests: loads that do not depend on this host).
    pub fn with_paths<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, paths: I) -> Self {
        self.paths = Some(paths.into_iter().map(Into::into).collect());
        self
    }

    fn exists(&self, path: &Path) -> bool {
        match &self.paths {
            None => path.exists(),
            Some(set) => set.contains(path),
        }
    }
}

fn parse_ids(path: &Path) -> BTreeMap<u32, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((id, name.to_string()))
        })
        .collect()
}

/// A loaded, validated set of profiles.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Profile>,
    source: String,
}

impl ProfileSet {
    /// The embedded default profiles.
    pub fn embedded(accounts: &HostAccounts) -> Result<ProfileSet, ProfileErrors> {
        Self::from_texts(
            embedded_files(),
            &BTreeMap::new(),
            accounts,
            "embedded defaults".into(),
        )
    }

    /// Every `*.toml` file in `dir` (the embedded defaults are not included, but a profile may
    /// extend one of them).
    pub fn load_dir(dir: &Path, accounts: &HostAccounts) -> Result<ProfileSet, ProfileErrors> {
        let err = |reason: String| {
            ProfileErrors(vec![ProfileError {
                file: dir.to_path_buf(),
                key: None,
                value: None,
                reason,
                hint: None,
            }])
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| err(format!("cannot read profile directory: {e}")))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| err(format!("cannot read profile directory: {e}")))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let Some(name) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ProfileErrors(vec![ProfileError {
                    file: path.clone(),
                    key: None,
                    value: None,
                    reason: format!("cannot read: {e}"),
                    hint: None,
                }])
            })?;
            files.push((path, name, text));
        }
        if files.is_empty() {
            return Err(err("no *.toml profiles in this directory".into()));
        }
        files.sort();
        Self::from_texts(
            files,
            &embedded_sources(),
            accounts,
            dir.display().to_string(),
        )
    }

    fn from_texts(
        files: Vec<(PathBuf, String, String)>,
        fallback: &BTreeMap<String, inherit::Source>,
        accounts: &HostAccounts,
        source: String,
    ) -> Result<ProfileSet, ProfileErrors> {
        let (profiles, errors) = load_files(files, fallback, accounts);
        if errors.is_empty() {
            Ok(ProfileSet { profiles, source })
        } else {
            Err(ProfileErrors(errors))
        }
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Profile names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    /// Where the set came from (a directory, or "embedded defaults").
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The error message for an unknown profile name.
    pub fn unknown(&self, name: &str) -> Rejection {
        Rejection(format!(
            "unknown profile {name:?} (profiles from {}: {})",
            self.source,
            self.names().join(", ")
        ))
    }
}

/// Parse and validate one profile; every problem is reported. Its `extends` parent, if any, is
/// looked up among the embedded defaults.
pub fn parse_profile(
    path: &Path,
    name: &str,
    text: &str,
    accounts: &HostAccounts,
) -> Result<Profile, Vec<ProfileError>> {
    let files = vec![(path.to_path_buf(), name.to_string(), text.to_string())];
    let (mut profiles, errors) = load_files(files, &embedded_sources(), accounts);
    match profiles.remove(name) {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(errors),
    }
}

fn embedded_files() -> Vec<(PathBuf, String, String)> {
    EMBEDDED
        .iter()
        .map(|(name, text)| {
            (
                PathBuf::from(format!("<embedded>/{name}.toml")),
                name.to_string(),
                text.to_string(),
            )
        })
        .collect()
}

fn embedded_sources() -> BTreeMap<String, inherit::Source> {
    embedded_files()
        .into_iter()
        .map(|(path, name, text)| {
            let table = parse_table(&path, &text).map_err(|_| ());
            (name, inherit::Source { path, table })
        })
        .collect()
}

/// Parse, resolve `extends` and validate every file; parents missing from `files` come from
/// `fallback`. Returns the profiles that are fine and every error.
fn load_files(
    files: Vec<(PathBuf, String, String)>,
    fallback: &BTreeMap<String, inherit::Source>,
    accounts: &HostAccounts,
) -> (BTreeMap<String, Profile>, Vec<ProfileError>) {
    let mut errors = Vec::new();
    let mut local = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for (path, name, text) in files {
        let table = parse_table(&path, &text).map_err(|e| errors.push(e));
        local.insert(name.clone(), inherit::Source { path, table });
        texts.insert(name, text);
    }
    let scope = inherit::Scope {
        local: &local,
        fallback,
    };
    let mut profiles = BTreeMap::new();
    for (name, src) in &local {
        if src.table.is_err() {
            continue;
        }
        let (table, chain) = match inherit::resolve(&scope, name) {
            Ok(x) => x,
            Err(mut e) => {
                errors.append(&mut e);
                continue;
            }
        };
        match compile(&src.path, name, table, &chain[1..], &texts[name], accounts) {
            Ok(p) => {
                profiles.insert(name.clone(), p);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    (profiles, errors)
}

/// TOML syntax only; the line of the problem is in the reason.
fn parse_table(path: &Path, text: &str) -> Result<toml::Table, ProfileError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ProfileError {
            file: path.to_path_buf(),
            key: None,
            value: None,
            reason: format!("{}{at}", e.message().trim_end().replace('\n', "; ")),
            hint: None,
        }
    })
}

/// The documented default of a list key (what `"..."` stands for when no ancestor sets it).
pub(crate) fn default_list(dotted: &str) -> Vec<String> {
    match dotted {
        "filesystem.read_exec" => default_read_exec(),
        "filesystem.read_only" => default_read_only(),
        "filesystem.read_write" => default_read_write(),
        _ => Vec::new(),
    }
}

/// Validate and compile one complete (inherited) profile table.
fn compile(
    path: &Path,
    name: &str,
    table: toml::Table,
    ancestors: &[String],
    text: &str,
    accounts: &HostAccounts,
) -> Result<Profile, Vec<ProfileError>> {
    let mut errors = Vec::new();
    let mut problem = |key: &str, value: String, reason: &str, hint: Option<&str>| {
        errors.push(ProfileError {
            file: path.to_path_buf(),
            key: Some(key.to_string()),
            value: Some(value),
            reason: reason.to_string(),
            hint: hint.map(str::to_string),
        })
    };
    // Deserialize from the merged table's own TOML text: its spans tell which key a type error
    // is about, even when the value was inherited.
    let canon = toml::to_string(&table).unwrap_or_default();
    let file: ProfileFile = match toml::from_str(&canon) {
        Ok(f) => f,
        Err(e) => return Err(vec![schema_error(path, text, &canon, &e)]),
    };

    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problem(
            "name",
            format!("{name:?}"),
            "profile names (file stems) may use only [A-Za-z0-9_-]",
            None,
        );
    }
    let id = &file.identity;
    for (key, value, host) in [
        ("identity.uid", id.uid, &accounts.users),
        ("identity.gid", id.gid, &accounts.groups),
    ] {
        if value == 0 {
            problem(
                key,
                value.to_string(),
                "jobs never run as root",
                Some("pick an unused id from a dedicated range such as 61000-61999"),
            );
        } else if value == OVERFLOW_ID {
            problem(
                key,
                value.to_string(),
                "the overflow id (nobody/nogroup) is shared with every unmapped file on the host",
                Some("pick an unused id from a dedicated range such as 61000-61999"),
            );
        } else if let Some(account) = host.get(&value) {
            problem(key, value.to_string(), &format!("already belongs to host account {account:?}; a job would share its files and processes"), Some("pick an id no host account uses"));
        }
    }
    let l = limits::validate(&file.limits, file.namespaces.mount, &mut problem);
    limits::check_requirement(file.mechanisms.limits, &mut problem);
    for (k, v) in &file.env.set {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            problem(
                &format!("env.set.{k}"),
                format!("{v:?}"),
                "names may not be empty or contain '=' or NUL; values may not contain NUL",
                None,
            );
        }
    }
    for k in &file.env.allow {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            problem(
                "env.allow",
                format!("{k:?}"),
                "names may not be empty or contain '=' or NUL",
                None,
            );
        }
    }
    let mut fs_rules = Vec::new();
    for (key, list, access) in [
        (
            "filesystem.read_exec",
            &file.filesystem.read_exec,
            FsAccess::ReadExec,
        ),
        (
            "filesystem.read_only",
            &file.filesystem.read_only,
            FsAccess::ReadOnly,
        ),
        (
            "filesystem.read_write",
            &file.filesystem.read_write,
            FsAccess::ReadWrite,
        ),
    ] {
        for entry in list {
            let (path, optional) = match entry.strip_suffix('?') {
                Some(p) => (Path::new(p), true),
                None => (Path::new(entry.as_str()), false),
            };
            if !path.is_absolute()
                || path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                let hint = (!path.is_absolute())
                    .then(|| format!("paths are absolute: did you mean \"/{entry}\"?"));
                problem(
                    key,
                    format!("{entry:?}"),
                    "must be an absolute path without `..`",
                    hint.as_deref(),
                );
            } else if accounts.exists(path) {
                fs_rules.push(FsRule {
                    path: path.to_path_buf(),
                    access,
                });
            } else if !optional {
                problem(
                    key,
                    format!("{entry:?}"),
                    "does not exist on this host",
                    Some("append `?` to skip a path that some hosts lack"),
                );
            }
        }
    }
    let mut secrets = Vec::new();
    // Without its own pid namespace and /proc, a job sees the other jobs of its uid in /proc.
    let shared_proc = !file.namespaces.pid || !file.namespaces.mount;
    if !file.secrets.is_empty() && shared_proc {
        let names: Vec<&str> = file.secrets.keys().map(String::as_str).collect();
        problem(
            "secrets",
            format!("{names:?}"),
            "needs namespaces.pid and namespaces.mount: without its own pid namespace and /proc, another job of the same uid could read a secret from /proc/PID/environ",
            Some("set namespaces.pid = true and namespaces.mount = true (the defaults)"),
        );
    }
    for (name, s) in &file.secrets {
        let key = format!("secrets.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problem(
                &key,
                format!("{name:?}"),
                "secret names may use only [A-Za-z0-9_-]",
                None,
            );
            continue;
        }
        let mut ok = true;
        if s.env.is_empty()
            || !s.env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || s.env.starts_with(|c: char| c.is_ascii_digit())
        {
            problem(
                &format!("{key}.env"),
                format!("{:?}", s.env),
                "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                None,
            );
            ok = false;
        } else if file.env.set.contains_key(&s.env) {
            problem(
                &format!("{key}.env"),
                format!("{:?}", s.env),
                "is also in env.set: the job would get one of two values",
                Some("remove it from env.set"),
            );
            ok = false;
        } else if file.env.allow.contains(&s.env) {
            problem(
                &format!("{key}.env"),
                format!("{:?}", s.env),
                "is also in env.allow: a request could replace the secret",
                Some("remove it from env.allow"),
            );
            ok = false;
        } else if let Some(other) = secrets.iter().find(|o: &&SecretRef| o.env == s.env) {
            problem(
                &format!("{key}.env"),
                format!("{:?}", s.env),
                &format!("secret {} already uses this variable", other.name),
                None,
            );
            ok = false;
        }
        let path = Path::new(&s.file);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            problem(
                &format!("{key}.file"),
                format!("{:?}", s.file),
                "must be an absolute path without `..`",
                None,
            );
            ok = false;
        } else if let Err(reason) = check_secret_file(path) {
            problem(&format!("{key}.file"), format!("{:?}", s.file), &reason, Some("secret files are regular files owned by root with mode 0600 or 0400 (chown root:root; chmod 600)"));
            ok = false;
        }
        if ok {
            secrets.push(SecretRef {
                name: name.clone(),
                file: path.to_path_buf(),
                env: s.env.clone(),
            });
        }
    }
    let landlock = match file.mechanisms.landlock {
        Requirement::Off => None,
        r => Some(LandlockPlan {
            fs: fs_rules.clone(),
            tcp_connect: file.network.tcp_connect.clone(),
            tcp_bind: file.network.tcp_bind.clone(),
            scope_signals: true,
            scope_abstract_unix: true,
            required: r == Requirement::Required,
        }),
    };
    let seccomp = match file.mechanisms.seccomp {
        Requirement::Off => None,
        Requirement::BestEffort => {
            problem(
                "mechanisms.seccomp",
                "\"best_effort\"".into(),
                "seccomp is either installed or the job is refused",
                Some("use \"required\" or \"off\""),
            );
            None
        }
        Requirement::Required => match stockade_sandbox::seccomp::compile(&file.seccomp) {
            Ok(c) => Some(c),
            Err(e) => {
                let (key, value, hint) = seccomp_error_key(&file.seccomp, &e);
                problem(key, value, &e.to_string(), hint);
                None
            }
        },
    };
    let files = files::compile(file.files, &mut |key, value, reason| {
        problem(key, value, reason, None)
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut profile = Profile {
        name: name.to_string(),
        description: file.description.unwrap_or_default(),
        uid: id.uid,
        gid: id.gid,
        wall_timeout: l.wall_timeout,
        grace: l.grace,
        memory_bytes: l.memory_bytes,
        pids: l.pids,
        nofile: l.nofile,
        fsize_bytes: l.fsize_bytes,
        env_set: file.env.set,
        env_allow: file.env.allow,
        namespaces: Namespaces {
            net: file.namespaces.net,
            ipc: file.namespaces.ipc,
            uts: file.namespaces.uts,
            cgroup: file.namespaces.cgroup,
            mount: file.namespaces.mount,
            pid: file.namespaces.pid,
        },
        tmp_bytes: l.tmp_bytes,
        shm_bytes: l.shm_bytes,
        fs: fs_rules,
        landlock,
        seccomp,
        cpu_limit: l.cpu_limit,
        idle_timeout: l.idle_timeout,
        output_limit_bytes: l.output_limit_bytes,
        workspace_bytes: l.workspace_bytes,
        limits_requirement: file.mechanisms.limits,
        host_notes: Vec::new(),
        file: path.to_path_buf(),
        files,
        mechanisms: Mechanisms {
            landlock: file.mechanisms.landlock,
            seccomp: file.mechanisms.seccomp,
        },
        extends: ancestors.to_vec(),
        secrets,
        hash: String::new(),
    };
    profile.hash = explain::policy_hash(&profile);
    Ok(profile)
}

/// Largest secret stockade reads (redaction holds back less than this many bytes of output).
pub const MAX_SECRET_BYTES: u64 = 4096;
/// Shortest secret: a shorter value would be redacted from ordinary output, and is guessable.
pub const MIN_SECRET_BYTES: u64 = 8;

/// A secret file must be a regular file owned by root that neither group nor others can read or
/// write, at most [`MAX_SECRET_BYTES`]. Checked at load (metadata only, no read) and again,
/// on the open file, when a job starts. Symlinks are not followed.
pub fn check_secret_file(path: &Path) -> Result<(), String> {
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    check_secret_metadata(&m)
}

/// The checks of [`check_secret_file`] on metadata (of an open file, say).
pub fn check_secret_metadata(m: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !m.file_type().is_file() {
        return Err("is not a regular file (symlinks are not followed)".into());
    }
    if m.uid() != 0 {
        return Err(format!("is owned by uid {}, not root", m.uid()));
    }
    if m.mode() & 0o077 != 0 {
        return Err(format!(
            "has mode {:04o}: group or others may access it",
            m.mode() & 0o7777
        ));
    }
    if m.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "is {} bytes, more than the {MAX_SECRET_BYTES} a secret may have",
            m.len()
        ));
    }
    Ok(())
}

/// Which key a seccomp compile error is about, the value, and a hint.
fn seccomp_error_key(
    policy: &SeccompPolicy,
    err: &stockade_sandbox::seccomp::SeccompError,
) -> (&'static str, String, Option<&'static str>) {
    use stockade_sandbox::seccomp::{SeccompError, SeccompMode};
    let name = match err {
        SeccompError::UnknownSyscall { name, .. }
        | SeccompError::Essential { name, .. }
        | SeccompError::NamespaceCallAllowed { name } => Some(name.clone()),
        _ => None,
    };
    let hint = matches!(err, SeccompError::UnknownSyscall { .. }).then_some(
        "system call names are those of syscalls(2), without a sys_ prefix (e.g. \"ptrace\", \"process_vm_readv\")",
    );
    let Some(name) = name else {
        return ("seccomp", format!("{:?}", policy.mode), None);
    };
    let key = if policy.extra_deny.contains(&name) {
        "seccomp.extra_deny"
    } else if matches!(&policy.mode, SeccompMode::AllowList { allow } if allow.contains(&name)) {
        "seccomp.mode.allow_list.allow"
    } else {
        "seccomp"
    };
    (key, format!("{name:?}"), hint)
}

/// Every table and its keys, for hints about a key in the wrong table or misspelt.
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "description",
            "extends",
            "identity",
            "limits",
            "env",
            "namespaces",
            "filesystem",
            "network",
            "seccomp",
            "mechanisms",
            "files",
            "secrets",
        ],
    ),
    ("identity", &["uid", "gid"]),
    (
        "limits",
        &[
            "wall_timeout_secs",
            "grace_secs",
            "memory_mib",
            "pids",
            "nofile",
            "fsize_mib",
            "tmp_mib",
            "shm_mib",
            "cpu_secs",
            "idle_timeout_secs",
            "output_mib",
            "workspace_mib",
        ],
    ),
    ("env", &["set", "allow"]),
    (
        "namespaces",
        &["net", "ipc", "uts", "cgroup", "mount", "pid"],
    ),
    ("filesystem", &["read_exec", "read_only", "read_write"]),
    ("network", &["tcp_connect", "tcp_bind"]),
    (
        "seccomp",
        &["mode", "extra_deny", "allow_namespaces", "deny_action"],
    ),
    ("mechanisms", &["landlock", "seccomp", "limits"]),
    (
        "files",
        &[
            "protected",
            "denied_extensions",
            "editable",
            "max_op_kib",
            "quota_mib",
            "follow_symlinks",
            "max_list_entries",
        ],
    ),
    ("secrets.NAME", &["file", "env"]),
];

/// A schema error (unknown or missing key, wrong type or value) with its dotted key and value
/// where they can be found, the line in the profile's own text, and a hint for the usual
/// mistakes. `canon` is the merged table as TOML, which `err`'s span points into.
fn schema_error(path: &Path, text: &str, canon: &str, err: &toml::de::Error) -> ProfileError {
    let message = err.message().trim_end().replace('\n', "; ");
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|r| r.split('`').next())
            .map(str::to_string)
    };
    let unknown = quoted("unknown field `");
    let missing = quoted("missing field `");
    let (mut key, mut value) = (None, None);
    if let (None, Some(span)) = (&unknown, err.span()) {
        if let Some((k, v)) = key_at(canon, span) {
            key = Some(k);
            value = Some(v);
        }
    }
    let line_key = unknown.clone().or_else(|| {
        key.as_deref()
            .map(|k| k.rsplit('.').next().unwrap_or(k).to_string())
    });
    let line = line_key
        .as_deref()
        .and_then(|k| line_of_key(text, k))
        .map(|l| format!(" (line {l})"))
        .unwrap_or_default();
    let hint = if let Some(k) = &unknown {
        Some(unknown_key_hint(k, &message))
    } else if let Some(k) = &missing {
        let homes: Vec<&str> = SCHEMA
            .iter()
            .filter(|(_, keys)| keys.contains(&k.as_str()))
            .map(|(t, _)| *t)
            .collect();
        Some(match (k.as_str(), homes.as_slice()) {
            ("identity" | "limits", _) => {
                format!("every profile needs [{k}], its own or from the profile it extends")
            }
            (_, [table]) if !table.is_empty() => format!("add `{k}` to [{table}]"),
            _ => format!("add `{k}` (see docs/profiles.md)"),
        })
    } else if message.starts_with("invalid type: string") {
        Some("numbers and booleans are written without quotes".to_string())
    } else {
        None
    };
    ProfileError {
        file: path.to_path_buf(),
        key,
        value,
        reason: format!("{message}{line}"),
        hint,
    }
}

/// The dotted key and the value text of the `key = value` line of `canon` that `span` points
/// into (`toml::to_string` writes one key per line under `[table]` headers).
fn key_at(canon: &str, span: std::ops::Range<usize>) -> Option<(String, String)> {
    let start = span.start.min(canon.len());
    let line_start = canon[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = canon[start..].find('\n').map_or(canon.len(), |i| start + i);
    let (k, _) = canon[line_start..line_end].split_once('=')?;
    let table = canon[..line_start]
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string());
    let k = k.trim().trim_matches('"');
    let dotted = match table {
        Some(t) => format!("{t}.{k}"),
        None => k.to_string(),
    };
    let end = span.end.min(canon.len()).max(start);
    Some((dotted, canon[start..end].trim().to_string()))
}

/// A hint for an unknown key: where it belongs, or what it may be a misspelling of. `message`
/// (serde's "expected one of `a`, `b`") tells which table the key was found in.
fn unknown_key_hint(key: &str, message: &str) -> String {
    let generic = "see docs/profiles.md for every key; unknown keys are refused so a typo cannot widen a policy";
    let expected: Vec<&str> = message
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let here = SCHEMA
        .iter()
        .find(|(_, keys)| !expected.is_empty() && expected.iter().all(|e| keys.contains(e)))
        .map(|(table, _)| *table);
    let homes: Vec<&str> = SCHEMA
        .iter()
        .filter(|(_, keys)| keys.contains(&key))
        .map(|(table, _)| *table)
        .collect();
    if let Some(table) = homes.first() {
        let home = if table.is_empty() {
            "the top of the file, before any [table]".to_string()
        } else {
            format!("[{table}]")
        };
        return match here {
            Some("") => format!("`{key}` is not a top-level key; it belongs in {home}"),
            Some(here) => format!("`{key}` is not a key of [{here}]; it belongs in {home}"),
            None => format!("`{key}` belongs in {home}"),
        };
    }
    let close = SCHEMA
        .iter()
        .flat_map(|(table, keys)| keys.iter().map(move |k| (*table, *k)))
        .filter(|(_, k)| edit_distance(k, key) <= 2)
        .map(|(t, k)| {
            if t.is_empty() {
                k.to_string()
            } else {
                format!("{t}.{k}")
            }
        })
        .collect::<Vec<_>>();
    if close.is_empty() {
        generic.to_string()
    } else {
        format!("did you mean {}? {generic}", close.join(" or "))
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The 1-based line where `key` is set (`key = ...`) or opens a table (`[... key]`).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let assigned = l
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='));
            let header = l.starts_with('[')
                && l.trim_end()
                    .trim_end_matches(']')
                    .rsplit(['.', '['])
                    .next()
                    .is_some_and(|last| last.trim() == key);
            assigned || header
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests;
