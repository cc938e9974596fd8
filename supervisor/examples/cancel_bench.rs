//! Cancel latency through the daemon, for scripts/bench:
//!
//!     cancel_bench SOCKET PROFILE N sleep|busy
//!
//! Submits `sh -c SCRIPT` (the shell plus N-1 children, sleeping or spinning: the same tree as
//! scripts/bench-src/cancel_floor.c), waits for its READY line, then times Cancel -> Result (the
//! daemon sends the result once every process of the job is gone and its cgroup is removed).
//! Prints "<nanoseconds>"; fails unless the cause is `canceled`.

use std::time::Instant;

use stockade_protocol::{Cause, Client, JobRequest, ServerMessage};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, profile, n, variant] = args.as_slice() else {
        return Err("usage: cancel_bench SOCKET PROFILE N sleep|busy".into());
    };
    let n: u32 = n.parse()?;
    let body = if variant == "busy" {
        "(while :; do :; done) &"
    } else {
        "sleep 1000 &"
    };
    let script = format!("i=1; while [ $i -lt {n} ]; do {body} i=$((i+1)); done; echo READY; wait");
    let mut client = Client::connect(std::path::Path::new(socket), "cancel-bench").await?;
    let submitted = client
        .submit(JobRequest {
            profile: profile.clone(),
            argv: vec!["sh".into(), "-c".into(), script],
            ..JobRequest::default()
        })
        .await?;
    let mut job = None;
    let mut out = Vec::new();
    let mut t0 = None;
    loop {
        match client.recv().await? {
            Some(ServerMessage::Accepted { request, job: id }) if request == submitted => {
                job = Some(id)
            }
            Some(ServerMessage::Output { data, .. }) if t0.is_none() => {
                out.extend_from_slice(&data);
                if out.windows(5).any(|w| w == b"READY") {
                    let id = job.clone().ok_or("output before accepted")?;
                    t0 = Some(Instant::now());
                    client.cancel(&id).await?;
                }
            }
            Some(ServerMessage::Result { record, .. }) => {
                let t0 = t0.ok_or_else(|| format!("job ended before READY: {record:?}"))?;
                let ns = t0.elapsed().as_nanos();
                if record.cause != Cause::Canceled {
                    return Err(format!("cause {:?}, not canceled", record.cause).into());
                }
                println!("{ns}");
                return Ok(());
            }
            Some(ServerMessage::Error { message, .. }) => return Err(message.into()),
            Some(_) => {}
            None => return Err("daemon closed the connection".into()),
        }
    }
}
