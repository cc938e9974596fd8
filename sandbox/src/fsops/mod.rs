//! Path-safe file operations in a workspace: read, write (atomic by default), append, list, stat,
//! mkdir, remove, rename.
//!
//! Containment is the kernel's: every path is resolved from a descriptor of the workspace root
//! by [`resolve::open_beneath`] (`openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | ...)`, or a
//! component walk on old kernels), and every operation after that acts on descriptors, never on
//! path strings. Modifying operations never follow symlinks at all. Identity is the caller's: run
//! these on an [`identity::IdentityThread`] of the job's uid/gid so the job's permission bits
//! apply and new files belong to the job.
//!
//! Hardlinks: a job can link a host file it can read into its workspace (same file system). A
//! regular file with more than one link is therefore never read, written in place, appended to
//! or stat'ed through (`path_traversal`); removing or renaming that *name* is allowed (it
//! touches no content), and an atomic write replaces the name with a new inode.

pub mod identity;
pub mod path;
pub mod policy;
pub mod resolve;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

pub use path::RelPath;
pub use policy::{FilesPolicy, Glob};
pub use resolve::Method;

use crate::sys::take_fd;

/// Deepest directory tree a recursive remove or listing descends.
pub const MAX_DEPTH: usize = 256;
/// Most entries the quota walk counts before giving up (and refusing the write).
const MAX_QUOTA_WALK: u64 = 1_000_000;
/// Prefix of the temporary files of atomic writes.
pub const TMP_PREFIX: &str = ".stockade-tmp-";

/// Why a file operation failed. Kinds are stable on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsErrorKind {
    /// The path leaves the workspace, or would go through a symlink, magic link, mount or
    /// multiply-linked file the rules forbid.
    PathTraversal,
    /// No such file or directory.
    NotFound,
    /// A component that must be a directory is not one.
    NotADirectory,
    /// The operation needs a file and found a directory.
    IsADirectory,
    /// The target exists.
    Exists,
    /// The profile's policy forbids it (protected path, not editable, not a regular file).
    Denied,
    /// The profile forbids files with this extension.
    DeniedExtension,
    /// Larger than the profile's per-operation limit.
    TooLarge,
    /// The workspace would exceed the profile's quota.
    QuotaExceeded,
    /// Any other error of the kernel, with its errno (permission bits: `EACCES` = 13).
    Io(i32),
}

impl FsErrorKind {
    /// The kind's stable wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FsErrorKind::PathTraversal => "path_traversal",
            FsErrorKind::NotFound => "not_found",
            FsErrorKind::NotADirectory => "not_a_directory",
            FsErrorKind::IsADirectory => "is_a_directory",
            FsErrorKind::Exists => "exists",
            FsErrorKind::Denied => "denied",
            FsErrorKind::DeniedExtension => "denied_extension",
            FsErrorKind::TooLarge => "too_large",
            FsErrorKind::QuotaExceeded => "quota_exceeded",
            FsErrorKind::Io(_) => "io",
        }
    }
}

/// A typed error with one line for a human: the path, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    /// Machine-readable kind.
    pub kind: FsErrorKind,
    /// `PATH: reason`.
    pub message: String,
}

impl FsError {
    /// `path: why`.
    pub fn new(kind: FsErrorKind, path: impl std::fmt::Display, why: &str) -> FsError {
        FsError {
            kind,
            message: format!("{path}: {why}"),
        }
    }

    /// Type an errno from `what` (the operation, e.g. `openat2`) on `path`.
    pub fn from_errno(e: Errno, path: impl std::fmt::Display, what: &str) -> FsError {
        let (kind, why) = match e {
            Errno::EXDEV => (
                FsErrorKind::PathTraversal,
                "resolves outside the workspace (an escaping symlink or a mount crossing)".into(),
            ),
            Errno::ELOOP => (
                FsErrorKind::PathTraversal,
                "goes through a symlink that may not be followed here, a /proc magic link, or a \
                 symlink loop"
                    .into(),
            ),
            Errno::ENOENT => (FsErrorKind::NotFound, "no such file or directory".into()),
            Errno::ENOTDIR => (
                FsErrorKind::NotADirectory,
                "a component is not a directory".into(),
            ),
            Errno::EISDIR => (FsErrorKind::IsADirectory, "is a directory".into()),
            Errno::EEXIST => (FsErrorKind::Exists, "already exists".into()),
            e => (FsErrorKind::Io(e as i32), format!("{what}: {}", e.desc())),
        };
        FsError::new(kind, path, &why)
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed by listings).
    Symlink,
    /// A FIFO, socket or device node.
    Other,
}

