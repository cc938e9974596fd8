//! Path resolution that the kernel keeps inside a directory.
//!
//! Every path of a file operation is resolved from a descriptor of the workspace root, never from
//! a string: a job can swap any directory of its workspace for a symlink at any moment, so a
//! check on a canonicalized path proves nothing about what `open` reaches a microsecond later.
//!
//! - [`Method::Openat2`] (Linux 5.6+): one `openat2(2)` with `RESOLVE_BENEATH` (no escape through
//!   `..` or an absolute symlink: `EXDEV`), `RESOLVE_NO_MAGICLINKS` (no `/proc/*/root`, `/proc/*/fd/*`
//!   jumps: `ELOOP`), `RESOLVE_NO_XDEV` (no crossing into another mount, e.g. a procfs) and,
//!   where asked, `RESOLVE_NO_SYMLINKS` (`ELOOP` on any symlink). The kernel checks every step.
//! - [`Method::Walk`] (older kernels, and the same tests through [`Method::Walk`]): a walk one
//!   component at a time, each opened with `O_PATH | O_NOFOLLOW` from the previous descriptor.
//!   A symlink is read from its own descriptor (`readlinkat(fd, "")`), an absolute target or a
//!   `..` above the root is `EXDEV`, more than 40 symlinks is `ELOOP`, a directory on another
//!   device is `EXDEV`. Nothing is ever looked up by a path string longer than one component, so
//!   a concurrent swap changes which descriptor we get, never where we can get to.
//!
//! Both return the kernel's errno so callers can type the error ([`super::FsError::from_errno`]).

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::path::RelPath;
use crate::sys::take_fd;

/// Most symlinks one resolution may follow (the kernel's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;
/// How often `openat2` is retried when the kernel reports a concurrent rename (`EAGAIN`).
const EAGAIN_RETRIES: usize = 32;

/// How paths are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV [| RESOLVE_NO_SYMLINKS])`.
    Openat2,
    /// Component-by-component `O_PATH | O_NOFOLLOW` walk (kernels without `openat2`).
    Walk,
}

impl Method {
    /// `openat2` if this kernel has it, else the walk. Probed once per process.
    pub fn detect() -> Method {
        static DETECTED: OnceLock<Method> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH);
            match nix::fcntl::openat2(libc::AT_FDCWD, ".", how) {
                Ok(fd) => {
                    drop(take_fd(fd));
                    Method::Openat2
                }
                Err(_) => Method::Walk,
            }
        })
    }

    /// The method's name, for logs and `doctor`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Openat2 => "openat2",
            Method::Walk => "walk",
        }
    }
}

/// Open `path` below the directory `root` with `flags` (and `mode` if `flags` create).
///
/// `follow_symlinks`: whether symlinks (which must still resolve inside `root`) are followed;
/// when false any symlink in any component, the last included, is `ELOOP`. Magic links, mount
/// crossings and escapes are always refused. `O_CLOEXEC` is always added.
pub fn open_beneath(
    method: Method,
    root: BorrowedFd<'_>,
    path: &RelPath,
    flags: OFlag,
    mode: Mode,
    follow_symlinks: bool,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlag::O_CLOEXEC;
    match method {
        Method::Openat2 => openat2_beneath(root, path, flags, mode, follow_symlinks, false),
        Method::Walk => walk_beneath(root, path, flags, mode, follow_symlinks, false),
    }
}

/// Open the directory `path` below the trusted `anchor` (an operator's workspace root, or the
/// scratch directory) as a workspace root: `O_PATH`, no symlinks, no magic links, no escape; but
/// mount points may be crossed, since a workspace may well be its own mount (a size-limited
/// file system per workspace). Inside the workspace, [`open_beneath`] never crosses a mount.
pub fn open_workspace_root(
    method: Method,
    anchor: BorrowedFd<'_>,
    path: &RelPath,
) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match method {
        Method::Openat2 => openat2_beneath(anchor, path, flags, Mode::empty(), false, true),
        Method::Walk => walk_beneath(anchor, path, flags, Mode::empty(), false, true),
    }
}

