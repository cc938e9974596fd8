//! Async client for the stockade socket.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::frame::{write_frame, FrameError, FrameReader};
use crate::messages::{
    ClientMessage, ErrorKind, JobId, JobRequest, RequestId, ResultRecord, ServerMessage, Stream,
    PROTOCOL_VERSION,
};

/// How long [`Client::connect`] waits for the server's `Hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to.
    // Not a `#[source]`: the message already contains it, and `{:#}` would print it twice.
    #[error("cannot connect to {}: {error}{}", .path.display(), connect_hint(.error))]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error from `connect(2)`.
        error: io::Error,
    },
    /// A frame could not be read, decoded, encoded or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The handshake failed: wrong protocol version, an `Error` reply, an unexpected message, a
    /// closed connection or no answer within [`HANDSHAKE_TIMEOUT`]. The text names the socket.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server answered a request with an `Error`, or reported a connection-level error.
    #[error("server error ({kind}): {message}")]
    Server {
        /// Machine-readable kind.
        kind: ErrorKind,
        /// The server's message.
        message: String,
    },
    /// The server closed the connection while a reply was still expected.
    #[error("the server closed the connection")]
    Closed,
}

fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            " (is `stockade serve` running?)"
        }
        io::ErrorKind::PermissionDenied => " (is this user in the socket's group?)",
        _ => "",
    }
}

