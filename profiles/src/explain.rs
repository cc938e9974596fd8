//! `stockade profiles explain`: the concrete plan a profile gives a job, after inheritance, and
//! the content hash of that plan.
//!
//! [`Explain`] is what `--json` prints; [`Explain::text`] is the human form. Its `policy` part is
//! exactly what [`policy_hash`] hashes: everything that decides what a job may do (identity,
//! limits, namespaces, environment, paths with rights, network rules, the seccomp program's own
//! hash and requirement levels), and nothing that does not (name, description, inheritance
//! chain). Two profiles with equal hashes confine their jobs alike; a result record's
//! `profile_hash` names the policy a job ran under.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};
use stockade_sandbox::Namespaces;

use crate::{Mechanisms, Profile};

/// A profile as `explain` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    /// Profile name.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// Parents, nearest first.
    pub extends: Vec<String>,
    /// [`policy_hash`] of `policy`.
    pub hash: String,
    /// What a job gets.
    pub policy: Policy,
}

/// Everything that decides what a job may do.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// Uid jobs run as.
    pub uid: u32,
    /// Gid jobs run as.
    pub gid: u32,
    /// Deadlines and resource limits.
    pub limits: Limits,
    /// Namespaces of its own.
    pub namespaces: Namespaces,
    /// Fixed environment.
    pub env_set: BTreeMap<String, String>,
    /// Names a request may add.
    pub env_allow: Vec<String>,
    /// Host paths the job sees, with rights (besides its workspace and private `/tmp`, `/dev/shm`).
    pub paths: Vec<PathRule>,
    /// TCP ports the job may connect to (Landlock).
    pub tcp_connect: Vec<u16>,
    /// TCP ports the job may bind (Landlock).
    pub tcp_bind: Vec<u16>,
    /// Whether Landlock and seccomp are required, best effort or off.
    pub mechanisms: Mechanisms,
    /// The compiled seccomp program, if seccomp is on.
    pub seccomp: Option<Seccomp>,
    /// Secrets (names, files, variables; never values).
    pub secrets: Vec<crate::SecretRef>,
    /// What clients may do to files in the job's workspace (`[files]`).
    pub files: Files,
}

/// `[files]`, as written.
#[derive(Debug, Clone, Serialize)]
pub struct Files {
    /// Globs clients may never modify.
    pub protected: Vec<String>,
    /// Extensions clients may not write.
    pub denied_extensions: Vec<String>,
    /// If set, the only globs clients may modify.
    pub editable: Option<Vec<String>>,
    /// Largest write or append, bytes.
    pub max_op_bytes: u64,
    /// Workspace quota for client writes, bytes.
    pub quota_bytes: Option<u64>,
    /// Whether reads follow symlinks that stay inside.
    pub follow_symlinks: bool,
    /// Most entries one listing returns.
    pub max_list_entries: u32,
}

/// Limits in the units the profile uses.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Wall-clock deadline.
    pub wall_timeout_secs: u64,
    /// SIGTERM → SIGKILL grace period.
    pub grace_secs: u64,
    /// Cgroup memory limit.
    pub memory_mib: Option<u64>,
    /// Cgroup pids limit.
    pub pids: Option<u64>,
    /// RLIMIT_NOFILE.
    pub nofile: Option<u64>,
    /// RLIMIT_FSIZE.
    pub fsize_mib: Option<u64>,
    /// Private `/tmp` size.
    pub tmp_mib: u64,
    /// Private `/dev/shm` size.
    pub shm_mib: u64,
    /// CPU time of the whole job.
    pub cpu_secs: Option<u64>,
    /// No output for this long ends the job.
    pub idle_timeout_secs: Option<u64>,
    /// stdout + stderr bytes delivered before the job is ended.
    pub output_bytes: Option<u64>,
    /// Size of a fresh workspace (a tmpfs).
    pub workspace_mib: Option<u64>,
    /// `mechanisms.limits`.
    pub requirement: &'static str,
}

