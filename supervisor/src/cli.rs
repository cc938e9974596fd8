//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::EXIT_STOCKADE;

/// Default socket path of `stockade serve`.
pub const DEFAULT_SOCKET: &str = "/run/stockade/stockade.sock";
/// Default state directory of `stockade serve`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/stockade";

#[derive(Debug, Parser)]
#[command(
    name = "stockade",
    version,
    about = "Run agent, build and git jobs as unprivileged, confined processes under hard deadlines",
    after_help = "Examples:
  sudo stockade exec --profile agent -- sh -c 'id; ulimit -c'
  sudo stockade serve --socket /run/stockade/stockade.sock &
  stockade run --profile build --workspace /srv/ws/42 --timeout 600 -- make test
  stockade ps
  stockade cancel j-3f9a0c1d2e4b
  stockade fs --job j-3f9a0c1d2e4b read src/main.rs
  sudo stockade doctor
  stockade profiles check /etc/stockade/profiles
  stockade profiles explain git

Exit status of run/exec: the job's own; 128+N if a signal N killed it; 124 on a deadline (wall
clock, CPU time or idle); 137 on an OOM kill; 141 at the output limit; 143 when canceled; 125 when
stockade refused the job or could not set it up."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor daemon on a Unix socket (as root)
    #[command(
        after_help = "Example:\n  sudo stockade serve --socket /run/stockade/stockade.sock --state-dir /var/lib/stockade --workspace-root /srv/ws"
    )]
    Serve(ServeArgs),
    /// Run one job through a running daemon
    #[command(
        after_help = "Examples:\n  stockade run --profile agent -- python3 tool.py\n  stockade run --profile build --workspace /srv/ws/42 --env CC=clang --json -- make"
    )]
    Run(RunArgs),
    /// Run one job locally, confined, without a daemon (as root)
    #[command(
        after_help = "Examples:\n  sudo stockade exec --profile agent -- sh -c 'id; ulimit -c'\n  sudo stockade exec --profiles ./my-profiles --profile ci --timeout 30 --json -- ./run-tests.sh"
    )]
    Exec(ExecArgs),
    /// List your running jobs (root sees every job)
    Ps(SocketArg),
    /// Cancel one of your running jobs: SIGTERM, a grace period, then SIGKILL of its whole tree
    #[command(after_help = "Example:\n  stockade cancel j-3f9a0c1d2e4b")]
    Cancel(CancelArgs),
    /// File operations in a job's workspace, path-safe, as the job's uid (through the daemon)
    #[command(after_help = FS_EXAMPLES)]
    Fs(FsArgs),
    /// Show what this host can enforce, and launch a test job under each profile (as root)
    #[command(
        after_help = "Examples:\n  sudo stockade doctor\n  sudo stockade doctor --profiles /etc/stockade/profiles --json\n\nExit status: 0 if every profile ran a test job here, 1 otherwise."
    )]
    Doctor(DoctorArgs),
    /// Validate profiles, or show the concrete plan a profile gives a job
    #[command(subcommand)]
    Profiles(ProfilesCommand),
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Validate a profile directory (or the embedded defaults): every error of every file
    #[command(
        after_help = "Examples:\n  stockade profiles check\n  stockade profiles check /etc/stockade/profiles\n\nExit status: 0 if every profile is valid, 1 otherwise (all errors are listed on stderr)."
    )]
    Check(CheckArgs),
    /// Show what a job under a profile gets, after inheritance: paths, seccomp, limits, env
    #[command(
        after_help = "Examples:\n  stockade profiles explain git\n  stockade profiles explain ci --profiles /etc/stockade/profiles --json"
    )]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Profile directory (*.toml); default: the embedded defaults
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Profile name
    pub name: String,
    /// Profile directory (*.toml); replaces the embedded defaults
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

const FS_EXAMPLES: &str = "Examples:
  stockade fs --job j-3f9a0c1d2e4b ls -r
  stockade fs --job j-3f9a0c1d2e4b read src/main.rs > main.rs
  stockade fs --job j-3f9a0c1d2e4b read big.log --offset 1048576 --len 4096
  echo 'KEY=1' | stockade fs --workspace /srv/ws/42 --profile agent write .env
  stockade fs --workspace /srv/ws/42 mkdir -p out/reports
  stockade fs --workspace /srv/ws/42 mv draft.md final.md
  stockade fs --workspace /srv/ws/42 rm -r out

Paths are relative to the workspace; `..`, absolute paths and symlinks out of it are refused
(path_traversal). Operations run as the job's uid. Exit status: 0 on success, 1 on a typed file
error (printed as `stockade: fs: KIND: PATH: reason`, or JSON with --json), 125 when the daemon
refused the request or could not be reached.";

