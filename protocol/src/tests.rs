//! Round-trips of every message variant, and the byte examples of `docs/protocol.md`.

use crate::*;

const PROTOCOL_DOC: &str = include_str!("../../docs/protocol.md");

fn roundtrip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode_frame(msg).unwrap();
    assert_eq!(
        u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
        frame.len() - 4
    );
    let back: T = decode_payload(&frame[4..]).unwrap();
    assert_eq!(&back, msg);
}

fn full_job_request() -> JobRequest {
    JobRequest {
        profile: "build".into(),
        argv: vec!["make".into(), "-j4".into()],
        workspace: Some("/srv/ws/1".into()),
        timeout_ms: Some(60_000),
        env: vec![("CC".into(), "clang".into())],
        cpu_limit_ms: Some(2_000),
        idle_timeout_ms: None,
        output_limit_bytes: Some(1 << 20),
    }
}

fn records() -> Vec<ResultRecord> {
    let causes = vec![
        Cause::Exited { code: 0 },
        Cause::Exited { code: 255 },
        Cause::Signaled { signal: 9 },
        Cause::WallTimeout,
        Cause::Canceled,
        Cause::OomKilled,
        Cause::SetupFailed {
            step: "landlock".into(),
            syscall: "landlock_restrict_self".into(),
            errno: 1,
            message: "operation not permitted".into(),
        },
        Cause::Rejected {
            reason: "profile `nope` does not exist".into(),
        },
        Cause::CpuTimeout,
        Cause::IdleTimeout,
        Cause::OutputLimit,
        Cause::Lost {
            detail: "daemon died; 3 processes killed at restart".into(),
        },
    ];
    causes
        .into_iter()
        .enumerate()
        .map(|(i, cause)| ResultRecord {
            version: RESULT_VERSION,
            job: format!("j-{i}"),
            profile: "agent".into(),
            exit_code: cause.exit_code(),
            cause,
            wall_ms: u64::MAX,
            cpu_ms: if i % 2 == 0 { Some(1 << 40) } else { None },
            peak_memory_bytes: Some(300),
            uid: Some(u32::MAX),
            gid: None,
            enforcement: vec![],
            pids_peak: if i % 3 == 0 { Some(4096) } else { None },
            output_bytes: 1 << 20,
            output_truncated: i % 2 == 1,
            profile_hash: String::new(),
        })
        .collect()
}

#[test]
fn every_client_message_roundtrips() {
    let msgs = [
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            client: "stockade-cli/0.1.0".into(),
        },
        ClientMessage::Submit {
            request: 1,
            job: full_job_request(),
        },
        ClientMessage::Submit {
            request: u64::MAX,
            job: JobRequest::default(),
        },
        ClientMessage::Cancel {
            request: 70_000,
            job: "j-18a3f0c2b1d4e5f6".into(),
        },
        ClientMessage::List { request: 250 },
        ClientMessage::List { request: 251 },
        ClientMessage::ListLost { request: 252 },
    ];
    for m in &msgs {
        roundtrip(m);
    }
}

#[test]
fn every_server_message_roundtrips() {
    let mut msgs = vec![
        ServerMessage::Hello {
            version: PROTOCOL_VERSION,
            server: "stockade/0.1.0".into(),
        },
        ServerMessage::Accepted {
            request: 1,
            job: "j-1".into(),
        },
        ServerMessage::Output {
            job: "j-1".into(),
            stream: Stream::Stdout,
            data: vec![0, 159, 146, 150, 255],
        },
        ServerMessage::Output {
            job: "j-1".into(),
            stream: Stream::Stderr,
            data: vec![],
        },
        ServerMessage::Canceled {
            request: 2,
            job: "j-1".into(),
        },
        ServerMessage::Jobs {
            request: 3,
            jobs: vec![
                JobSummary {
                    job: "j-1".into(),
                    profile: "build".into(),
                    argv: vec!["make".into()],
                    owner_uid: 1000,
                    running_ms: 1234,
                },
                JobSummary {
                    job: "j-2".into(),
                    profile: "git".into(),
                    argv: vec![],
                    owner_uid: 0,
                    running_ms: 0,
                },
            ],
        },
        ServerMessage::Jobs {
            request: 4,
            jobs: vec![],
        },
        ServerMessage::LostJobs {
            request: 5,
            jobs: vec![],
        },
    ];
    for kind in [
        ErrorKind::BadFrame,
        ErrorKind::Handshake,
        ErrorKind::UnsupportedVersion,
        ErrorKind::UnknownJob,
        ErrorKind::NotPermitted,
        ErrorKind::Internal,
    ] {
        msgs.push(ServerMessage::Error {
            request: Some(9),
            kind,
            message: format!("{kind} happened"),
        });
        msgs.push(ServerMessage::Error {
            request: None,
            kind,
            message: String::new(),
        });
    }
    for record in records() {
        msgs.push(ServerMessage::Result {
            job: record.job.clone(),
            record: record.clone(),
        });
        msgs.push(ServerMessage::LostJobs {
            request: 6,
            jobs: vec![LostJob {
                owner_uid: record.uid,
                argv: vec!["sleep".into(), "1000".into()],
                started_unix_ms: u64::MAX,
                recovered_unix_ms: 1,
                record,
            }],
        });
    }
    for m in &msgs {
        roundtrip(m);
    }
}

