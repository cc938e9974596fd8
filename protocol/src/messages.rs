//! Messages exchanged over the stockade socket, and the job result record.
//!
//! Compatibility rule: enum variants and struct fields are only ever *appended*. bincode encodes an
//! enum variant by its index, so reordering or removing a variant breaks every deployed client.

use serde::{Deserialize, Serialize};

/// Version of the wire protocol spoken after the handshake.
pub const PROTOCOL_VERSION: u32 = 2;

/// Version of the [`ResultRecord`] layout.
pub const RESULT_VERSION: u32 = 2;

/// A job identifier assigned by the supervisor (for example `j-18a3f0c2b1d4e5f6`).
pub type JobId = String;

/// A request identifier chosen by the client; replies to a request carry it back.
pub type RequestId = u64;

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMessage {
    /// Must be the first message on a connection.
    Hello {
        /// The protocol version the client speaks ([`PROTOCOL_VERSION`]).
        version: u32,
        /// Free-form client name for logs (for example `stockade-cli/0.1.0`).
        client: String,
    },
    /// Start a job. Answered by `Accepted` (then `Output`s and one `Result`) or by `Error`.
    Submit {
        /// Echoed in `Accepted` or `Error`.
        request: RequestId,
        /// What to run.
        job: JobRequest,
    },
    /// Cancel a job this client submitted. Answered by `Canceled` or `Error`.
    Cancel {
        /// Echoed in the reply.
        request: RequestId,
        /// The job to cancel.
        job: JobId,
    },
    /// List this client's jobs (all jobs for root). Answered by `Jobs`.
    List {
        /// Echoed in the reply.
        request: RequestId,
    },
    /// List this client's jobs that were lost in a crash of an earlier daemon instance (all of
    /// them for root). Answered by `LostJobs`.
    ListLost {
        /// Echoed in the reply.
        request: RequestId,
    },
    /// A file operation in a workspace. Answered by `FsData`/`FsEntries` chunks, then `FsDone`
    /// or `FsError`; or by `Error` if the client may not address that workspace.
    Fs {
        /// Echoed in every reply.
        request: RequestId,
        /// Which workspace.
        target: crate::fs::FsTarget,
        /// What to do.
        op: crate::fs::FsOp,
    },
}

/// Messages the supervisor sends.
// `Result` is the large variant (272 bytes since result version 2). A message lives for one frame
// and is never stored in bulk, and boxing the record would change the type every client
// matches on; the size is not worth that.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage {
    /// Reply to the client's `Hello`.
    Hello {
        /// The protocol version the server speaks.
        version: u32,
        /// Server name and version (for example `stockade/0.1.0`).
        server: String,
    },
    /// A submitted job was accepted and is starting.
    Accepted {
        /// The `Submit` this answers.
        request: RequestId,
        /// The job's identifier.
        job: JobId,
    },
    /// A chunk of the job's output, in the order the job wrote it on that stream.
    Output {
        /// The job that wrote it.
        job: JobId,
        /// Which stream.
        stream: Stream,
        /// The bytes (not necessarily UTF-8, not line-aligned).
        data: Vec<u8>,
    },
    /// The job ended; this is the last message about it.
    Result {
        /// The job.
        job: JobId,
        /// What happened.
        record: ResultRecord,
    },
    /// Cancellation was delivered; the job's `Result` follows when it has ended.
    Canceled {
        /// The `Cancel` this answers.
        request: RequestId,
        /// The job.
        job: JobId,
    },
    /// Reply to `List`.
    Jobs {
        /// The `List` this answers.
        request: RequestId,
        /// Running jobs visible to this client.
        jobs: Vec<JobSummary>,
    },
    /// A request failed, or (with `request: None`) the connection itself is in error.
    Error {
        /// The request this answers, if any.
        request: Option<RequestId>,
        /// Machine-readable kind.
        kind: ErrorKind,
        /// One line for a human: what, where and why.
        message: String,
    },
    /// Reply to `ListLost`.
    LostJobs {
        /// The `ListLost` this answers.
        request: RequestId,
        /// Jobs of an earlier daemon instance that crashed, visible to this client, oldest first.
        jobs: Vec<LostJob>,
    },
    /// A chunk of a file being read, in order.
    FsData {
        /// The `Fs` request this answers.
        request: RequestId,
        /// Offset of `data` in the file.
        offset: u64,
        /// The bytes (at most [`crate::fs::FS_CHUNK`]).
        data: Vec<u8>,
    },
    /// A chunk of a directory listing, in order.
    FsEntries {
        /// The `Fs` request this answers.
        request: RequestId,
        /// The entries.
        entries: Vec<crate::fs::FsEntry>,
    },
    /// A file operation succeeded; the last message about that request.
    FsDone {
        /// The `Fs` request this answers.
        request: RequestId,
        /// What happened.
        reply: crate::fs::FsReply,
    },
    /// A file operation failed; the last message about that request. Nothing was changed,
    /// except that a failed in-place (non-atomic) write may have truncated its file.
    FsError {
        /// The `Fs` request this answers.
        request: RequestId,
        /// Machine-readable kind.
        kind: crate::fs::FsErrorKind,
        /// One line for a human: the path and why.
        message: String,
    },
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// The job's standard output.
    Stdout,
    /// The job's standard error.
    Stderr,
}

