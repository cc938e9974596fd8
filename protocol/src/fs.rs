//! File operations in a job's workspace: requests, replies and typed errors.
//!
//! A client sends [`crate::ClientMessage::Fs`] with a [`FsTarget`] and one [`FsOp`]. The server
//! answers with zero or more [`crate::ServerMessage::FsData`] (read) or
//! [`crate::ServerMessage::FsEntries`] (list) chunks, then exactly one
//! [`crate::ServerMessage::FsDone`] or [`crate::ServerMessage::FsError`], all carrying the
//! request id. Authorization failures (a job that is not the client's, a workspace outside every
//! workspace root) come as the ordinary [`crate::ServerMessage::Error`].
//!
//! Compatibility rule as for every message: variants and fields are only ever appended.

use serde::{Deserialize, Serialize};

use crate::messages::JobId;

/// Largest data chunk of a streamed read (well under the 1 MiB frame limit).
pub const FS_CHUNK: usize = 256 * 1024;

/// Which workspace an operation addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsTarget {
    /// The workspace of one of the client's jobs (root: any job), while it runs and, for a
    /// named workspace, after it ended (see docs/protocol.md).
    Job {
        /// The job.
        job: JobId,
    },
    /// A directory strictly below one of the daemon's `--workspace-root`s. Operations run as the
    /// directory's owner (never root) under `profile`'s file policy (default policy if `None`).
    Workspace {
        /// Absolute path of the workspace.
        path: String,
        /// Profile whose `[files]` policy applies.
        profile: Option<String>,
    },
}

/// One file operation. Paths are relative to the workspace root, `/`-separated, UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsOp {
    /// Read `len` bytes (to the end if `None`) from `offset`; streamed as `FsData` chunks.
    Read {
        /// The file.
        path: String,
        /// First byte.
        offset: u64,
        /// How many bytes at most.
        len: Option<u64>,
    },
    /// Create or replace a file with `data`.
    Write {
        /// The file.
        path: String,
        /// Its whole new content.
        data: Vec<u8>,
        /// Replace atomically (temporary file, fsync, rename): readers see old or new, never a
        /// part. `false`: truncate and write in place.
        atomic: bool,
        /// Permission bits; default: the existing file's, or 0644.
        mode: Option<u32>,
    },
    /// Append `data` to a file (created if missing).
    Append {
        /// The file.
        path: String,
        /// Bytes to append.
        data: Vec<u8>,
    },
    /// List a directory; entries come as `FsEntries` chunks.
    List {
        /// The directory (`""` or `"."` for the workspace root).
        path: String,
        /// The whole tree below it (symlinks listed, never followed), up to the policy's cap.
        recursive: bool,
    },
    /// Metadata of what a path resolves to.
    Stat {
        /// The path.
        path: String,
    },
    /// Create a directory.
    Mkdir {
        /// The directory.
        path: String,
        /// Create missing parents too, and succeed if it exists.
        parents: bool,
        /// Permission bits (default 0755, less the daemon's umask).
        mode: Option<u32>,
    },
    /// Remove a file, symlink or empty directory; with `recursive`, a whole tree.
    Remove {
        /// The path.
        path: String,
        /// Remove a directory and everything in it.
        recursive: bool,
    },
    /// Rename or move.
    Rename {
        /// Current path.
        from: String,
        /// New path.
        to: String,
        /// Replace an existing `to`.
        overwrite: bool,
    },
}

impl FsOp {
    /// The operation's name for logs (`read`, `write`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            FsOp::Read { .. } => "read",
            FsOp::Write { .. } => "write",
            FsOp::Append { .. } => "append",
            FsOp::List { .. } => "list",
            FsOp::Stat { .. } => "stat",
            FsOp::Mkdir { .. } => "mkdir",
            FsOp::Remove { .. } => "remove",
            FsOp::Rename { .. } => "rename",
        }
    }
}