/// Metadata of one entry, as `stat` and `list` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the workspace root (`.` for the root).
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Hard link count.
    pub nlink: u64,
}

fn kind_of(st: &FileStat) -> EntryKind {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => EntryKind::File,
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

fn entry(path: &RelPath, st: &FileStat) -> Entry {
    Entry {
        path: path.as_str(),
        kind: kind_of(st),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink,
    }
}

/// Refuse content access through a regular file with more than one link (see the module docs).
fn check_single_link(path: &RelPath, st: &FileStat) -> Result<(), FsError> {
    if kind_of(st) == EntryKind::File && st.st_nlink > 1 {
        return Err(FsError::new(
            FsErrorKind::PathTraversal,
            path,
            &format!(
                "has {} hard links; content is never read or written through a multiply-linked \
                 file (it may be a host file linked in)",
                st.st_nlink
            ),
        ));
    }
    Ok(())
}

/// A file opened for reading: the caller streams `len` bytes from `offset` with
/// [`ReadHandle::read_chunk`] (from any thread: the permission check happened at open).
#[derive(Debug)]
pub struct ReadHandle {
    file: File,
    /// First byte to read.
    pub offset: u64,
    /// Bytes to read (the range clipped to the file's size at open).
    pub len: u64,
    /// The file's size at open.
    pub size: u64,
}

impl ReadHandle {
    /// Read up to `buf.len()` bytes at `offset`; 0 at end of file.
    pub fn read_chunk(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

/// How to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Replace the file atomically (temporary file, fsync, rename). Otherwise truncate in place.
    pub atomic: bool,
    /// Permission bits of the file; default: the existing file's, or 0644.
    pub mode: Option<u32>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            atomic: true,
            mode: None,
        }
    }
}

/// A listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Entries, directory by directory, sorted by name within each.
    pub entries: Vec<Entry>,
    /// Whether the policy's entry cap cut the listing short.
    pub truncated: bool,
}

/// An open workspace: a descriptor of its root, the profile's policy and the resolution method.
#[derive(Debug)]
pub struct Workspace {
    root: OwnedFd,
    method: Method,
    policy: FilesPolicy,
}