/// A connection to a stockade supervisor, after a successful handshake.
///
/// Several jobs may run on one connection; events are tagged with their job id. [`Client::recv`]
/// returns every server message in arrival order; [`Client::run`] is a convenience for the
/// common "run one job and stream its output" case.
pub struct Client {
    path: PathBuf,
    server: String,
    reader: FrameReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_request: RequestId,
    /// Messages [`Client::run`] read that were not about its job; [`Client::recv`] returns them
    /// first, in arrival order.
    pending: VecDeque<ServerMessage>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.path)
            .field("server", &self.server)
            .field("next_request", &self.next_request)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the socket at `socket`, sends `Hello` with [`PROTOCOL_VERSION`] and
    /// `client_name`, and waits (at most [`HANDSHAKE_TIMEOUT`]) for the server's `Hello`.
    ///
    /// A server speaking another protocol version, an `Error` reply, any other message or a
    /// closed connection yield [`ClientError::Handshake`] naming the socket path.
    pub async fn connect(
        socket: impl AsRef<Path>,
        client_name: &str,
    ) -> Result<Client, ClientError> {
        let path = socket.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|error| ClientError::Connect {
                path: path.clone(),
                error,
            })?;
        let (read, write) = stream.into_split();
        let mut client = Client {
            path,
            server: String::new(),
            reader: FrameReader::new(read),
            writer: write,
            next_request: 1,
            pending: VecDeque::new(),
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, client.handshake(client_name)).await {
            Ok(Ok(server)) => {
                client.server = server;
                Ok(client)
            }
            Ok(Err(detail)) => Err(ClientError::Handshake(format!(
                "{}: {detail}",
                client.path.display()
            ))),
            Err(_) => Err(ClientError::Handshake(format!(
                "{}: no hello from the server within {} s",
                client.path.display(),
                HANDSHAKE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Sends `Hello` and reads the reply; the error is the detail of a handshake failure.
    async fn handshake(&mut self, client_name: &str) -> Result<String, String> {
        let hello = ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: client_name.to_string(),
        };
        write_frame(&mut self.writer, &hello)
            .await
            .map_err(|e| format!("cannot send hello: {e}"))?;
        match self.reader.next::<ServerMessage>().await {
            Ok(Some(ServerMessage::Hello { version, server })) if version == PROTOCOL_VERSION => {
                Ok(server)
            }
            Ok(Some(ServerMessage::Hello { version, server })) => Err(format!(
                "server `{server}` speaks protocol version {version}, this client speaks \
                 {PROTOCOL_VERSION}"
            )),
            Ok(Some(ServerMessage::Error { kind, message, .. })) => {
                Err(format!("server refused the connection ({kind}): {message}"))
            }
            Ok(Some(other)) => Err(format!(
                "expected the server's hello, got {}",
                message_name(&other)
            )),
            Ok(None) => Err("server closed the connection before its hello".to_string()),
            Err(e) => Err(format!("reading the server's hello: {e}")),
        }
    }

    /// The server's name and version, from its `Hello`.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn take_request_id(&mut self) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Sends `Submit` for `job`; returns the request id that `Accepted` or `Error` will carry.
    pub async fn submit(&mut self, job: JobRequest) -> Result<RequestId, ClientError> {
        let request = self.take_request_id();
        self.send(&ClientMessage::Submit { request, job }).await?;
        Ok(request)
    }

    /// Sends `Cancel` for `job`; returns the request id that `Canceled` or `Error` will carry.
    pub async fn cancel(&mut self, job: &str) -> Result<RequestId, ClientError> {
        let request = self.take_request_id();
        self.send(&ClientMessage::Cancel {
            request,
            job: job.to_string(),
        })
        .await?;
        Ok(request)
    }

    /// Sends `List`; returns the request id that `Jobs` will carry.
    pub async fn list(&mut self) -> Result<RequestId, ClientError> {
        let request = self.take_request_id();
        self.send(&ClientMessage::List { request }).await?;
        Ok(request)
    }

    /// Sends `ListLost`; returns the request id that `LostJobs` will carry.
    pub async fn list_lost(&mut self) -> Result<RequestId, ClientError> {
        let request = self.take_request_id();
        self.send(&ClientMessage::ListLost { request }).await?;
        Ok(request)
    }

    /// Sends `Fs` (a file operation on `target`); returns the request id its replies carry.
    pub async fn fs(
        &mut self,
        target: crate::fs::FsTarget,
        op: crate::fs::FsOp,
    ) -> Result<RequestId, ClientError> {
        let request = self.take_request_id();
        self.send(&ClientMessage::Fs {
            request,
            target,
            op,
        })
        .await?;
        Ok(request)
    }

    /// Sends one message as is. Request ids in it are the caller's business; ids the typed
    /// helpers hand out count up from 1.
    ///
    /// Not cancel-safe: dropping the future part-way may leave a partial frame on the socket.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        write_frame(&mut self.writer, msg).await?;
        Ok(())
    }

    /// Next server message; `None` when the server closed the connection cleanly. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        if let Some(msg) = self.pending.pop_front() {
            return Ok(Some(msg));
        }
        Ok(self.reader.next().await?)
    }

    /// Convenience: submits `job`, calls `on_output` for each `Output` of that job, in order,
    /// until its `Result`; returns the job id and the result record.
    ///
    /// An `Error` for the request (or a connection-level `Error`) becomes
    /// [`ClientError::Server`]; a closed connection becomes [`ClientError::Closed`]. Messages
    /// about other jobs or requests that arrive meanwhile are kept, and later returned by
    /// [`Client::recv`] in arrival order. If the future is dropped, the job keeps running and its
    /// remaining messages arrive through [`Client::recv`].
    pub async fn run(
        &mut self,
        job: JobRequest,
        mut on_output: impl FnMut(Stream, &[u8]),
    ) -> Result<(JobId, ResultRecord), ClientError> {
        let request = self.submit(job).await?;
        let mut job_id: Option<JobId> = None;
        loop {
            // Read from the socket, not from `pending`: those messages are not about this job.
            let Some(msg) = self.reader.next::<ServerMessage>().await? else {
                return Err(ClientError::Closed);
            };
            match msg {
                ServerMessage::Accepted { request: r, job } if r == request && job_id.is_none() => {
                    job_id = Some(job);
                }
                ServerMessage::Error {
                    request: r,
                    kind,
                    message,
                } if r == Some(request) || r.is_none() => {
                    return Err(ClientError::Server { kind, message });
                }
                ServerMessage::Output { job, stream, data } if job_id.as_ref() == Some(&job) => {
                    on_output(stream, &data);
                }
                ServerMessage::Result { job, record } if job_id.as_ref() == Some(&job) => {
                    return Ok((job, record));
                }
                other => self.pending.push_back(other),
            }
        }
    }
}

