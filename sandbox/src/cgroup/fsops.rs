//! File operations on cgroupfs, each turned into a [`CgroupError`] naming op, path and value.
//!
//! Writes open the file without `O_CREAT`: a control file that does not exist means the controller
//! providing it is not enabled, and ENOENT says so; with `O_CREAT` cgroupfs would answer EACCES and
//! a temp-dir test root would silently grow a regular file.
//!
//! `mkdir` and `rmdir` go through [`FsOps`], the one seam of this module: the real kernel
//! populates a new cgroup directory with control files and lets `rmdir` remove a directory full of
//! them; the unit tests plug in a small fake that does the same on a temp dir.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use super::error::{CgroupError, Hint};

/// How cgroup directories are made and removed.
#[derive(Clone, Copy)]
pub(crate) struct FsOps {
    /// For `Debug`: which implementation this is.
    pub name: &'static str,
    /// Create one directory (not its parents).
    pub mkdir: fn(&Path) -> io::Result<()>,
    /// Remove one directory.
    pub rmdir: fn(&Path) -> io::Result<()>,
}

impl FsOps {
    /// The real cgroup filesystem.
    pub const KERNEL: FsOps = FsOps {
        name: "kernel",
        mkdir: kernel_mkdir,
        rmdir: kernel_rmdir,
    };
}

impl std::fmt::Debug for FsOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FsOps({})", self.name)
    }
}

fn kernel_mkdir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)
}

fn kernel_rmdir(path: &Path) -> io::Result<()> {
    fs::remove_dir(path)
}

const ROOT_HINT: &str = "changing cgroups needs root (or ownership of a delegated subtree)";
const ROFS_HINT: &str = "the cgroup filesystem is mounted read-only (a container without cgroup \
                         write access?); stockade never remounts it";

fn common_hint(err: &io::Error) -> Option<String> {
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Some(ROOT_HINT.to_owned()),
        Some(libc::EROFS) => Some(ROFS_HINT.to_owned()),
        _ => None,
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn write_hint(path: &Path, err: &io::Error) -> Hint {
    if let Some(h) = common_hint(err) {
        return Hint(Some(h));
    }
    let file = file_name(path);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let text = match (err.raw_os_error(), file) {
        (Some(libc::ENOENT), "cgroup.subtree_control") => format!(
            "a controller is not available in {}/cgroup.controllers",
            dir.display()
        ),
        (Some(libc::ENOENT), "cgroup.kill") => "cgroup.kill needs Linux 5.14 or later".to_owned(),
        (Some(libc::ENOENT), _) => format!(
            "{file} does not exist: the controller that provides it is not enabled for {}",
            dir.display()
        ),
        (Some(libc::EBUSY), "cgroup.subtree_control") => format!(
            "{} has processes of its own (cgroup v2 allows no processes in a group that enables \
             controllers for its children); stockade and other processes must live outside its \
             parent group",
            dir.display()
        ),
        (Some(libc::EBUSY), "memory.limit_in_bytes" | "memory.memsw.limit_in_bytes") => {
            "the limit is below what the group already uses".to_owned()
        }
        (Some(libc::EINVAL), "memory.memsw.limit_in_bytes") => {
            "memory.memsw.limit_in_bytes must be >= memory.limit_in_bytes".to_owned()
        }
        (Some(libc::EOPNOTSUPP), _) => format!(
            "{} is not a domain cgroup (threaded or domain invalid); check cgroup.type",
            dir.display()
        ),
        _ => return Hint::none(),
    };
    Hint(Some(text))
}

/// Write `value` to the existing file `path` in one `write(2)`.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let result = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        hint: write_hint(path, &source),
        source,
    })
}

/// Read a whole cgroup file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        hint: Hint(common_hint(&source)),
        source,
    })
}

/// Read a file and parse it as one decimal integer.
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| parse_error(path, &text))
}

/// Find `key N` in a flat-keyed file (cgroup.events, memory.events, cpu.stat, memory.oom_control).
pub(crate) fn read_key(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read(path)?;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            if let Some(Ok(n)) = words.next().map(str::parse::<u64>) {
                return Ok(n);
            }
        }
    }
    Err(parse_error(path, &text))
}

pub(crate) fn parse_error(path: &Path, text: &str) -> CgroupError {
    CgroupError::Parse {
        path: path.to_owned(),
        content: text.chars().take(200).collect(),
    }
}

/// Whether `path` exists (any file type). Errors other than ENOENT count as "exists", so that the
/// following write reports them.
pub(crate) fn exists(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) => e.kind() != ErrorKind::NotFound,
    }
}

/// Create one directory; EEXIST is an error unless `exist_ok`.
pub(crate) fn mkdir(ops: FsOps, path: &Path, exist_ok: bool) -> Result<bool, CgroupError> {
    match (ops.mkdir)(path) {
        Ok(()) => Ok(true),
        Err(e) if exist_ok && e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => {
            let hint = match source.raw_os_error() {
                Some(libc::EEXIST) => Some(
                    "a cgroup of that name already exists (a job of the same name, or a leftover \
                     of a crash: the supervisor removes leftovers at start)"
                        .to_owned(),
                ),
                Some(libc::ENOSPC) | Some(libc::EAGAIN) => Some(
                    "cgroup.max.descendants or cgroup.max.depth of a group above is reached"
                        .to_owned(),
                ),
                _ => common_hint(&source),
            };
            Err(CgroupError::Mkdir {
                path: path.to_owned(),
                source,
                hint: Hint(hint),
            })
        }
    }
}

/// How often and how long `rmdir` retries EBUSY: a cgroup stays busy for a moment after its last
/// process has exited.
const RMDIR_RETRIES: u32 = 10;
const RMDIR_BACKOFF: Duration = Duration::from_millis(5);

/// Remove one cgroup directory: ENOENT is success, EBUSY is retried a few times with short sleeps.
pub(crate) fn rmdir(ops: FsOps, path: &Path) -> Result<(), CgroupError> {
    let mut attempt = 0;
    loop {
        match (ops.rmdir)(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < RMDIR_RETRIES => {
                attempt += 1;
                thread::sleep(RMDIR_BACKOFF * attempt);
            }
            Err(source) => {
                let hint = match source.raw_os_error() {
                    Some(libc::EBUSY) => Some(
                        "the cgroup still has processes (or child groups); kill them and wait \
                         until it is no longer populated"
                            .to_owned(),
                    ),
                    _ => common_hint(&source),
                };
                return Err(CgroupError::Rmdir {
                    path: path.to_owned(),
                    source,
                    hint: Hint(hint),
                });
            }
        }
    }
}

/// Subdirectories of `dir` (child cgroups), by name; a missing `dir` has none.
pub(crate) fn subdirs(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let list_err = |source| CgroupError::List {
        path: dir.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        if entry.file_type().map_err(list_err)?.is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Remove a cgroup directory and any child groups in it, deepest first.
pub(crate) fn rmdir_tree(ops: FsOps, dir: &Path) -> Result<(), CgroupError> {
    for child in subdirs(dir)? {
        rmdir_tree(ops, &dir.join(child))?;
    }
    rmdir(ops, dir)
}