impl Workspace {
    /// Open the workspace `below` (relative, no symlinks in it, no `..`) beneath the trusted
    /// directory `anchor` (a workspace root of the operator, or stockade's scratch directory).
    pub fn open(
        anchor: &Path,
        below: &Path,
        method: Method,
        policy: FilesPolicy,
    ) -> Result<Workspace, FsError> {
        let anchor_fd = nix::fcntl::open(
            anchor,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(take_fd)
        .map_err(|e| FsError::from_errno(e, anchor.display(), "open"))?;
        let rel = RelPath::parse(&below.to_string_lossy())?;
        let root = resolve::open_workspace_root(method, anchor_fd.as_fd(), &rel)
            .map_err(|e| FsError::from_errno(e, anchor.join(below).display(), "open workspace"))?;
        Ok(Workspace {
            root,
            method,
            policy,
        })
    }

    /// Use `root` (an `O_PATH` or readable descriptor of a directory) as the workspace.
    pub fn from_fd(root: OwnedFd, method: Method, policy: FilesPolicy) -> Workspace {
        Workspace {
            root,
            method,
            policy,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &FilesPolicy {
        &self.policy
    }

    /// Owner (uid, gid) of the workspace root.
    pub fn owner(&self) -> Result<(u32, u32), FsError> {
        let st = nix::sys::stat::fstat(self.root.as_raw_fd())
            .map_err(|e| FsError::from_errno(e, ".", "fstat"))?;
        Ok((st.st_uid, st.st_gid))
    }

    fn resolve(
        &self,
        path: &RelPath,
        flags: OFlag,
        mode: Mode,
        follow: bool,
        what: &str,
    ) -> Result<OwnedFd, FsError> {
        resolve::open_beneath(self.method, self.root.as_fd(), path, flags, mode, follow)
            .map_err(|e| FsError::from_errno(e, path, what))
    }

    /// The parent directory of `path` (opened for modification: no symlinks) and its last name.
    fn parent_of<'p>(&self, path: &'p RelPath, what: &str) -> Result<(OwnedFd, &'p str), FsError> {
        let (parent, name) = path.split_last().ok_or_else(|| {
            FsError::new(
                FsErrorKind::IsADirectory,
                path,
                "the workspace root is a directory",
            )
        })?;
        let dir = self.resolve(
            &parent,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
            false,
            what,
        )?;
        Ok((dir, name))
    }

    /// Open `path` for reading `len` bytes (all if `None`) from `offset`.
    pub fn open_read(
        &self,
        raw: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ReadHandle, FsError> {
        let path = RelPath::parse(raw)?;
        let fd = self.resolve(
            &path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
            self.policy.follow_symlinks,
            "open",
        )?;
        let st = fstat_fd(fd.as_fd(), &path)?;
        match kind_of(&st) {
            EntryKind::File => {}
            EntryKind::Dir => {
                return Err(FsError::new(
                    FsErrorKind::IsADirectory,
                    &path,
                    "is a directory",
                ))
            }
            _ => {
                return Err(FsError::new(
                    FsErrorKind::Denied,
                    &path,
                    "not a regular file (FIFO, socket or device); only regular files are read",
                ))
            }
        }
        check_single_link(&path, &st)?;
        let size = st.st_size as u64;
        let avail = size.saturating_sub(offset);
        Ok(ReadHandle {
            file: File::from(fd),
            offset,
            len: len.map_or(avail, |l| l.min(avail)),
            size,
        })
    }

    /// Write `data` to `path` (create or replace). Returns the bytes written.
    pub fn write(&self, raw: &str, data: &[u8], opts: WriteOptions) -> Result<u64, FsError> {
        let path = RelPath::parse(raw)?;
        self.check_content_write(&path, data.len() as u64)?;
        let (dir, name) = self.parent_of(&path, "open parent")?;
        let old = self.existing_file(dir.as_fd(), name, &path)?;
        self.check_quota(
            &path,
            old.as_ref().map_or(0, |s| s.st_size as u64),
            data.len() as u64,
        )?;
        let mode = opts
            .mode
            .or(old.as_ref().map(|s| s.st_mode & 0o7777))
            .unwrap_or(0o644)
            & 0o7777;
        if opts.atomic {
            atomic_replace(dir.as_fd(), name, &path, data, mode)?;
        } else {
            let fd = nix::fcntl::openat(
                Some(dir.as_raw_fd()),
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            )
            .map(take_fd)
            .map_err(|e| FsError::from_errno(e, &path, "openat"))?;
            // Check what we opened before changing it: a hardlink planted after our first look
            // must not be truncated.
            let st = fstat_fd(fd.as_fd(), &path)?;
            self.check_writable_inode(&path, &st)?;
            let file = File::from(fd);
            if let Some(m) = opts.mode {
                nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(m & 0o7777))
                    .map_err(|e| FsError::from_errno(e, &path, "fchmod"))?;
            }
            file.set_len(0).map_err(|e| io_err(e, &path, "ftruncate"))?;
            file.write_all_at(data, 0)
                .map_err(|e| io_err(e, &path, "write"))?;
            file.sync_all().map_err(|e| io_err(e, &path, "fsync"))?;
        }
        Ok(data.len() as u64)
    }

    /// Append `data` to `path` (created if missing). Returns the file's new size.
    pub fn append(&self, raw: &str, data: &[u8]) -> Result<u64, FsError> {
        let path = RelPath::parse(raw)?;
        self.check_content_write(&path, data.len() as u64)?;
        let (dir, name) = self.parent_of(&path, "open parent")?;
        // Refuse early what the opened descriptor would be refused for (checked again below).
        self.existing_file(dir.as_fd(), name, &path)?;
        self.check_quota(&path, 0, data.len() as u64)?;
        let fd = nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(take_fd)
        .map_err(|e| FsError::from_errno(e, &path, "openat"))?;
        let st = fstat_fd(fd.as_fd(), &path)?;
        self.check_writable_inode(&path, &st)?;
        let mut file = File::from(fd);
        file.write_all(data)
            .map_err(|e| io_err(e, &path, "write"))?;
        file.sync_all().map_err(|e| io_err(e, &path, "fsync"))?;
        let st = fstat_fd(file.as_fd(), &path)?;
        Ok(st.st_size as u64)
    }

    /// Metadata of what `path` resolves to (symlinks inside the workspace are followed where the
    /// policy allows; `list` shows symlinks themselves).
    pub fn stat(&self, raw: &str) -> Result<Entry, FsError> {
        let path = RelPath::parse(raw)?;
        let fd = self.resolve(
            &path,
            OFlag::O_PATH,
            Mode::empty(),
            self.policy.follow_symlinks,
            "open",
        )?;
        let st = fstat_fd(fd.as_fd(), &path)?;
        check_single_link(&path, &st)?;
        Ok(entry(&path, &st))
    }

    /// List the directory `path`: one level, or the whole tree (symlinks are listed, never
    /// followed), at most the policy's `max_list_entries`.
    pub fn list(&self, raw: &str, recursive: bool) -> Result<Listing, FsError> {
        let path = RelPath::parse(raw)?;
        let dir = self.resolve(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
            self.policy.follow_symlinks,
            "open",
        )?;
        let max = self.policy.max_list_entries as usize;
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from([(dir, path, 0usize)]);
        while let Some((fd, at, depth)) = queue.pop_front() {
            for (name, st) in read_dir(fd.as_fd(), &at)? {
                if out.len() >= max {
                    return Ok(Listing {
                        entries: out,
                        truncated: true,
                    });
                }
                let p = at.join(&name);
                if recursive && kind_of(&st) == EntryKind::Dir && depth + 1 < MAX_DEPTH {
                    let sub = open_child_dir(fd.as_fd(), &name, &p)?;
                    queue.push_back((sub, p.clone(), depth + 1));
                }
                out.push(entry(&p, &st));
            }
        }
        Ok(Listing {
            entries: out,
            truncated: false,
        })
    }

    /// Create the directory `path` (with `parents`, every missing one on the way, and no error if
    /// it exists). Returns whether the last one was created.
    pub fn mkdir(&self, raw: &str, parents: bool, mode: Option<u32>) -> Result<bool, FsError> {
        let path = RelPath::parse(raw)?;
        self.policy.check_modify(&path, false)?;
        let mode = Mode::from_bits_truncate(mode.unwrap_or(0o755) & 0o7777);
        let comps = path.components();
        let mut created = false;
        for i in 0..comps.len() {
            let last = i + 1 == comps.len();
            if !parents && !last {
                continue;
            }
            let sub = RelPath::parse(&comps[..=i].join("/"))?;
            let (dir, name) = self.parent_of(&sub, "open parent")?;
            match nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, mode) {
                Ok(()) => created = last,
                Err(Errno::EEXIST) if parents || !last => {
                    let st = nix::sys::stat::fstatat(
                        Some(dir.as_raw_fd()),
                        name,
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| FsError::from_errno(e, &sub, "fstatat"))?;
                    match kind_of(&st) {
                        EntryKind::Dir => created = false,
                        EntryKind::Symlink => {
                            return Err(FsError::new(
                                FsErrorKind::PathTraversal,
                                &sub,
                                "is a symlink; modifying operations never follow symlinks",
                            ))
                        }
                        _ => {
                            return Err(FsError::new(
                                FsErrorKind::NotADirectory,
                                &sub,
                                "exists and is not a directory",
                            ))
                        }
                    }
                }
                Err(e) => return Err(FsError::from_errno(e, &sub, "mkdirat")),
            }
        }
        Ok(created)
    }

    /// Remove `path`: a file, symlink or empty directory; with `recursive`, a directory and
    /// everything below it (symlinks in it are removed, never followed). Returns entries removed.
    pub fn remove(&self, raw: &str, recursive: bool) -> Result<u64, FsError> {
        let path = RelPath::parse(raw)?;
        self.policy.check_modify(&path, recursive)?;
        let (dir, name) = self.parent_of(&path, "open parent")?;
        let st = nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| FsError::from_errno(e, &path, "fstatat"))?;
        if kind_of(&st) != EntryKind::Dir {
            nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| FsError::from_errno(e, &path, "unlinkat"))?;
            return Ok(1);
        }
        let mut count = 0;
        if recursive {
            let sub = open_child_dir(dir.as_fd(), name, &path)?;
            count += remove_contents(sub.as_fd(), &path, 0)?;
        }
        match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(count + 1),
            Err(Errno::ENOTEMPTY) => Err(FsError::new(
                FsErrorKind::Io(Errno::ENOTEMPTY as i32),
                &path,
                "directory not empty (remove it recursively to remove what is in it)",
            )),
            Err(e) => Err(FsError::from_errno(e, &path, "unlinkat")),
        }
    }

    /// Rename `from` to `to`; an existing `to` is replaced only with `overwrite`.
    pub fn rename(&self, from_raw: &str, to_raw: &str, overwrite: bool) -> Result<(), FsError> {
        let from = RelPath::parse(from_raw)?;
        let to = RelPath::parse(to_raw)?;
        self.policy.check_modify(&from, true)?;
        self.policy.check_modify(&to, true)?;
        let (fdir, fname) = self.parent_of(&from, "open source parent")?;
        let (tdir, tname) = self.parent_of(&to, "open target parent")?;
        let st =
            nix::sys::stat::fstatat(Some(fdir.as_raw_fd()), fname, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| FsError::from_errno(e, &from, "fstatat"))?;
        if kind_of(&st) != EntryKind::Dir {
            self.policy.check_extension(&to)?;
        }
        let flags = if overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        nix::fcntl::renameat2(
            Some(fdir.as_raw_fd()),
            fname,
            Some(tdir.as_raw_fd()),
            tname,
            flags,
        )
        .map_err(|e| FsError::from_errno(e, format!("{from} -> {to}"), "renameat2"))
    }

    fn check_content_write(&self, path: &RelPath, len: u64) -> Result<(), FsError> {
        self.policy.check_modify(path, false)?;
        self.policy.check_extension(path)?;
        self.policy.check_size(path, len)
    }

    /// What is at `name` in `dir` now: a regular single-link file (its stat), nothing (`None`),
    /// or a refusal (directory, symlink, special file, multiply-linked file).
    fn existing_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &RelPath,
    ) -> Result<Option<FileStat>, FsError> {
        match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(FsError::from_errno(e, path, "fstatat")),
            Ok(st) => {
                self.check_writable_inode(path, &st)?;
                Ok(Some(st))
            }
        }
    }

    fn check_writable_inode(&self, path: &RelPath, st: &FileStat) -> Result<(), FsError> {
        match kind_of(st) {
            EntryKind::File => check_single_link(path, st),
            EntryKind::Dir => Err(FsError::new(
                FsErrorKind::IsADirectory,
                path,
                "is a directory",
            )),
            EntryKind::Symlink => Err(FsError::new(
                FsErrorKind::PathTraversal,
                path,
                "is a symlink; modifying operations never follow symlinks",
            )),
            EntryKind::Other => Err(FsError::new(
                FsErrorKind::Denied,
                path,
                "not a regular file (FIFO, socket or device); only regular files are written",
            )),
        }
    }

    /// Refuse a write that would take the workspace's regular files above the quota.
    fn check_quota(&self, path: &RelPath, replaced: u64, added: u64) -> Result<(), FsError> {
        let Some(quota) = self.policy.quota_bytes else {
            return Ok(());
        };
        let used = self.usage()?;
        let after = used.saturating_sub(replaced).saturating_add(added);
        if after > quota {
            return Err(FsError::new(
                FsErrorKind::QuotaExceeded,
                path,
                &format!(
                    "the workspace would hold {after} bytes, over the profile's files.quota_mib \
                     ({quota} bytes; {used} in use)"
                ),
            ));
        }
        Ok(())
    }

    /// Bytes of regular files in the workspace (each inode counted once per name; symlinks not
    /// followed).
    pub fn usage(&self) -> Result<u64, FsError> {
        let root = RelPath::parse("")?;
        let dir = self.resolve(
            &root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
            false,
            "open",
        )?;
        let mut total = 0u64;
        let mut seen = 0u64;
        let mut queue = std::collections::VecDeque::from([(dir, root, 0usize)]);
        while let Some((fd, at, depth)) = queue.pop_front() {
            for (name, st) in read_dir(fd.as_fd(), &at)? {
                seen += 1;
                if seen > MAX_QUOTA_WALK {
                    return Err(FsError::new(
                        FsErrorKind::QuotaExceeded,
                        &at,
                        &format!("more than {MAX_QUOTA_WALK} entries; the quota cannot be checked"),
                    ));
                }
                match kind_of(&st) {
                    EntryKind::File => total = total.saturating_add(st.st_size as u64),
                    EntryKind::Dir if depth + 1 < MAX_DEPTH => {
                        let p = at.join(&name);
                        let sub = open_child_dir(fd.as_fd(), &name, &p)?;
                        queue.push_back((sub, p, depth + 1));
                    }
                    _ => {}
                }
            }
        }
        Ok(total)
    }
}