/// Variant indices are declaration order; the doc's tables depend on it.
#[test]
fn variant_indices_match_the_doc_tables() {
    let first = |frame: Vec<u8>| frame[4];
    let client = [
        ClientMessage::Hello {
            version: 1,
            client: String::new(),
        },
        ClientMessage::Submit {
            request: 0,
            job: JobRequest::default(),
        },
        ClientMessage::Cancel {
            request: 0,
            job: String::new(),
        },
        ClientMessage::List { request: 0 },
        ClientMessage::ListLost { request: 0 },
    ];
    for (i, m) in client.iter().enumerate() {
        assert_eq!(first(encode_frame(m).unwrap()), i as u8, "{m:?}");
    }
    let kinds = [
        ErrorKind::BadFrame,
        ErrorKind::Handshake,
        ErrorKind::UnsupportedVersion,
        ErrorKind::UnknownJob,
        ErrorKind::NotPermitted,
        ErrorKind::Internal,
    ];
    for (i, k) in kinds.iter().enumerate() {
        assert_eq!(first(encode_frame(k).unwrap()), i as u8, "{k:?}");
    }
    let causes = [
        Cause::Exited { code: 0 },
        Cause::Signaled { signal: 0 },
        Cause::WallTimeout,
        Cause::Canceled,
        Cause::OomKilled,
        Cause::SetupFailed {
            step: String::new(),
            syscall: String::new(),
            errno: 0,
            message: String::new(),
        },
        Cause::Rejected {
            reason: String::new(),
        },
        Cause::CpuTimeout,
        Cause::IdleTimeout,
        Cause::OutputLimit,
        Cause::Lost {
            detail: String::new(),
        },
    ];
    for (i, c) in causes.iter().enumerate() {
        assert_eq!(first(encode_frame(c).unwrap()), i as u8, "{c:?}");
    }
    assert_eq!(first(encode_frame(&Stream::Stdout).unwrap()), 0);
    assert_eq!(first(encode_frame(&Stream::Stderr).unwrap()), 1);
}