/// `stockade fs`.
#[derive(Debug, Args)]
pub struct FsArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// The workspace of this job of yours (while it runs; after it ended if it ran in a named workspace)
    #[arg(
        long,
        conflicts_with = "workspace",
        required_unless_present = "workspace"
    )]
    pub job: Option<String>,
    /// A workspace directory below one of the daemon's --workspace-root (operations run as its owner)
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// With --workspace: the profile whose [files] policy applies (default: the built-in policy)
    #[arg(long, requires = "workspace")]
    pub profile: Option<String>,
    /// Print entries (ls, stat) and errors as JSON lines
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: FsCommand,
}

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// Write a file (or a byte range of it) to stdout
    Read {
        path: String,
        /// First byte
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Bytes at most (default: to the end)
        #[arg(long)]
        len: Option<u64>,
    },
    /// Replace a file with stdin, atomically (temporary file, fsync, rename)
    Write {
        path: String,
        /// Permission bits in octal (default: the existing file's, or 644)
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// Truncate and write in place instead of replacing atomically
        #[arg(long)]
        in_place: bool,
    },
    /// Append stdin to a file (created if missing)
    Append { path: String },
    /// List a directory (default: the workspace root)
    Ls {
        path: Option<String>,
        /// The whole tree (symlinks listed, never followed)
        #[arg(short, long)]
        recursive: bool,
    },
    /// Show what a path resolves to
    Stat { path: String },
    /// Create a directory
    Mkdir {
        path: String,
        /// Create missing parents; no error if it exists
        #[arg(short, long)]
        parents: bool,
        /// Permission bits in octal (default 755)
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
    },
    /// Remove a file, symlink or empty directory
    Rm {
        path: String,
        /// Remove a directory and everything in it
        #[arg(short, long)]
        recursive: bool,
    },
    /// Rename or move
    Mv {
        from: String,
        to: String,
        /// Replace an existing target
        #[arg(long)]
        overwrite: bool,
    },
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode between 0 and 7777"))
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Profile directory (*.toml); replaces the embedded defaults
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Args)]
pub struct SocketArg {
    /// Socket of `stockade serve`
    #[arg(long, default_value = DEFAULT_SOCKET, env = "STOCKADE_SOCKET")]
    pub socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Socket to listen on (created with mode 0660)
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Profile directory (*.toml); replaces the embedded defaults
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// State directory (fresh workspaces live here)
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// A directory below which clients may name workspaces (repeatable); without one, clients
    /// get only fresh workspaces
    #[arg(long = "workspace-root", value_name = "DIR")]
    pub workspace_roots: Vec<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// Host settings shared by `serve` and `exec`.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// stockade's own parent cgroup, relative to each hierarchy's root
    #[arg(long, default_value = "stockade", hide_short_help = true)]
    pub cgroup_parent: String,
    /// How the exec helper enters the job's cgroup: `auto` starts it there with
    /// clone3(CLONE_INTO_CGROUP) where cgroup2 allows it, `procs` always writes cgroup.procs
    /// (for benchmarks and tests of the fallback)
    #[arg(long, value_enum, default_value = "auto", hide = true)]
    pub cgroup_attach: crate::helper_proc::AttachMode,
    /// `host`: the layout the host has; `unified`: only its cgroup2 mount, as on a pure v2 host
    /// (benchmarks of the v2 launch path on hybrid hosts; limits need controllers there)
    #[arg(long, value_enum, default_value = "host", hide = true)]
    pub cgroup_layout: LayoutChoice,
}

/// `--cgroup-layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutChoice {
    Host,
    Unified,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Profile to run under (agent, build, git, or one from --profiles)
    #[arg(long)]
    pub profile: String,
    /// Workspace directory (must exist); default: a fresh one, removed afterwards
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Wall-clock deadline in seconds (may only shorten the profile's)
    #[arg(long, value_parser = parse_secs)]
    pub timeout: Option<u64>,
    /// CPU time of the whole job in seconds (may only lower the profile's limits.cpu_secs)
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub cpu_limit: Option<u64>,
    /// End the job after this many seconds without output (may only shorten the profile's
    /// limits.idle_timeout_secs)
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub idle_timeout: Option<u64>,
    /// Bytes of stdout and stderr together to deliver before ending the job (may only lower the
    /// profile's limits.output_mib)
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub output_limit: Option<u64>,
    /// Environment variable for the job (its name must be in the profile's env.allow)
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Print the result record as one JSON line on stderr at the end
    #[arg(long)]
    pub json: bool,
    /// Command and arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Profile directory (*.toml); replaces the embedded defaults
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Job id (from `stockade ps` or the result record)
    pub id: String,
}

/// Deadline in whole or fractional seconds → milliseconds.
fn parse_secs(s: &str) -> Result<u64, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?}: the timeout must be greater than 0"));
    }
    Ok((secs * 1000.0).round().max(1.0) as u64)
}

/// A byte count: digits, optionally followed by K, M or G (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (digits, optionally K, M or G)"))?;
    if n == 0 {
        return Err(format!("{s:?}: the limit must be greater than 0"));
    }
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not of the form NAME=VALUE")),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => crate::daemon::main(a),
        Command::Exec(a) => crate::exec_cmd::main(a),
        Command::Run(a) => crate::client_cmd::run(a),
        Command::Ps(a) => crate::client_cmd::ps(a),
        Command::Cancel(a) => crate::client_cmd::cancel(a),
        Command::Doctor(a) => crate::doctor::main(a),
        Command::Fs(a) => crate::fs_cmd::main(a),
        Command::Profiles(c) => crate::profiles_cmd::main(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stockade: error: {e:#}");
            ExitCode::from(EXIT_STOCKADE)
        }
    }
}

/// Logs go to stderr; `STOCKADE_LOG` (tracing filter syntax) sets the level.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOCKADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