/// Machine-readable error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A frame could not be decoded, was too large, or was cut short.
    BadFrame,
    /// The first message was not `Hello`, or `Hello` came twice.
    Handshake,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// No such job visible to this client.
    UnknownJob,
    /// The client may not do this.
    NotPermitted,
    /// Something failed inside the supervisor.
    Internal,
}

/// What a client asks to run. A request may only narrow its profile, never widen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobRequest {
    /// Profile name (for example `agent`).
    pub profile: String,
    /// Command and arguments; `argv[0]` is looked up in the profile's `PATH` unless it contains `/`.
    pub argv: Vec<String>,
    /// Workspace directory (absolute). `None`: a fresh one is created and removed afterwards.
    pub workspace: Option<String>,
    /// Wall-clock deadline in milliseconds; may only shorten the profile's.
    pub timeout_ms: Option<u64>,
    /// Extra environment; each name must be in the profile's `env.allow`.
    pub env: Vec<(String, String)>,
    /// CPU time of the whole job (every process, from its cgroup) in milliseconds; may only
    /// lower the profile's `limits.cpu_secs`. (Protocol version 2.)
    pub cpu_limit_ms: Option<u64>,
    /// End the job after this many milliseconds without a byte of output; may only shorten the
    /// profile's `limits.idle_timeout_secs`. (Protocol version 2.)
    pub idle_timeout_ms: Option<u64>,
    /// Bytes of stdout and stderr together delivered before the job is ended as
    /// `output_limit`; may only lower the profile's `limits.output_mib`. (Protocol version 2.)
    pub output_limit_bytes: Option<u64>,
}

/// One running job, as `List` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub job: JobId,
    /// Its profile.
    pub profile: String,
    /// Its command line.
    pub argv: Vec<String>,
    /// Uid of the client that submitted it.
    pub owner_uid: u32,
    /// Milliseconds since it started.
    pub running_ms: u64,
}

/// A job that was running when an earlier instance of the daemon died. The restarted daemon
/// killed whatever was left of it and removed its cgroup and the directories it had created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostJob {
    /// Uid of the client that submitted it (`None` if its record was unreadable: root only).
    pub owner_uid: Option<u32>,
    /// Its command line (empty if unknown).
    pub argv: Vec<String>,
    /// When it was submitted, in milliseconds since the Unix epoch (0 if unknown).
    pub started_unix_ms: u64,
    /// When the restarted daemon recovered it, in milliseconds since the Unix epoch.
    pub recovered_unix_ms: u64,
    /// Its result record, with cause `lost`.
    pub record: ResultRecord,
}

