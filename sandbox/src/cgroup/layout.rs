//! Which cgroup hierarchies this host has, read from mountinfo.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::error::CgroupError;

/// cgroup v1 controllers we recognise in a `cgroup` mount's super options. Anything else there
/// (`rw`, `name=systemd`, `xattr`, `release_agent=...`) is a mount option, not a controller.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// The cgroup hierarchies mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Pure cgroup v2: one unified hierarchy with every controller.
    V2 {
        /// Where cgroup2 is mounted, normally `/sys/fs/cgroup`.
        root: PathBuf,
    },
    /// systemd's hybrid mode: controllers in v1 hierarchies, plus a cgroup2 mount (normally with
    /// no controllers) used for process tracking, `cgroup.kill`, `cgroup.events` and `cpu.stat`.
    Hybrid {
        /// Controller name to v1 mount point (co-mounted controllers share a mount point).
        v1: BTreeMap<String, PathBuf>,
        /// Where cgroup2 is mounted, normally `/sys/fs/cgroup/unified`.
        unified: PathBuf,
    },
    /// Pure cgroup v1.
    V1 {
        /// Controller name to v1 mount point.
        v1: BTreeMap<String, PathBuf>,
    },
}

impl Layout {
    /// Read and parse a mountinfo file (normally `/proc/self/mountinfo`).
    pub fn detect(mountinfo: &Path) -> Result<Layout, CgroupError> {
        let text = fs::read_to_string(mountinfo).map_err(|source| CgroupError::MountinfoRead {
            path: mountinfo.to_owned(),
            source,
        })?;
        Layout::parse_mountinfo(&text)
    }

    /// Parse the text of a mountinfo file (see proc(5)). Every non-empty line must be well
    /// formed. The first mount of each v1 controller and the first cgroup2 mount win.
    pub fn parse_mountinfo(text: &str) -> Result<Layout, CgroupError> {
        let mut v1: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut unified: Option<PathBuf> = None;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason| CgroupError::MountinfoParse {
                line: index + 1,
                reason,
                text: line.to_owned(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            // id parent major:minor root mount-point options [optional...] - fstype source super
            let sep = fields
                .iter()
                .skip(6)
                .position(|f| *f == "-")
                .map(|p| p + 6)
                .ok_or_else(|| bad("no \" - \" separator after the six leading fields"))?;
            if fields.len() < sep + 4 {
                return Err(bad("fewer than three fields after the separator"));
            }
            if !fields[2].contains(':') || fields[0].parse::<u64>().is_err() {
                return Err(bad("does not start with \"ID PARENT MAJOR:MINOR\""));
            }
            let mount_point = unescape(fields[4]);
            if !mount_point.is_absolute() {
                return Err(bad("mount point is not absolute"));
            }
            match fields[sep + 1] {
                "cgroup2" => {
                    unified.get_or_insert(mount_point);
                }
                "cgroup" => {
                    for option in fields[sep + 3].split(',') {
                        if V1_CONTROLLERS.contains(&option) {
                            v1.entry(option.to_owned())
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        match (v1.is_empty(), unified) {
            (true, Some(root)) => Ok(Layout::V2 { root }),
            (false, Some(unified)) => Ok(Layout::Hybrid { v1, unified }),
            (false, None) => Ok(Layout::V1 { v1 }),
            (true, None) => Err(CgroupError::NoCgroupMounts),
        }
    }

    /// One line for logs and `stockade doctor`, e.g.
    /// `hybrid (v1: cpu,memory,pids; unified: /sys/fs/cgroup/unified, no controllers)`.
    /// Reads the cgroup2 root's `cgroup.controllers` (best effort).
    pub fn describe(&self) -> String {
        match self {
            Layout::V2 { root } => {
                format!("v2 ({}, {})", root.display(), v2_controllers(root))
            }
            Layout::Hybrid { v1, unified } => format!(
                "hybrid (v1: {}; unified: {}, {})",
                join_keys(v1),
                unified.display(),
                v2_controllers(unified)
            ),
            Layout::V1 { v1 } => format!("v1 ({})", join_keys(v1)),
        }
    }

    /// Whether jobs can get `controller` here: a v1 hierarchy of it, or (cgroup2) the root's
    /// `cgroup.controllers` lists it. `cpuacct`-style CPU accounting needs no controller on
    /// cgroup2 (`cpu.stat` is a core file): `"cpu-accounting"` asks for that.
    pub fn has_controller(&self, controller: &str) -> bool {
        if controller == "cpu-accounting" {
            return self.unified().is_some() || self.v1_mount("cpuacct").is_some();
        }
        if self.v1_mount(controller).is_some() {
            return true;
        }
        self.unified().is_some_and(|root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|t| t.split_whitespace().any(|c| c == controller))
        })
    }

    /// The cgroup2 mount, if there is one.
    pub fn unified(&self) -> Option<&Path> {
        match self {
            Layout::V2 { root } => Some(root),
            Layout::Hybrid { unified, .. } => Some(unified),
            Layout::V1 { .. } => None,
        }
    }

    /// The v1 mount point of a controller, if it is mounted.
    pub(crate) fn v1_mount(&self, controller: &str) -> Option<&Path> {
        match self {
            Layout::V2 { .. } => None,
            Layout::Hybrid { v1, .. } | Layout::V1 { v1 } => {
                v1.get(controller).map(PathBuf::as_path)
            }
        }
    }

    /// The controllers co-mounted at a v1 mount point.
    pub(crate) fn v1_controllers_at(&self, mount: &Path) -> Vec<String> {
        match self {
            Layout::V2 { .. } => Vec::new(),
            Layout::Hybrid { v1, .. } | Layout::V1 { v1 } => v1
                .iter()
                .filter(|(_, m)| m.as_path() == mount)
                .map(|(c, _)| c.clone())
                .collect(),
        }
    }
}

fn join_keys(map: &BTreeMap<String, PathBuf>) -> String {
    map.keys().map(String::as_str).collect::<Vec<_>>().join(",")
}

fn v2_controllers(root: &Path) -> String {
    match fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(text) if text.trim().is_empty() => "no controllers".to_owned(),
        Ok(text) => format!(
            "controllers: {}",
            text.split_whitespace().collect::<Vec<_>>().join(",")
        ),
        Err(_) => "controllers unknown".to_owned(),
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(value) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}