/// The variant name of a server message, for error texts.
fn message_name(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Hello { .. } => "hello",
        ServerMessage::Accepted { .. } => "accepted",
        ServerMessage::Output { .. } => "output",
        ServerMessage::Result { .. } => "result",
        ServerMessage::Canceled { .. } => "canceled",
        ServerMessage::Jobs { .. } => "jobs",
        ServerMessage::LostJobs { .. } => "lost_jobs",
        ServerMessage::Error { .. } => "error",
        ServerMessage::FsData { .. } => "fs_data",
        ServerMessage::FsEntries { .. } => "fs_entries",
        ServerMessage::FsDone { .. } => "fs_done",
        ServerMessage::FsError { .. } => "fs_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Cause, RESULT_VERSION};
    use tokio::net::UnixListener;

    fn record(job: &str) -> ResultRecord {
        ResultRecord {
            version: RESULT_VERSION,
            job: job.into(),
            profile: "build".into(),
            cause: Cause::Exited { code: 3 },
            exit_code: 3,
            wall_ms: 12,
            cpu_ms: Some(4),
            peak_memory_bytes: Some(1 << 20),
            uid: Some(61000),
            gid: Some(61000),
            enforcement: vec![],
            pids_peak: None,
            output_bytes: 0,
            output_truncated: false,
            profile_hash: String::new(),
        }
    }

    fn job_request() -> JobRequest {
        JobRequest {
            profile: "build".into(),
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            ..Default::default()
        }
    }

    /// A one-connection fake server: answers the client's hello with `hello`, then runs `script`.
    async fn fake_server<F, Fut>(
        hello: ServerMessage,
        script: F,
    ) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(FrameReader<OwnedReadHalf>, OwnedWriteHalf) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stockade.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut reader = FrameReader::new(r);
            match reader.next::<ClientMessage>().await.unwrap() {
                Some(ClientMessage::Hello { version, client }) => {
                    assert_eq!(version, PROTOCOL_VERSION);
                    assert_eq!(client, "test-client/1");
                }
                other => panic!("expected hello, got {other:?}"),
            }
            write_frame(&mut w, &hello).await.unwrap();
            script(reader, w).await;
        });
        (dir, path, task)
    }

    fn server_hello(version: u32) -> ServerMessage {
        ServerMessage::Hello {
            version,
            server: "fake/0".into(),
        }
    }

    #[tokio::test]
    async fn run_streams_output_in_order_and_returns_the_record() {
        let (_dir, path, server) =
            fake_server(server_hello(PROTOCOL_VERSION), |mut r, mut w| async move {
                let msg = r.next::<ClientMessage>().await.unwrap().unwrap();
                assert_eq!(
                    msg,
                    ClientMessage::Submit {
                        request: 1,
                        job: job_request()
                    }
                );
                let job = "j-1".to_string();
                let script = [
                    ServerMessage::Accepted {
                        request: 1,
                        job: job.clone(),
                    },
                    ServerMessage::Output {
                        job: job.clone(),
                        stream: Stream::Stdout,
                        data: b"hello ".to_vec(),
                    },
                    // About another job: must be kept for recv().
                    ServerMessage::Output {
                        job: "j-other".into(),
                        stream: Stream::Stdout,
                        data: b"not mine".to_vec(),
                    },
                    ServerMessage::Output {
                        job: job.clone(),
                        stream: Stream::Stderr,
                        data: b"world".to_vec(),
                    },
                    ServerMessage::Result {
                        job: job.clone(),
                        record: record(&job),
                    },
                ];
                for m in &script {
                    write_frame(&mut w, m).await.unwrap();
                }
                let msg = r.next::<ClientMessage>().await.unwrap().unwrap();
                assert_eq!(msg, ClientMessage::List { request: 2 });
                write_frame(
                    &mut w,
                    &ServerMessage::Jobs {
                        request: 2,
                        jobs: vec![],
                    },
                )
                .await
                .unwrap();
                // Then the client hangs up.
                assert_eq!(r.next::<ClientMessage>().await.unwrap(), None);
            })
            .await;

        let mut client = Client::connect(&path, "test-client/1").await.unwrap();
        assert_eq!(client.server(), "fake/0");
        assert!(format!("{client:?}").contains("fake/0"));
        let mut seen = Vec::new();
        let (job, rec) = client
            .run(job_request(), |stream, data| {
                seen.push((stream, data.to_vec()))
            })
            .await
            .unwrap();
        assert_eq!(job, "j-1");
        assert_eq!(rec, record("j-1"));
        assert_eq!(
            seen,
            vec![
                (Stream::Stdout, b"hello ".to_vec()),
                (Stream::Stderr, b"world".to_vec())
            ]
        );
        assert_eq!(client.list().await.unwrap(), 2);
        assert_eq!(
            client.recv().await.unwrap(),
            Some(ServerMessage::Output {
                job: "j-other".into(),
                stream: Stream::Stdout,
                data: b"not mine".to_vec(),
            })
        );
        assert_eq!(
            client.recv().await.unwrap(),
            Some(ServerMessage::Jobs {
                request: 2,
                jobs: vec![]
            })
        );
        drop(client);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn request_error_becomes_server_error() {
        let (_dir, path, server) =
            fake_server(server_hello(PROTOCOL_VERSION), |mut r, mut w| async move {
                let _ = r.next::<ClientMessage>().await.unwrap().unwrap();
                write_frame(
                    &mut w,
                    &ServerMessage::Error {
                        request: Some(1),
                        kind: ErrorKind::NotPermitted,
                        message: "uid 1000 may not use profile build".into(),
                    },
                )
                .await
                .unwrap();
                // Submit for request 2, then close without answering.
                let _ = r.next::<ClientMessage>().await.unwrap().unwrap();
            })
            .await;
        let mut client = Client::connect(&path, "test-client/1").await.unwrap();
        let err = client.run(job_request(), |_, _| {}).await.unwrap_err();
        match &err {
            ClientError::Server { kind, message } => {
                assert_eq!(*kind, ErrorKind::NotPermitted);
                assert!(message.contains("profile build"));
            }
            other => panic!("expected Server, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "server error (not_permitted): uid 1000 may not use profile build"
        );
        let err = client.run(job_request(), |_, _| {}).await.unwrap_err();
        assert!(matches!(err, ClientError::Closed), "{err:?}");
        assert_eq!(client.recv().await.unwrap(), None);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn version_mismatch_is_a_handshake_error() {
        let (_dir, path, server) =
            fake_server(server_hello(PROTOCOL_VERSION + 1), |_, _| async {}).await;
        let err = Client::connect(&path, "test-client/1").await.unwrap_err();
        match &err {
            ClientError::Handshake(text) => {
                assert!(text.contains(&path.display().to_string()), "{text}");
                assert!(text.contains(&format!("version {}", PROTOCOL_VERSION + 1)));
            }
            other => panic!("expected Handshake, got {other:?}"),
        }
        server.await.unwrap();
    }

    #[tokio::test]
    async fn error_reply_and_other_message_are_handshake_errors() {
        let refuse = ServerMessage::Error {
            request: None,
            kind: ErrorKind::UnsupportedVersion,
            message: "this server speaks version 2 only".into(),
        };
        let (_dir, path, server) = fake_server(refuse, |_, _| async {}).await;
        let err = Client::connect(&path, "test-client/1").await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::Handshake(_)));
        assert!(text.contains("unsupported_version"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        server.await.unwrap();

        let odd = ServerMessage::Jobs {
            request: 0,
            jobs: vec![],
        };
        let (_dir, path, server) = fake_server(odd, |_, _| async {}).await;
        let err = Client::connect(&path, "test-client/1").await.unwrap_err();
        assert!(err.to_string().contains("got jobs"), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn server_closing_before_hello_is_a_handshake_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        });
        let err = Client::connect(&path, "test-client/1").await.unwrap_err();
        assert!(matches!(err, ClientError::Handshake(_)), "{err:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn missing_socket_hints_at_serve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.sock");
        let err = Client::connect(&path, "x").await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }));
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("is `stockade serve` running?"), "{text}");
    }

    #[tokio::test]
    async fn request_ids_count_up_from_one() {
        let (_dir, path, server) =
            fake_server(server_hello(PROTOCOL_VERSION), |mut r, _w| async move {
                let mut got = Vec::new();
                while let Some(m) = r.next::<ClientMessage>().await.unwrap() {
                    got.push(m);
                }
                assert_eq!(
                    got,
                    vec![
                        ClientMessage::Submit {
                            request: 1,
                            job: job_request()
                        },
                        ClientMessage::Cancel {
                            request: 2,
                            job: "j-9".into()
                        },
                        ClientMessage::List { request: 3 },
                    ]
                );
            })
            .await;
        let mut client = Client::connect(&path, "test-client/1").await.unwrap();
        assert_eq!(client.submit(job_request()).await.unwrap(), 1);
        assert_eq!(client.cancel("j-9").await.unwrap(), 2);
        assert_eq!(client.list().await.unwrap(), 3);
        drop(client);
        server.await.unwrap();
    }
}