/// Why a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cause {
    /// The job's main process exited with this code.
    Exited {
        /// Exit code 0..=255.
        code: i32,
    },
    /// The job's main process was killed by this signal (not by stockade).
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// The wall-clock deadline passed; stockade ended the job.
    WallTimeout,
    /// A client or operator canceled the job.
    Canceled,
    /// The kernel's OOM killer killed a process of the job at its memory limit.
    OomKilled,
    /// stockade could not set the job up; the command never ran.
    SetupFailed {
        /// Confinement step that failed (see docs/setup-order.md).
        step: String,
        /// System call or operation that failed.
        syscall: String,
        /// errno, 0 if none.
        errno: i32,
        /// One line for a human.
        message: String,
    },
    /// stockade refused the job before setting anything up.
    Rejected {
        /// One line for a human: what was refused and why.
        reason: String,
    },
    /// The job used its CPU-time limit (all of its processes together, from its cgroup);
    /// stockade ended it.
    CpuTimeout,
    /// The job wrote nothing on stdout or stderr for its idle timeout; stockade ended it.
    IdleTimeout,
    /// The job's stdout and stderr together reached the output limit: exactly that many bytes
    /// were delivered, the rest was discarded, and stockade ended the job.
    OutputLimit,
    /// The daemon that ran the job died (crash, SIGKILL) while the job ran; a restarted daemon
    /// killed what was left of the job and cleaned up after it. Its outcome is unknown.
    Lost {
        /// One line for a human: what recovery found and did.
        detail: String,
    },
}

impl Cause {
    /// The exit code `stockade run`/`exec` use for this cause: the job's code, 128+N for signal N,
    /// 124 for a deadline (wall clock, CPU time or idle), 137 for an OOM kill, 125 when stockade
    /// refused or could not set up or lost the job in a daemon crash, 141 (128 + SIGPIPE) at the
    /// output limit, and 143 (128 + SIGTERM) for a canceled job.
    pub fn exit_code(&self) -> i32 {
        match self {
            Cause::Exited { code } => *code,
            Cause::Signaled { signal } => 128 + *signal,
            Cause::WallTimeout => 124,
            Cause::OomKilled => 137,
            Cause::Canceled => 128 + 15,
            Cause::SetupFailed { .. } | Cause::Rejected { .. } | Cause::Lost { .. } => 125,
            // Deadlines of another kind: the same status as the wall-clock deadline.
            Cause::CpuTimeout | Cause::IdleTimeout => 124,
            // As if the reader had closed the pipe (`yes | head`: 128 + SIGPIPE).
            Cause::OutputLimit => 128 + 13,
        }
    }
}

/// The typed, versioned result of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Layout version ([`RESULT_VERSION`]).
    pub version: u32,
    /// The job.
    pub job: JobId,
    /// Profile the job ran under.
    pub profile: String,
    /// Why it ended.
    pub cause: Cause,
    /// Exit code of `stockade run`/`exec` for this job ([`Cause::exit_code`]).
    pub exit_code: i32,
    /// Wall-clock time from launch to the last process gone, in milliseconds.
    pub wall_ms: u64,
    /// CPU time (user + system) of every process of the job, from the cgroup, in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Peak memory of the job's cgroup in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Uid the job ran as (`None` if it never started).
    pub uid: Option<u32>,
    /// Gid the job ran as (`None` if it never started).
    pub gid: Option<u32>,
    /// What confinement was in force, mechanism by mechanism (empty if the job never started).
    pub enforcement: Vec<Mechanism>,
    /// Peak number of processes and threads in the job's cgroup (`pids.peak`), where the
    /// kernel reports it. (Result version 2.)
    pub pids_peak: Option<u64>,
    /// Bytes of stdout and stderr together that were delivered to the client. (Result version 2.)
    pub output_bytes: u64,
    /// Whether the job wrote more than was delivered (it hit its output limit). (Result version 2.)
    pub output_truncated: bool,
    /// SHA-256 (64 hex digits) of the compiled profile the job ran under, as `stockade profiles
    /// explain` shows it; empty if the request named no valid profile.
    #[serde(default)]
    pub profile_hash: String,
}

/// One confinement mechanism as applied to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    /// Mechanism name, e.g. `identity`, `capabilities`, `cgroup.memory`, `landlock.fs`.
    pub name: String,
    /// How far it was enforced.
    pub status: Enforcement,
    /// One line of detail.
    pub detail: String,
}

/// How far a mechanism was enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Fully enforced.
    Enforced,
    /// Enforced in part (best effort, on a kernel that lacks some of it).
    Partial,
    /// Asked for as best effort, but the kernel could not enforce it.
    NotEnforced,
    /// The profile did not ask for it.
    NotRequested,
}

impl ErrorKind {
    /// The kind's wire name in snake_case (as the JSON encoding spells it), for messages and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::Handshake => "handshake",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::UnknownJob => "unknown_job",
            ErrorKind::NotPermitted => "not_permitted",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