/// The final answer to a successful operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsReply {
    /// A read ended: `bytes` were sent in `FsData` chunks; the file had `size` bytes at open.
    Read {
        /// Bytes sent.
        bytes: u64,
        /// Size of the file when it was opened.
        size: u64,
    },
    /// A write or append ended.
    Written {
        /// Bytes written.
        bytes: u64,
        /// Size of the file afterwards.
        size: u64,
    },
    /// A listing ended: `count` entries were sent in `FsEntries` chunks.
    Listed {
        /// Entries sent.
        count: u64,
        /// The policy's cap cut the listing short.
        truncated: bool,
    },
    /// Metadata.
    Stat {
        /// The entry.
        entry: FsEntry,
    },
    /// A mkdir ended.
    Created {
        /// Whether the directory was created (false: it existed, with `parents`).
        created: bool,
    },
    /// A remove ended.
    Removed {
        /// Entries removed (files, links and directories).
        entries: u64,
    },
    /// A rename ended.
    Renamed,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsEntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// FIFO, socket or device.
    Other,
}

/// Metadata of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntry {
    /// Path relative to the workspace root (`.` for the root).
    pub path: String,
    /// What it is.
    pub kind: FsEntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
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

/// Why a file operation failed. Stable on the wire (names and indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsErrorKind {
    /// The path leaves the workspace or goes through a symlink, magic link, mount or
    /// multiply-linked file the rules forbid.
    PathTraversal,
    /// No such file or directory.
    NotFound,
    /// A component that must be a directory is not one.
    NotADirectory,
    /// A file was needed, a directory was found.
    IsADirectory,
    /// The target exists.
    Exists,
    /// The profile's policy forbids it.
    Denied,
    /// The profile forbids files with this extension.
    DeniedExtension,
    /// Larger than the profile's per-operation limit.
    TooLarge,
    /// The workspace would exceed the profile's quota.
    QuotaExceeded,
    /// Another error of the kernel (`EACCES` = 13 when the job's permission bits refuse).
    Io {
        /// errno.
        errno: i32,
    },
}

impl FsErrorKind {
    /// The kind's wire name.
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
            FsErrorKind::Io { .. } => "io",
        }
    }
}

impl std::fmt::Display for FsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsErrorKind::Io { errno } => write!(f, "io (errno {errno})"),
            k => f.write_str(k.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_payload, encode_frame, ClientMessage, ServerMessage, MAX_FRAME_LEN};

    fn roundtrip<T>(msg: &T) -> Vec<u8>
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let frame = encode_frame(msg).unwrap();
        let back: T = decode_payload(&frame[4..]).unwrap();
        assert_eq!(&back, msg);
        frame
    }

    #[test]
    fn variant_indices_are_appended_and_pinned() {
        // ClientMessage::Fs is variant 5 (after Hello, Submit, Cancel, List, ListLost).
        let f = roundtrip(&ClientMessage::Fs {
            request: 1,
            target: FsTarget::Job { job: "j-1".into() },
            op: FsOp::Stat { path: "a".into() },
        });
        assert_eq!(&f[4..], &[5, 1, 0, 3, b'j', b'-', b'1', 4, 1, b'a']);
        // ServerMessage: FsData 8, FsEntries 9, FsDone 10, FsError 11 (LostJobs is 7).
        let f = roundtrip(&ServerMessage::FsError {
            request: 2,
            kind: FsErrorKind::Io { errno: 13 },
            message: "x".into(),
        });
        assert_eq!(&f[4..], &[11, 2, 9, 26, 1, b'x']);
        let f = roundtrip(&ServerMessage::FsDone {
            request: 2,
            reply: FsReply::Renamed,
        });
        assert_eq!(&f[4..], &[10, 2, 6]);
        let f = roundtrip(&ServerMessage::FsData {
            request: 2,
            offset: 0,
            data: vec![7],
        });
        assert_eq!(&f[4..], &[8, 2, 0, 1, 7]);
    }

    #[test]
    fn a_full_chunk_and_the_largest_default_write_fit_in_a_frame() {
        roundtrip(&ServerMessage::FsData {
            request: u64::MAX,
            offset: u64::MAX,
            data: vec![0xff; FS_CHUNK],
        });
        let max_path = "p".repeat(4095);
        let frame = roundtrip(&ClientMessage::Fs {
            request: u64::MAX,
            target: FsTarget::Workspace {
                path: max_path.clone(),
                profile: Some("x".repeat(64)),
            },
            op: FsOp::Write {
                path: max_path,
                data: vec![0xff; 960 * 1024],
                atomic: true,
                mode: Some(0o7777),
            },
        });
        assert!(frame.len() <= MAX_FRAME_LEN as usize + 4);
    }
}
