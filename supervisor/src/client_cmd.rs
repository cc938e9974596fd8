//! `stockade run`, `ps`, `cancel`: clients of a running daemon.

use std::process::ExitCode;

use anyhow::{bail, Context};
use stockade_protocol::{Client, ClientError, ServerMessage};
use tokio::sync::watch;

use crate::cli::{init_tracing, CancelArgs, RunArgs, SocketArg};
use crate::exec_cmd::{finish, forward_termination, request, write_chunk};

fn client_name() -> String {
    format!("stockade-cli/{}", env!("CARGO_PKG_VERSION"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    init_tracing("warn");
    let req = request(&a.job)?;
    runtime()?.block_on(async move {
        let mut client = Client::connect(&a.socket.socket, &client_name()).await?;
        let submitted = client.submit(req).await?;
        let (cancel_tx, mut cancel_rx) = watch::channel(false);
        let signals = tokio::spawn(async move {
            forward_termination(&cancel_tx).await;
            std::future::pending::<()>().await
        });
        let mut out = tokio::io::stdout();
        let mut err = tokio::io::stderr();
        let mut job = None;
        let mut cancel_sent = false;
        let record = loop {
            let msg = tokio::select! {
                m = client.recv() => m?,
                _ = cancel_rx.wait_for(|c| *c), if !cancel_sent && job.is_some() => {
                    // Ctrl-C: ask the daemon to end the job; its record still comes back.
                    cancel_sent = true;
                    client.cancel(job.as_deref().unwrap_or_default()).await?;
                    continue;
                }
            };
            match msg {
                None => bail!("the daemon closed the connection before the job's result arrived"),
                Some(ServerMessage::Accepted { request, job: id }) if request == submitted => {
                    job = Some(id)
                }
                Some(ServerMessage::Output {
                    job: id,
                    stream,
                    data,
                }) if Some(&id) == job.as_ref() => {
                    write_chunk(&mut out, &mut err, stream, &data).await;
                }
                Some(ServerMessage::Result { job: id, record }) if Some(&id) == job.as_ref() => {
                    break record
                }
                Some(ServerMessage::Error {
                    request,
                    kind,
                    message,
                }) if request.is_none() || request == Some(submitted) => {
                    return Err(ClientError::Server { kind, message }.into());
                }
                Some(_) => {}
            }
        };
        signals.abort();
        Ok(finish(&record, a.job.json))
    })
}

pub fn ps(a: SocketArg) -> anyhow::Result<ExitCode> {
    init_tracing("warn");
    runtime()?.block_on(async move {
        let mut client = Client::connect(&a.socket, &client_name()).await?;
        let running_req = client.list().await?;
        let lost_req = client.list_lost().await?;
        let mut running = None;
        let mut lost = None;
        while running.is_none() || lost.is_none() {
            match client.recv().await? {
                Some(ServerMessage::Jobs { request, jobs }) if request == running_req => {
                    running = Some(jobs)
                }
                Some(ServerMessage::LostJobs { request, jobs }) if request == lost_req => {
                    lost = Some(jobs)
                }
                Some(ServerMessage::Error { kind, message, .. }) => {
                    return Err(ClientError::Server { kind, message }.into())
                }
                Some(_) => {}
                None => bail!("the daemon closed the connection"),
            }
        }
        println!(
            "{:<16} {:<10} {:>6} {:>9}  COMMAND",
            "JOB", "PROFILE", "OWNER", "RUNNING"
        );
        for j in running.unwrap_or_default() {
            println!(
                "{:<16} {:<10} {:>6} {:>8}s  {}",
                j.job,
                j.profile,
                j.owner_uid,
                j.running_ms / 1000,
                display_argv(&j.argv)
            );
        }
        let lost = lost.unwrap_or_default();
        if !lost.is_empty() {
            // Jobs that were running when an earlier daemon died: killed and cleaned up at its
            // restart. Their outcome is unknown.
            println!();
            println!(
                "{:<16} {:<10} {:>6} {:<9}  COMMAND",
                "LOST JOB", "PROFILE", "OWNER", "CAUSE"
            );
            for l in lost {
                let owner = l.owner_uid.map_or("?".to_string(), |u| u.to_string());
                println!(
                    "{:<16} {:<10} {:>6} {:<9}  {}",
                    l.record.job,
                    display_argv(std::slice::from_ref(&l.record.profile)),
                    owner,
                    "lost",
                    display_argv(&l.argv)
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn cancel(a: CancelArgs) -> anyhow::Result<ExitCode> {
    init_tracing("warn");
    runtime()?.block_on(async move {
        let mut client = Client::connect(&a.socket.socket, &client_name()).await?;
        let req = client.cancel(&a.id).await?;
        loop {
            match client
                .recv()
                .await
                .context("waiting for the daemon's answer")?
            {
                Some(ServerMessage::Canceled { request, job }) if request == req => {
                    println!("canceled {job}");
                    return Ok(ExitCode::SUCCESS);
                }
                Some(ServerMessage::Error {
                    request, message, ..
                }) if request == Some(req) || request.is_none() => {
                    eprintln!("stockade: error: cannot cancel {}: {message}", a.id);
                    return Ok(ExitCode::FAILURE);
                }
                Some(_) => {}
                None => bail!("the daemon closed the connection"),
            }
        }
    })
}

/// A command line for one table row: an argument with white space, quotes, a backslash or a
/// control character is shown quoted and escaped, so a job cannot forge rows or columns.
fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars().all(|c| {
                    !c.is_whitespace() && !c.is_control() && !matches!(c, '"' | '\\' | '\'')
                });
            if plain {
                a.clone()
            } else {
                format!("{a:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::display_argv;

    #[test]
    fn argv_cannot_forge_rows() {
        let argv = ["sh", "-c", "sleep 5\nj-000000000000 agent 0 0s innocent"].map(String::from);
        let shown = display_argv(&argv);
        assert_eq!(
            shown,
            r#"sh -c "sleep 5\nj-000000000000 agent 0 0s innocent""#
        );
        assert!(!shown.contains('\n'));
        assert_eq!(
            display_argv(&["".into(), "a\u{1b}[2J".into()]),
            r#""" "a\u{1b}[2J""#
        );
    }
}
