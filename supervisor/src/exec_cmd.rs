//! `stockade exec`: one confined job, locally, without a daemon.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use stockade_protocol::{Cause, JobRequest, ResultRecord, Stream};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::cli::{init_tracing, ExecArgs, JobArgs};
use crate::{config, job};

pub fn main(a: ExecArgs) -> anyhow::Result<ExitCode> {
    init_tracing("warn");
    let id = job::new_job_id();
    if let Err(e) = config::require_root("stockade exec") {
        return Ok(finish(
            &job::rejected(&id, &a.job.profile, format!("{e:#}")),
            a.job.json,
        ));
    }
    let profiles = config::load_profiles(a.profiles.as_deref())?;
    let launcher = Arc::new(config::launcher(&a.host, std::env::temp_dir())?);
    let req = request(&a.job)?;
    // One thread: `exec` runs one job; PR_SET_PDEATHSIG then tracks this process's main thread.
    // Orphans of the job are reparented to us (not to PID 1, which may never reap them).
    crate::reaper::become_subreaper()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let record = rt.block_on(async move {
        let reaper = tokio::spawn(crate::reaper::run());
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(16);
        let signals = tokio::spawn(async move {
            forward_termination(&cancel_tx).await;
            // Keep the sender alive until the job is done.
            std::future::pending::<()>().await
        });
        let (record, ()) = tokio::join!(
            job::run(launcher, id, &profiles, req, tx, cancel_rx),
            copy_output(rx)
        );
        signals.abort();
        reaper.abort();
        record
    });
    drop(rt);
    // Every job process is dead (its cgroup emptied); collect the last orphans' exit statuses so
    // none is left a zombie when we exit.
    crate::reaper::reap_remaining(std::time::Duration::from_secs(1));
    Ok(finish(&record, a.job.json))
}

/// The job request a `run` or `exec` command line describes.
pub fn request(a: &JobArgs) -> anyhow::Result<JobRequest> {
    let workspace = match &a.workspace {
        None => None,
        Some(p) => Some(
            std::path::absolute(p)
                .map_err(|e| anyhow::anyhow!("workspace {}: {e}", p.display()))?
                .to_str()
                .ok_or_else(|| anyhow::anyhow!("workspace {} is not valid UTF-8", p.display()))?
                .to_string(),
        ),
    };
    Ok(JobRequest {
        profile: a.profile.clone(),
        argv: a.argv.clone(),
        workspace,
        timeout_ms: a.timeout,
        env: a.env.clone(),
        cpu_limit_ms: a.cpu_limit,
        idle_timeout_ms: a.idle_timeout,
        output_limit_bytes: a.output_limit,
    })
}

/// Resolve on the first SIGINT, SIGTERM or SIGHUP by setting the cancel flag.
pub async fn forward_termination(cancel: &watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!(
            "cannot install signal handlers: the job can only end by itself or its deadline"
        );
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
    let _ = cancel.send(true);
}

async fn copy_output(mut rx: mpsc::Receiver<job::Output>) {
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    while let Some(o) = rx.recv().await {
        write_chunk(&mut out, &mut err, o.stream, &o.data).await;
    }
}

/// Write a chunk of job output to our own stdout or stderr, immediately.
pub async fn write_chunk(
    out: &mut tokio::io::Stdout,
    err: &mut tokio::io::Stderr,
    stream: Stream,
    data: &[u8],
) {
    // A closed stdout (`| head`) must not end the job or stockade: the output is dropped.
    let _ = match stream {
        Stream::Stdout => {
            async {
                out.write_all(data).await?;
                out.flush().await
            }
            .await
        }
        Stream::Stderr => {
            async {
                err.write_all(data).await?;
                err.flush().await
            }
            .await
        }
    };
}

/// Report the end of a job on stderr (one line when stockade, not the job, decided the outcome),
/// print the record with `--json`, and return the exit status.
pub fn finish(record: &ResultRecord, json: bool) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    let note = match &record.cause {
        Cause::Rejected { reason } => Some(format!("error: {reason}")),
        Cause::SetupFailed {
            step,
            syscall,
            message,
            ..
        } => Some(format!(
            "error: job {} could not be set up: step {step}: {syscall}: {message}",
            record.job
        )),
        Cause::WallTimeout => Some(format!(
            "job {} hit its wall-clock deadline after {} ms",
            record.job, record.wall_ms
        )),
        Cause::OomKilled => Some(format!("job {} was killed at its memory limit", record.job)),
        Cause::Canceled => Some(format!("job {} was canceled", record.job)),
        Cause::CpuTimeout => Some(format!(
            "job {} used its CPU-time limit ({} ms of CPU)",
            record.job,
            record.cpu_ms.unwrap_or_default()
        )),
        Cause::IdleTimeout => Some(format!(
            "job {} wrote no output for its idle timeout",
            record.job
        )),
        Cause::OutputLimit => Some(format!(
            "job {} reached its output limit after {} bytes; the rest was discarded",
            record.job, record.output_bytes
        )),
        _ => None,
    };
    if let Some(n) = note {
        let _ = writeln!(stderr, "stockade: {n}");
    }
    if json {
        match serde_json::to_string(record) {
            Ok(line) => {
                let _ = writeln!(stderr, "{line}");
            }
            Err(e) => {
                let _ = writeln!(
                    stderr,
                    "stockade: error: cannot encode the result record: {e}"
                );
            }
        }
    }
    ExitCode::from(record.exit_code.clamp(0, 255) as u8)
}
