//! `stockade fs`: file operations in a job's workspace through the daemon.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use stockade_protocol::{
    Client, FsEntry, FsEntryKind, FsOp, FsReply, FsTarget, ServerMessage, MAX_FRAME_LEN,
};

use crate::cli::{FsArgs, FsCommand};

/// Exit status when the daemon refused the operation with a typed file error.
pub const EXIT_FS_ERROR: u8 = 1;

pub fn main(a: FsArgs) -> anyhow::Result<ExitCode> {
    let target = match (&a.job, &a.workspace) {
        (Some(job), None) => FsTarget::Job { job: job.clone() },
        (None, Some(ws)) => FsTarget::Workspace {
            path: ws.display().to_string(),
            profile: a.profile.clone(),
        },
        _ => bail!("give exactly one of --job ID or --workspace DIR"),
    };
    let json = a.json;
    let op = match a.command {
        FsCommand::Read { path, offset, len } => FsOp::Read { path, offset, len },
        FsCommand::Write {
            path,
            mode,
            in_place,
        } => FsOp::Write {
            path,
            data: read_stdin()?,
            atomic: !in_place,
            mode,
        },
        FsCommand::Append { path } => FsOp::Append {
            path,
            data: read_stdin()?,
        },
        FsCommand::Ls { path, recursive } => FsOp::List {
            path: path.unwrap_or_default(),
            recursive,
        },
        FsCommand::Stat { path } => FsOp::Stat { path },
        FsCommand::Mkdir {
            path,
            parents,
            mode,
        } => FsOp::Mkdir {
            path,
            parents,
            mode,
        },
        FsCommand::Rm { path, recursive } => FsOp::Remove { path, recursive },
        FsCommand::Mv {
            from,
            to,
            overwrite,
        } => FsOp::Rename {
            from,
            to,
            overwrite,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut client = Client::connect(&a.socket.socket, "stockade-cli/fs").await?;
        let request = client.fs(target, op).await?;
        let mut stdout = std::io::stdout().lock();
        loop {
            let Some(msg) = client.recv().await? else {
                bail!("the daemon closed the connection before answering");
            };
            match msg {
                ServerMessage::FsData {
                    request: r, data, ..
                } if r == request => {
                    stdout.write_all(&data).context("write to stdout")?;
                }
                ServerMessage::FsEntries {
                    request: r,
                    entries,
                } if r == request => {
                    for e in entries {
                        print_entry(&mut stdout, &e, json)?;
                    }
                }
                ServerMessage::FsDone { request: r, reply } if r == request => {
                    match reply {
                        FsReply::Stat { entry } => print_entry(&mut stdout, &entry, json)?,
                        FsReply::Listed {
                            truncated: true,
                            count,
                        } => eprintln!(
                            "stockade: fs: listing truncated after {count} entries (the \
                             profile's files.max_list_entries)"
                        ),
                        _ => {}
                    }
                    stdout.flush()?;
                    return Ok(ExitCode::SUCCESS);
                }
                ServerMessage::FsError {
                    request: r,
                    kind,
                    message,
                } if r == request => {
                    stdout.flush()?;
                    if json {
                        let errno = match kind {
                            stockade_protocol::FsErrorKind::Io { errno } => Some(errno),
                            _ => None,
                        };
                        let v = serde_json::json!({
                            "error": kind.as_str(), "errno": errno, "message": message,
                        });
                        eprintln!("{v}");
                    } else {
                        eprintln!("stockade: fs: {kind}: {message}");
                    }
                    return Ok(ExitCode::from(EXIT_FS_ERROR));
                }
                ServerMessage::Error {
                    request: Some(r),
                    kind,
                    message,
                } if r == request => {
                    bail!("the daemon refused ({kind}): {message}");
                }
                ServerMessage::Error {
                    request: None,
                    kind,
                    message,
                } => bail!("the daemon closed the connection ({kind}): {message}"),
                _ => {}
            }
        }
    })
}

/// All of stdin, refusing more than fits in one request frame.
fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let limit = u64::from(MAX_FRAME_LEN);
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut data)
        .context("read stdin")?;
    if data.len() as u64 > limit {
        bail!(
            "stdin holds more than {limit} bytes; a write travels in one frame of at most \
             {MAX_FRAME_LEN} bytes (append larger files in parts with `stockade fs append`)"
        );
    }
    Ok(data)
}

fn print_entry(out: &mut impl Write, e: &FsEntry, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
        return Ok(());
    }
    let kind = match e.kind {
        FsEntryKind::File => '-',
        FsEntryKind::Dir => 'd',
        FsEntryKind::Symlink => 'l',
        FsEntryKind::Other => '?',
    };
    writeln!(
        out,
        "{kind}{:04o} {:>6}:{:<6} {:>12} {}",
        e.mode, e.uid, e.gid, e.size, e.path
    )?;
    Ok(())
}
