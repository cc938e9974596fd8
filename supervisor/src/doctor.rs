//! `stockade doctor`: what this host can enforce, and whether each profile runs here.
//!
//! Kernel features are read from the kernel itself (Landlock's version query, `/proc/self/ns`,
//! the mount table); whether a profile can run is not inferred but tried: doctor launches `true`
//! under each profile, with the full launch path, and reports the enforcement record it got back.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use stockade_protocol::{Cause, Enforcement, JobRequest};
use stockade_sandbox::cgroup::Layout;
use tokio::sync::{mpsc, watch};

use crate::cli::{init_tracing, DoctorArgs};
use crate::{config, job};

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    landlock_abi: u32,
    landlock_unavailable: Option<&'static str>,
    seccomp_filter: bool,
    namespaces: std::collections::BTreeMap<String, bool>,
    cgroups: String,
    clone_into_cgroup: bool,
    openat2: bool,
    profiles: Vec<ProfileCheck>,
}

#[derive(Debug, Serialize)]
struct ProfileCheck {
    profile: String,
    runs: bool,
    outcome: String,
    not_enforced: Vec<String>,
}

pub fn main(a: DoctorArgs) -> anyhow::Result<ExitCode> {
    init_tracing("warn");
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let version = kernel_version(&kernel);
    let layout = Layout::detect(Path::new("/proc/self/mountinfo"));
    let has_cgroup2 = matches!(layout, Ok(Layout::V2 { .. } | Layout::Hybrid { .. }));
    let namespaces = ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time"]
        .iter()
        .map(|ns| (ns.to_string(), Path::new("/proc/self/ns").join(ns).exists()))
        .collect();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut report = Report {
        kernel,
        landlock_abi: stockade_sandbox::landlock::kernel_abi(),
        landlock_unavailable: stockade_sandbox::landlock::kernel_unavailable_reason(),
        seccomp_filter: status.lines().any(|l| l.starts_with("Seccomp_filters:")),
        namespaces,
        cgroups: match &layout {
            Ok(l) => l.describe(),
            Err(e) => format!("unusable: {e}"),
        },
        // clone3(CLONE_INTO_CGROUP) is Linux 5.7+, and needs a cgroup2 hierarchy.
        clone_into_cgroup: has_cgroup2 && version >= (5, 7),
        openat2: version >= (5, 6),
        profiles: Vec::new(),
    };
    let profiles = config::load_profiles(a.profiles.as_deref())?;
    if config::require_root("stockade doctor's profile check").is_ok() {
        report.profiles = check_profiles(&a, &profiles)?;
    }

    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report, &profiles);
    }
    let all_run = !report.profiles.is_empty() && report.profiles.iter().all(|p| p.runs);
    Ok(if all_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Launch `true` under every profile, as a real job.
fn check_profiles(
    a: &DoctorArgs,
    profiles: &stockade_profiles::ProfileSet,
) -> anyhow::Result<Vec<ProfileCheck>> {
    let launcher = Arc::new(config::launcher(&a.host, std::env::temp_dir())?);
    crate::reaper::become_subreaper()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for name in profiles.names() {
        let req = JobRequest {
            profile: name.to_string(),
            argv: vec!["true".into()],
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(4);
        let (_cancel, cancel_rx) = watch::channel(false);
        let record = rt.block_on(async {
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let id = job::new_job_id();
            let r = job::run(launcher.clone(), id, profiles, req, tx, cancel_rx).await;
            let _ = drain.await;
            r
        });
        let not_enforced = record
            .enforcement
            .iter()
            .filter(|m| matches!(m.status, Enforcement::Partial | Enforcement::NotEnforced))
            .map(|m| format!("{} ({})", m.name, m.detail))
            .collect();
        let runs = matches!(record.cause, Cause::Exited { code: 0 });
        let outcome = match &record.cause {
            Cause::Exited { code: 0 } => "ran `true`: exit 0".to_string(),
            Cause::SetupFailed {
                step,
                syscall,
                message,
                ..
            } => {
                format!("cannot run: step {step}: {syscall}: {message}")
            }
            Cause::Rejected { reason } => format!("refused: {reason}"),
            other => format!("unexpected outcome: {other:?}"),
        };
        out.push(ProfileCheck {
            profile: name.to_string(),
            runs,
            outcome,
            not_enforced,
        });
    }
    crate::reaper::reap_remaining(std::time::Duration::from_secs(1));
    Ok(out)
}

fn print_text(r: &Report, profiles: &stockade_profiles::ProfileSet) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("kernel             {}", r.kernel);
    match r.landlock_unavailable {
        Some(why) => println!("landlock           unavailable: {why}"),
        None => println!(
            "landlock           abi {} (fs: {}, tcp: {}, scopes: {})",
            r.landlock_abi,
            yes(r.landlock_abi >= 1),
            yes(r.landlock_abi >= 4),
            yes(r.landlock_abi >= 6)
        ),
    }
    println!("seccomp filters    {}", yes(r.seccomp_filter));
    let ns: Vec<String> = ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time"]
        .iter()
        .filter_map(|n| r.namespaces.get_key_value(*n))
        .map(|(n, ok)| format!("{n} {}", yes(*ok)))
        .collect();
    println!("namespaces         {}", ns.join(", "));
    println!("cgroups            {}", r.cgroups);
    println!("clone_into_cgroup  {}", yes(r.clone_into_cgroup));
    println!("openat2            {}", yes(r.openat2));
    println!("profiles           from {}", profiles.source());
    if r.profiles.is_empty() {
        println!("  (not checked: run as root to launch a test job under each profile)");
    }
    for p in &r.profiles {
        println!("  {:<10} {}", p.profile, p.outcome);
        for m in &p.not_enforced {
            println!("  {:<10}   not fully enforced: {m}", "");
        }
    }
}

/// `6.18.44-fc` → (6, 18).
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::kernel_version;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), (6, 18));
        assert_eq!(kernel_version("5.4.0-150-generic"), (5, 4));
        assert_eq!(kernel_version("garbage"), (0, 0));
    }
}