/// One path and its rights.
#[derive(Debug, Clone, Serialize)]
pub struct PathRule {
    /// Absolute host path.
    pub path: String,
    /// `read_exec`, `read_only` or `read_write`.
    pub access: &'static str,
}

/// The seccomp program.
#[derive(Debug, Clone, Serialize)]
pub struct Seccomp {
    /// FNV-1a 64 of the BPF instructions.
    pub program_hash: String,
    /// What is denied and how, one line each.
    pub summary: Vec<String>,
}

impl Explain {
    /// The explanation of a loaded profile.
    pub fn of(profile: &Profile) -> Explain {
        Explain {
            name: profile.name.clone(),
            description: profile.description.clone(),
            extends: profile.extends.clone(),
            hash: profile.hash.clone(),
            policy: policy(profile),
        }
    }

    /// The human form: one section per concern, stable order (golden-tested).
    pub fn text(&self) -> String {
        let p = &self.policy;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("profile {}", self.name));
        if !self.description.is_empty() {
            line(format!("  {}", self.description));
        }
        if !self.extends.is_empty() {
            line(format!("extends {}", self.extends.join(" -> ")));
        }
        line(format!("hash sha256:{}", self.hash));
        line(format!("identity uid {} gid {}", p.uid, p.gid));
        let l = &p.limits;
        let opt = |v: Option<u64>, unit: &str| match v {
            Some(v) => format!("{v}{unit}"),
            None => "no limit".into(),
        };
        line("limits".into());
        line(format!("  wall_timeout  {}s", l.wall_timeout_secs));
        line(format!("  grace         {}s", l.grace_secs));
        line(format!("  memory        {}", opt(l.memory_mib, " MiB")));
        line(format!("  pids          {}", opt(l.pids, "")));
        line(format!("  nofile        {}", opt(l.nofile, "")));
        line(format!("  fsize         {}", opt(l.fsize_mib, " MiB")));
        line(format!("  tmp           {} MiB", l.tmp_mib));
        line(format!("  shm           {} MiB", l.shm_mib));
        line(format!("  cpu           {}", opt(l.cpu_secs, "s")));
        line(format!("  idle_timeout  {}", opt(l.idle_timeout_secs, "s")));
        line(format!("  output        {}", opt(l.output_bytes, " bytes")));
        line(format!("  workspace     {}", opt(l.workspace_mib, " MiB")));
        line(format!("  (limits {})", l.requirement));
        let ns = p.namespaces;
        let (own, shared): (Vec<_>, Vec<_>) = [
            ("net", ns.net),
            ("ipc", ns.ipc),
            ("uts", ns.uts),
            ("cgroup", ns.cgroup),
            ("mount", ns.mount),
            ("pid", ns.pid),
        ]
        .into_iter()
        .partition(|(_, on)| *on);
        let names = |v: Vec<(&str, bool)>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
            }
        };
        line(format!(
            "namespaces own: {}; shared with the host: {}",
            names(own),
            names(shared)
        ));
        line("environment".into());
        for (k, v) in &p.env_set {
            line(format!("  set    {k}={v}"));
        }
        line(format!(
            "  allow  {}",
            if p.env_allow.is_empty() {
                "(none)".to_string()
            } else {
                p.env_allow.join(" ")
            }
        ));
        line("  also   HOME=<workspace> unless set above".into());
        for s in &p.secrets {
            line(format!(
                "  secret {}=<{}> from {} (redacted from output as [REDACTED:{}])",
                s.env,
                s.name,
                s.file.display(),
                s.name
            ));
        }
        line(format!(
            "filesystem (landlock {})",
            requirement(p.mechanisms.landlock)
        ));
        for r in &p.paths {
            line(format!("  {:<10} {}", r.access, r.path));
        }
        line("  read_write <workspace>, private /tmp and /dev/shm".into());
        let ports = |v: &[u16]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(u16::to_string).collect::<Vec<_>>().join(" ")
            }
        };
        line(format!(
            "network tcp_connect: {}; tcp_bind: {}",
            ports(&p.tcp_connect),
            ports(&p.tcp_bind)
        ));
        match &p.seccomp {
            None => line(format!("seccomp {}", requirement(p.mechanisms.seccomp))),
            Some(s) => {
                line(format!(
                    "seccomp {} program {}",
                    requirement(p.mechanisms.seccomp),
                    s.program_hash
                ));
                for l in &s.summary {
                    line(format!("  {l}"));
                }
            }
        }
        let f = &p.files;
        let globs = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        line("files (client operations over the socket)".into());
        line(format!("  protected          {}", globs(&f.protected)));
        line(format!(
            "  denied_extensions  {}",
            globs(&f.denied_extensions)
        ));
        line(format!(
            "  editable           {}",
            f.editable
                .as_deref()
                .map_or("everything".to_string(), globs)
        ));
        line(format!("  max_op             {} bytes", f.max_op_bytes));
        line(format!(
            "  quota              {}",
            opt(f.quota_bytes, " bytes")
        ));
        line(format!("  follow_symlinks    {}", f.follow_symlinks));
        line(format!("  max_list_entries   {}", f.max_list_entries));
        out
    }
}