fn openat2_beneath(
    root: BorrowedFd<'_>,
    path: &RelPath,
    flags: OFlag,
    mode: Mode,
    follow_symlinks: bool,
    cross_mounts: bool,
) -> Result<OwnedFd, Errno> {
    let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    if !cross_mounts {
        resolve |= ResolveFlag::RESOLVE_NO_XDEV;
    }
    if !follow_symlinks {
        resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
    }
    let mut how = OpenHow::new().flags(flags).resolve(resolve);
    // `contains`, not `intersects`: O_TMPFILE includes the O_DIRECTORY bit, and openat2 refuses a
    // mode (EINVAL) unless the file is created.
    if flags.contains(OFlag::O_CREAT) || flags.contains(OFlag::O_TMPFILE) {
        how = how.mode(mode);
    }
    let p = path.as_str();
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(root.as_raw_fd(), p.as_str(), how) {
            Ok(fd) => return Ok(take_fd(fd)),
            // A rename somewhere on the system raced a `..` step: the kernel could not prove the
            // walk stayed beneath, and asks to retry.
            Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn fstat(fd: BorrowedFd<'_>) -> Result<FileStat, Errno> {
    nix::sys::stat::fstat(fd.as_raw_fd())
}

fn is_type(st: &FileStat, t: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == t
}

/// Read the target of the symlink `link` (an `O_PATH | O_NOFOLLOW` descriptor of it) and queue
/// its components in front of `rest`. An absolute target is `EXDEV`.
fn splice_link(
    link: BorrowedFd<'_>,
    rest: &mut VecDeque<String>,
    followed: &mut usize,
    follow_symlinks: bool,
) -> Result<(), Errno> {
    if !follow_symlinks {
        return Err(Errno::ELOOP);
    }
    *followed += 1;
    if *followed > MAX_SYMLINKS {
        return Err(Errno::ELOOP);
    }
    let target = nix::fcntl::readlinkat(Some(link.as_raw_fd()), "")?;
    let target = target.into_encoded_bytes();
    if target.first() == Some(&b'/') {
        return Err(Errno::EXDEV);
    }
    // `.` components stay: `file/.` must fail like the kernel's (ENOTDIR). A trailing `/`
    // likewise demands a directory, so it becomes a trailing `.`.
    let mut parts: Vec<String> = target
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    if target.last() == Some(&b'/') {
        parts.push(".".into());
    }
    // Non-UTF-8 link targets would be mangled by the lossy conversion: refuse them instead.
    if parts.iter().any(|p| p.contains('\u{FFFD}')) {
        return Err(Errno::EILSEQ);
    }
    for p in parts.into_iter().rev() {
        rest.push_front(p);
    }
    Ok(())
}

fn walk_beneath(
    root: BorrowedFd<'_>,
    path: &RelPath,
    flags: OFlag,
    mode: Mode,
    follow_symlinks: bool,
    cross_mounts: bool,
) -> Result<OwnedFd, Errno> {
    let root_dev = fstat(root)?.st_dev;
    // Whether `dev` is a mount crossing we refuse.
    let crossing = |dev: u64| !cross_mounts && dev != root_dev;
    // The directories walked so far; the last is the current one. Index 0 is the root.
    let mut stack: Vec<OwnedFd> = vec![reopen_dir(root.as_raw_fd(), OFlag::O_PATH)?];
    let mut rest: VecDeque<String> = path.components().iter().cloned().collect();
    let mut followed = 0usize;

    while let Some(name) = rest.pop_front() {
        let last = rest.is_empty();
        if name == "." {
            // Only from a symlink target; the current directory is one by construction.
            continue;
        }
        if name == ".." {
            // Only from a symlink target: request paths never contain `..`.
            if stack.len() == 1 {
                return Err(Errno::EXDEV);
            }
            stack.pop();
            continue;
        }
        let cur = stack.last().map(|f| f.as_raw_fd()).ok_or(Errno::EINVAL)?;
        if last {
            // Inspect the entry without following it; then open it by this one name from the
            // directory we hold, with O_NOFOLLOW: if it became a symlink meanwhile, that is ELOOP,
            // and anything else it can have become is inside the workspace by construction.
            match nix::sys::stat::fstatat(Some(cur), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(Errno::ENOENT) if flags.contains(OFlag::O_CREAT) => {}
                Err(e) => return Err(e),
                Ok(st) if is_type(&st, SFlag::S_IFLNK) => {
                    let link = nix::fcntl::openat(
                        Some(cur),
                        name.as_str(),
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map(take_fd)?;
                    splice_link(link.as_fd(), &mut rest, &mut followed, follow_symlinks)?;
                    continue;
                }
                Ok(st) if crossing(st.st_dev) => return Err(Errno::EXDEV),
                Ok(_) => {}
            }
            let fd = nix::fcntl::openat(Some(cur), name.as_str(), flags | OFlag::O_NOFOLLOW, mode)
                .map(take_fd)?;
            if crossing(fstat(fd.as_fd())?.st_dev) {
                return Err(Errno::EXDEV);
            }
            return Ok(fd);
        }
        // An intermediate component is opened as itself (never followed), then inspected through
        // the descriptor: no window between looking and using.
        let step = nix::fcntl::openat(
            Some(cur),
            name.as_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(take_fd)?;
        let st = fstat(step.as_fd())?;
        if is_type(&st, SFlag::S_IFLNK) {
            splice_link(step.as_fd(), &mut rest, &mut followed, follow_symlinks)?;
            continue;
        }
        if crossing(st.st_dev) {
            // Another mount (procfs, a bind mount): what RESOLVE_NO_XDEV refuses.
            return Err(Errno::EXDEV);
        }
        if !is_type(&st, SFlag::S_IFDIR) {
            return Err(Errno::ENOTDIR);
        }
        stack.push(step);
    }
    // The path named a directory we hold (the root, or one reached through `..` or a link to
    // `.`): open it with the caller's flags.
    if flags.contains(OFlag::O_CREAT) && flags.contains(OFlag::O_EXCL) {
        return Err(Errno::EEXIST);
    }
    let dir = stack.pop().ok_or(Errno::EINVAL)?;
    reopen_dir(
        dir.as_raw_fd(),
        flags & !(OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_TRUNC),
    )
}

/// A new descriptor of the directory `fd` with `flags` (`openat(fd, ".")`).
fn reopen_dir(fd: i32, flags: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        Some(fd),
        ".",
        flags | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(take_fd)
}
