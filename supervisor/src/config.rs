//! Settings shared by `serve` and `exec`: profiles, cgroups, the helper binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use stockade_profiles::{HostAccounts, HostLimits, ProfileSet};
use stockade_sandbox::cgroup::{CgroupManager, Layout};

use crate::cli::HostArgs;
use crate::job::Launcher;

/// The embedded defaults, or every profile in `dir` (which then replaces them), checked against
/// what this host can enforce (cgroup controllers, memory, CPUs).
pub fn load_profiles(dir: Option<&Path>) -> anyhow::Result<ProfileSet> {
    let accounts = HostAccounts::read(Path::new("/etc/passwd"), Path::new("/etc/group"));
    let layout =
        Layout::detect(Path::new("/proc/self/mountinfo")).context("detect the cgroup layout")?;
    let host = HostLimits::detect(&layout, Path::new("/proc/meminfo"));
    let set = match dir {
        Some(d) => ProfileSet::load_dir(d, &accounts),
        None => ProfileSet::embedded(&accounts),
    };
    set.and_then(|s| s.check_host(&host))
        .map_err(|errs| anyhow::anyhow!("invalid profiles:\n{errs}"))
}

/// The per-host part of launching jobs.
pub fn launcher(host: &HostArgs, scratch_root: PathBuf) -> anyhow::Result<Launcher> {
    let mut layout =
        Layout::detect(Path::new("/proc/self/mountinfo")).context("detect the cgroup layout")?;
    if host.cgroup_layout == crate::cli::LayoutChoice::Unified {
        let root = layout.unified().map(Path::to_owned).ok_or_else(|| {
            anyhow::anyhow!(
                "--cgroup-layout unified: this host has no cgroup2 mount ({})",
                layout.describe()
            )
        })?;
        layout = Layout::V2 { root };
    }
    let cgroups = CgroupManager::new(layout, &host.cgroup_parent)
        .with_context(|| format!("cgroup parent {:?}", host.cgroup_parent))?;
    Ok(Launcher {
        // /proc/self/exe, not a path: re-executing ourselves works even if the binary on disk was
        // replaced or removed since we started, and cannot be redirected by PATH or a symlink.
        helper_exe: PathBuf::from("/proc/self/exe"),
        cgroups,
        scratch_root,
        workspace_roots: None,
        attach: host.cgroup_attach,
    })
}

/// Refuse to go on unless running as root.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        bail!(
            "{what} must run as root (running as euid {euid}): it creates cgroups and switches to \
             the profile's uid; use `stockade run` through a daemon instead"
        );
    }
    Ok(())
}