fn requirement(r: crate::Requirement) -> &'static str {
    match r {
        crate::Requirement::Required => "required",
        crate::Requirement::BestEffort => "best_effort",
        crate::Requirement::Off => "off",
    }
}

fn policy(p: &Profile) -> Policy {
    let mib = |b: u64| b >> 20;
    let (tcp_connect, tcp_bind) = match &p.landlock {
        Some(l) => (l.tcp_connect.clone(), l.tcp_bind.clone()),
        None => (Vec::new(), Vec::new()),
    };
    Policy {
        uid: p.uid,
        gid: p.gid,
        limits: Limits {
            wall_timeout_secs: p.wall_timeout.as_secs(),
            grace_secs: p.grace.as_secs(),
            memory_mib: p.memory_bytes.map(mib),
            pids: p.pids,
            nofile: p.nofile,
            fsize_mib: p.fsize_bytes.map(mib),
            tmp_mib: mib(p.tmp_bytes),
            shm_mib: mib(p.shm_bytes),
            cpu_secs: p.cpu_limit.map(|d| d.as_secs()),
            idle_timeout_secs: p.idle_timeout.map(|d| d.as_secs()),
            output_bytes: p.output_limit_bytes,
            workspace_mib: p.workspace_bytes.map(mib),
            requirement: requirement(p.limits_requirement),
        },
        namespaces: p.namespaces,
        env_set: p.env_set.clone(),
        env_allow: p.env_allow.clone(),
        paths: p
            .fs
            .iter()
            .map(|r| PathRule {
                path: r.path.display().to_string(),
                access: r.access.name(),
            })
            .collect(),
        tcp_connect,
        tcp_bind,
        mechanisms: p.mechanisms,
        seccomp: p.seccomp.as_ref().map(|s| Seccomp {
            program_hash: s.hash.clone(),
            summary: s.summary.clone(),
        }),
        secrets: p.secrets.clone(),
        files: Files {
            protected: p
                .files
                .protected
                .iter()
                .map(|g| g.as_str().to_string())
                .collect(),
            denied_extensions: p.files.denied_extensions.clone(),
            editable: p
                .files
                .editable
                .as_ref()
                .map(|v| v.iter().map(|g| g.as_str().to_string()).collect()),
            max_op_bytes: p.files.max_op_bytes,
            quota_bytes: p.files.quota_bytes,
            follow_symlinks: p.files.follow_symlinks,
            max_list_entries: p.files.max_list_entries,
        },
    }
}

/// SHA-256 (hex) of the profile's [`Policy`] as compact JSON.
pub fn policy_hash(profile: &Profile) -> String {
    let json = serde_json::to_vec(&policy(profile)).expect("a policy always serializes");
    Sha256::digest(&json)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
