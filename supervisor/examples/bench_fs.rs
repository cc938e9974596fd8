//! 4 KiB file operations through `stockade serve`, next to their floor measured in the same run.
//! Run by `scripts/bench-fs` (which starts the daemon); prints one TSV line per sample:
//! `config  ops_per_second`.
//!
//!   bench_fs SOCKET WORKSPACE ROUNDS BATCH
//!
//! Configurations, interleaved round by round (each round runs BATCH operations of each):
//!   unix_rtt        4 KiB request + 4 KiB reply over a socketpair to an echo thread
//!   openat2_read    openat2(RESOLVE_BENEATH|NO_MAGICLINKS) + read 4 KiB + close, in-process
//!   openat2_inplace openat2(O_CREAT, same resolve) + ftruncate + write 4 KiB + fsync + close
//!   openat2_atomic  temp file + write + fsync + rename + fsync dir (what an atomic write costs)
//!   fs_read         `Fs Read` of a 4 KiB file over one connection
//!   fs_write        `Fs Write` (atomic) of 4 KiB over one connection
//!   fs_write_inplace `Fs Write` (atomic = false: truncate, write, fsync)

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use stockade_protocol::{Client, FsOp, FsTarget, ServerMessage};
use stockade_sandbox::fsops::resolve::{open_beneath, Method};
use stockade_sandbox::fsops::RelPath;

const SIZE: usize = 4096;

/// `openat2(root, path, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`: one
/// system call (stockade's resolver with `Method::Openat2` is exactly that, plus `O_CLOEXEC`).
fn openat2(root: &OwnedFd, path: &str, flags: OFlag) -> OwnedFd {
    let rel = RelPath::parse(path).unwrap();
    let mode = Mode::from_bits_truncate(0o644);
    open_beneath(Method::Openat2, root.as_fd(), &rel, flags, mode, true).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, ws, rounds, batch] = args.as_slice() else {
        eprintln!("usage: bench_fs SOCKET WORKSPACE ROUNDS BATCH");
        std::process::exit(2);
    };
    let ws = PathBuf::from(ws);
    let rounds: usize = rounds.parse().unwrap();
    let batch: usize = batch.parse().unwrap();
    let data = vec![b'x'; SIZE];
    std::fs::write(ws.join("raw-r"), &data).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt
        .block_on(Client::connect(socket, "bench-fs"))
        .expect("connect");
    let target = FsTarget::Workspace {
        path: ws.display().to_string(),
        profile: None,
    };
    // The file the daemon reads (owned by the workspace's owner, like everything it writes).
    fs_op(&rt, &mut client, &target, write_op("fs-r", &data, true));

    let root: OwnedFd = std::fs::File::open(&ws).unwrap().into();
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; SIZE];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });

    let mut buf = vec![0u8; SIZE];
    for _ in 0..rounds {
        let time = |name: &str, f: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            let secs = t.elapsed().as_secs_f64();
            println!("{name}\t{:.1}", batch as f64 / secs);
        };
        time("unix_rtt", &mut || {
            a.write_all(&data).unwrap();
            a.read_exact(&mut buf).unwrap();
        });
        time("openat2_read", &mut || {
            let mut f = std::fs::File::from(openat2(&root, "raw-r", OFlag::O_RDONLY));
            f.read_exact(&mut buf).unwrap();
        });
        time("openat2_inplace", &mut || {
            let fl = OFlag::O_WRONLY | OFlag::O_CREAT;
            let mut f = std::fs::File::from(openat2(&root, "raw-w", fl));
            f.set_len(0).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
        });
        time("openat2_atomic", &mut || {
            let fl = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
            let mut f = std::fs::File::from(openat2(&root, "raw-a.tmp", fl));
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
            nix::fcntl::renameat(
                Some(root.as_raw_fd()),
                "raw-a.tmp",
                Some(root.as_raw_fd()),
                "raw-a",
            )
            .unwrap();
            let dir = openat2(&root, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY);
            nix::unistd::fsync(dir.as_raw_fd()).unwrap();
        });
        time("fs_read", &mut || {
            let op = FsOp::Read {
                path: "fs-r".into(),
                offset: 0,
                len: None,
            };
            assert_eq!(fs_op(&rt, &mut client, &target, op), SIZE);
        });
        time("fs_write", &mut || {
            fs_op(&rt, &mut client, &target, write_op("fs-w", &data, true));
        });
        time("fs_write_inplace", &mut || {
            fs_op(&rt, &mut client, &target, write_op("fs-i", &data, false));
        });
    }
}

fn write_op(path: &str, data: &[u8], atomic: bool) -> FsOp {
    FsOp::Write {
        path: path.into(),
        data: data.to_vec(),
        atomic,
        mode: None,
    }
}

/// One operation, waiting for its end; returns the bytes of data received.
fn fs_op(rt: &tokio::runtime::Runtime, c: &mut Client, target: &FsTarget, op: FsOp) -> usize {
    rt.block_on(async {
        let request = c.fs(target.clone(), op).await.unwrap();
        let mut got = 0;
        loop {
            match c.recv().await.unwrap().expect("daemon closed") {
                ServerMessage::FsData {
                    request: r, data, ..
                } if r == request => got += data.len(),
                ServerMessage::FsDone { request: r, .. } if r == request => return got,
                ServerMessage::FsError { message, .. } => panic!("fs error: {message}"),
                ServerMessage::Error { message, .. } => panic!("refused: {message}"),
                _ => {}
            }
        }
    })
}
