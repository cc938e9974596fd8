//! Secrets: read a profile's secret files when a job starts, for its environment and for the
//! redaction of its output.
//!
//! Each file is opened without following symlinks, checked on the open descriptor (regular file,
//! owned by root, no group or other access, at most [`MAX_SECRET_BYTES`]) and read; one trailing
//! newline (`\n` or `\r\n`) is dropped, as `echo value > file` writes one. A value must be at
//! least [`MIN_SECRET_BYTES`] long and contain no NUL byte. Any failure refuses the job, naming the
//! secret, the file and why, never the value. Values live only in the job's launch plan and in
//! the [`Redactor`]s of its streams; [`Secret`]'s `Debug` does not show them.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use stockade_profiles::{check_secret_metadata, Profile, MAX_SECRET_BYTES, MIN_SECRET_BYTES};
use tokio::sync::mpsc;

use crate::job::Output;
use crate::redact::Redactor;

/// One secret's value.
pub struct Secret {
    /// Its name in the profile.
    pub name: String,
    /// The variable the job gets it in.
    pub env: String,
    /// The value.
    pub value: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("env", &self.env)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Read every secret of `profile`, or say why the job must be refused.
pub fn read(profile: &Profile) -> Result<Vec<Secret>, String> {
    profile
        .secrets
        .iter()
        .map(|s| {
            let fail = |why: String| {
                format!(
                    "secret {} of profile {}: {}: {why}",
                    s.name,
                    profile.name,
                    s.file.display()
                )
            };
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&s.file)
                .map_err(|e| fail(format!("cannot open: {e}")))?;
            let meta = file
                .metadata()
                .map_err(|e| fail(format!("cannot stat: {e}")))?;
            check_secret_metadata(&meta).map_err(fail)?;
            let mut bytes = Vec::new();
            (&mut file)
                .take(MAX_SECRET_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| fail(format!("cannot read: {e}")))?;
            if bytes.len() as u64 > MAX_SECRET_BYTES {
                return Err(fail(format!("longer than {MAX_SECRET_BYTES} bytes")));
            }
            if bytes.ends_with(b"\r\n") {
                bytes.truncate(bytes.len() - 2);
            } else if bytes.ends_with(b"\n") {
                bytes.pop();
            }
            if (bytes.len() as u64) < MIN_SECRET_BYTES {
                return Err(fail(format!(
                    "the value is {} bytes; a secret has at least {MIN_SECRET_BYTES} (a shorter one would be redacted from ordinary output)",
                    bytes.len()
                )));
            }
            if bytes.contains(&0) {
                return Err(fail("the value contains a NUL byte".into()));
            }
            let value = String::from_utf8(bytes)
                .map_err(|_| fail("the value is not UTF-8 (environment variables are text here)".into()))?;
            Ok(Secret {
                name: s.name.clone(),
                env: s.env.clone(),
                value,
            })
        })
        .collect()
}

/// With secrets, a sender whose output is redacted on its way to `output`; without, `output`.
/// The redacting task ends, flushing what it held back, when every sender it returned is gone.
pub fn redacting(output: mpsc::Sender<Output>, secrets: &[Secret]) -> mpsc::Sender<Output> {
    if secrets.is_empty() {
        return output;
    }
    let pairs: Vec<(&str, &[u8])> = secrets
        .iter()
        .map(|s| (s.name.as_str(), s.value.as_bytes()))
        .collect();
    let redactor = Redactor::new(&pairs);
    // Same bound as the caller's channel: a slow receiver still slows the job.
    let (tx, mut rx) = mpsc::channel::<Output>(output.max_capacity());
    tokio::spawn(async move {
        use stockade_protocol::Stream;
        let mut out = redactor.clone();
        let mut err = redactor;
        let mut alive = true;
        while let Some(o) = rx.recv().await {
            let r = match o.stream {
                Stream::Stdout => &mut out,
                Stream::Stderr => &mut err,
            };
            let data = r.push(&o.data);
            if alive && !data.is_empty() {
                alive = output
                    .send(Output {
                        stream: o.stream,
                        data,
                    })
                    .await
                    .is_ok();
            }
        }
        for (stream, r) in [(Stream::Stdout, &mut out), (Stream::Stderr, &mut err)] {
            let data = r.finish();
            if alive && !data.is_empty() {
                alive = output.send(Output { stream, data }).await.is_ok();
            }
        }
    });
    tx
}