fn io_err(e: std::io::Error, path: &RelPath, what: &str) -> FsError {
    match e.raw_os_error() {
        Some(n) => FsError::from_errno(Errno::from_raw(n), path, what),
        None => FsError::new(FsErrorKind::Io(0), path, &format!("{what}: {e}")),
    }
}

fn fstat_fd(fd: BorrowedFd<'_>, path: &RelPath) -> Result<FileStat, FsError> {
    nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::from_errno(e, path, "fstat"))
}

/// Open the subdirectory `name` of `dir` for reading, never following a symlink.
fn open_child_dir(dir: BorrowedFd<'_>, name: &str, path: &RelPath) -> Result<OwnedFd, FsError> {
    nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(take_fd)
    .map_err(|e| FsError::from_errno(e, path, "openat"))
}

/// The entries of `dir` (without `.` and `..`), each with its own `lstat`, sorted by name.
/// Entries that vanish between reading and stat'ing are skipped.
fn read_dir(dir: BorrowedFd<'_>, at: &RelPath) -> Result<Vec<(String, FileStat)>, FsError> {
    let dup = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::from_errno(e, at, "openat"))?;
    let mut d = nix::dir::Dir::from_fd(dup).map_err(|e| FsError::from_errno(e, at, "fdopendir"))?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(|e| FsError::from_errno(e, at, "readdir"))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        match std::str::from_utf8(name) {
            Ok(n) => names.push(n.to_string()),
            // The protocol carries paths as UTF-8; such a name cannot be addressed, so it is not
            // listed (the job can rename it).
            Err(_) => continue,
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        match nix::sys::stat::fstatat(
            Some(dir.as_raw_fd()),
            n.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => out.push((n, st)),
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(FsError::from_errno(e, at.join(&n), "fstatat")),
        }
    }
    Ok(out)
}