#[test]
fn varint_and_zigzag_rules_from_the_doc() {
    let payload = |v: &dyn Erased| v.bytes();
    trait Erased {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Erased for T {
        fn bytes(&self) -> Vec<u8> {
            encode_frame(self).unwrap()[4..].to_vec()
        }
    }
    assert_eq!(payload(&250u64), [250]);
    assert_eq!(payload(&251u64), [251, 251, 0]);
    assert_eq!(payload(&65_535u64), [251, 0xff, 0xff]);
    assert_eq!(payload(&65_536u64), [252, 0, 0, 1, 0]);
    assert_eq!(payload(&(1u64 << 32)), [253, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(payload(&0i32), [0]);
    assert_eq!(payload(&-1i32), [1]);
    assert_eq!(payload(&1i32), [2]);
    assert_eq!(payload(&-2i32), [3]);
    assert_eq!(payload(&200i32), [251, 144, 1]);
    assert_eq!(payload(&true), [1]);
    assert_eq!(payload(&255u8), [255]);
    assert_eq!(payload(&Some(5u32)), [1, 5]);
    assert_eq!(payload(&None::<u32>), [0]);
    assert_eq!(payload(&"hé".to_string()), [3, b'h', 0xc3, 0xa9]);
    assert_eq!(payload(&vec![1u8, 2]), [2, 1, 2]);
    assert_eq!(payload(&("a".to_string(), 7u16)), [1, b'a', 7]);
}

/// Formats bytes as the doc shows them: lower-case hex pairs, 16 per line, separated by spaces.
fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The examples of `docs/protocol.md`, as (name, frame bytes).
fn doc_examples() -> Vec<(&'static str, Vec<u8>)> {
    let job = "j-18a3f0c2b1d4e5f6".to_string();
    vec![
        (
            "client-hello",
            encode_frame(&ClientMessage::Hello {
                version: 1,
                client: "demo/1.0".into(),
            })
            .unwrap(),
        ),
        (
            "server-hello",
            encode_frame(&ServerMessage::Hello {
                version: 1,
                server: "stockade/0.1.0".into(),
            })
            .unwrap(),
        ),
        (
            "submit",
            encode_frame(&ClientMessage::Submit {
                request: 1,
                job: full_job_request(),
            })
            .unwrap(),
        ),
        (
            "accepted",
            encode_frame(&ServerMessage::Accepted {
                request: 1,
                job: job.clone(),
            })
            .unwrap(),
        ),
        (
            "output",
            encode_frame(&ServerMessage::Output {
                job: job.clone(),
                stream: Stream::Stderr,
                data: b"hi\n".to_vec(),
            })
            .unwrap(),
        ),
        (
            "result",
            encode_frame(&ServerMessage::Result {
                job: job.clone(),
                record: ResultRecord {
                    version: RESULT_VERSION,
                    job: job.clone(),
                    profile: "build".into(),
                    cause: Cause::Signaled { signal: 9 },
                    exit_code: 137,
                    wall_ms: 1500,
                    cpu_ms: Some(20),
                    peak_memory_bytes: None,
                    uid: Some(61000),
                    gid: Some(61000),
                    enforcement: vec![],
                    pids_peak: Some(3),
                    output_bytes: 1024,
                    output_truncated: false,
                    profile_hash: String::new(),
                },
            })
            .unwrap(),
        ),
        (
            "error",
            encode_frame(&ServerMessage::Error {
                request: Some(2),
                kind: ErrorKind::UnknownJob,
                message: "no job j-1".into(),
            })
            .unwrap(),
        ),
    ]
}

/// Every example in the doc is a fenced block tagged with its name, holding the generated hex.
/// Run `cargo test -p stockade-protocol doc_examples -- --nocapture` to print the blocks.
#[test]
fn doc_examples_match_the_encoder() {
    let mut stale = Vec::new();
    for (name, bytes) in doc_examples() {
        let block = format!("```text {name}\n{}\n```", hex_dump(&bytes));
        println!("{block}\n");
        if !PROTOCOL_DOC.contains(&block) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "docs/protocol.md lacks (or has stale) examples {stale:?}; the expected blocks are printed \
         above (run with --nocapture)"
    );
}

#[test]
fn doc_states_the_limits() {
    assert!(PROTOCOL_DOC.contains(&format!("{MAX_FRAME_LEN} bytes")));
    assert!(PROTOCOL_DOC.contains(&format!("`PROTOCOL_VERSION` = {PROTOCOL_VERSION}")));
}

/// `ErrorKind::as_str` and the doc's JSON example use serde's names, as the planned JSON
/// encoding will.
#[test]
fn json_names_match_the_doc() {
    for kind in [
        ErrorKind::BadFrame,
        ErrorKind::Handshake,
        ErrorKind::UnsupportedVersion,
        ErrorKind::UnknownJob,
        ErrorKind::NotPermitted,
        ErrorKind::Internal,
    ] {
        assert_eq!(
            serde_json::to_string(&kind).unwrap(),
            format!("\"{}\"", kind.as_str())
        );
        assert!(PROTOCOL_DOC.contains(&format!("(`{}`)", kind.as_str())));
    }
    let hello = serde_json::to_string(&ClientMessage::Hello {
        version: 1,
        client: "demo/1.0".into(),
    })
    .unwrap();
    assert!(PROTOCOL_DOC.contains(&format!("`{hello}`")), "{hello}");
}