/// Remove everything in `dir` (depth-first, never following symlinks). Returns entries removed.
fn remove_contents(dir: BorrowedFd<'_>, at: &RelPath, depth: usize) -> Result<u64, FsError> {
    if depth >= MAX_DEPTH {
        return Err(FsError::new(
            FsErrorKind::Io(Errno::ELOOP as i32),
            at,
            &format!("the tree is deeper than {MAX_DEPTH} levels; not removed"),
        ));
    }
    let mut count = 0;
    for (name, st) in read_dir(dir, at)? {
        let p = at.join(&name);
        if kind_of(&st) == EntryKind::Dir {
            let sub = open_child_dir(dir, &name, &p)?;
            count += remove_contents(sub.as_fd(), &p, depth + 1)?;
            nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                name.as_str(),
                UnlinkatFlags::RemoveDir,
            )
            .map_err(|e| FsError::from_errno(e, &p, "unlinkat"))?;
        } else {
            nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| FsError::from_errno(e, &p, "unlinkat"))?;
        }
        count += 1;
    }
    Ok(count)
}

/// Write `data` to a new temporary file in `dir`, fsync it, and rename it over `name`; then fsync
/// `dir`. A reader sees the old content or the new, never a part. On failure the temporary file
/// is removed and `name` keeps its old content.
fn atomic_replace(
    dir: BorrowedFd<'_>,
    name: &str,
    path: &RelPath,
    data: &[u8],
    mode: u32,
) -> Result<(), FsError> {
    let tmp = format!("{TMP_PREFIX}{}", random_hex());
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map(take_fd)
    .map_err(|e| FsError::from_errno(e, path, "create temporary file"))?;
    let file = File::from(fd);
    let written = (|| {
        file.write_all_at(data, 0)
            .map_err(|e| io_err(e, path, "write"))?;
        // Exactly the requested bits, whatever the daemon's umask.
        nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| FsError::from_errno(e, path, "fchmod"))?;
        file.sync_all().map_err(|e| io_err(e, path, "fsync"))?;
        nix::fcntl::renameat(
            Some(dir.as_raw_fd()),
            tmp.as_str(),
            Some(dir.as_raw_fd()),
            name,
        )
        .map_err(|e| FsError::from_errno(e, path, "renameat"))
    })();
    if let Err(e) = written {
        if let Err(u) = nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            tmp.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            return Err(FsError {
                kind: e.kind,
                message: format!(
                    "{}; and removing the temporary file {tmp} failed: {}",
                    e.message,
                    u.desc()
                ),
            });
        }
        return Err(e);
    }
    // Make the rename itself durable.
    nix::unistd::fsync(dir.as_raw_fd()).map_err(|e| FsError::from_errno(e, path, "fsync directory"))
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    let filled =
        File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    if filled.is_err() {
        // Unique enough (O_EXCL refuses a collision anyway): time, pid and a counter.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = (t ^ (u64::from(std::process::id()) << 40) ^ n).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
