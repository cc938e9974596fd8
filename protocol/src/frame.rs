//! Length-prefixed framing: a `u32` little-endian payload length, then the payload, which is one
//! message encoded with bincode 2 (`standard` configuration, serde, decode limit = frame limit).
//!
//! Decoding never trusts a length it has not checked: a frame's declared length is compared with
//! [`MAX_FRAME_LEN`] before any of its body is read or allocated, the reader's buffer grows only as
//! bytes actually arrive, and bincode's decode limit rejects lengths inside the payload (strings)
//! that exceed the frame limit. Sequences are preallocated by serde with a 1 MiB cap, and a
//! sequence whose declared length exceeds the bytes present fails with a decode error.

use std::fmt;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::error::DecodeError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::budget::decode_budget;

/// Largest payload a frame may carry, in bytes (1 MiB). The 4-byte length prefix is not counted.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// Size of the length prefix in bytes.
const HEADER_LEN: usize = 4;

/// The reader's buffer never shrinks below this, and grows from it.
const MIN_BUFFER: usize = 8 * 1024;

/// When the reader is idle with a buffer larger than this, the buffer is released.
const IDLE_BUFFER_KEEP: usize = 64 * 1024;

type WireConfig = Configuration<LittleEndian, Varint, Limit<{ MAX_FRAME_LEN as usize }>>;

/// The bincode configuration of the wire: little-endian, varint integers, decode limit = frame limit.
fn config() -> WireConfig {
    bincode::config::standard().with_limit::<{ MAX_FRAME_LEN as usize }>()
}

/// Why a frame could not be read, decoded, encoded or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame declares (or a message encodes to) more than [`MAX_FRAME_LEN`] payload bytes.
    #[error("frame length {len} exceeds the maximum {max}")]
    TooLarge {
        /// The declared or encoded payload length.
        len: u64,
        /// The maximum ([`MAX_FRAME_LEN`]).
        max: u32,
    },
    /// The peer closed the connection in the middle of a frame. Both counts include the 4 header
    /// bytes: `got < 4` means the header itself was cut short.
    #[error("{}", truncated_message(*.expected, *.got))]
    Truncated {
        /// Bytes of the frame (header included) that were expected: 4 while the header is
        /// incomplete, else 4 + the declared payload length.
        expected: usize,
        /// Bytes of the frame (header included) that arrived.
        got: usize,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// Reading or writing the underlying stream failed.
    #[error("frame i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

fn truncated_message(expected: usize, got: usize) -> String {
    if got < HEADER_LEN {
        format!("connection closed mid-frame: got {got} of {HEADER_LEN} header bytes")
    } else {
        format!(
            "connection closed mid-frame: got {} of {} payload bytes",
            got - HEADER_LEN,
            expected.saturating_sub(HEADER_LEN)
        )
    }
}

/// A short, lower-case rendering of a bincode decode error.
fn describe_decode_error(e: &DecodeError) -> String {
    match e {
        DecodeError::UnexpectedEnd { additional } => {
            format!("payload ends early (at least {additional} more bytes needed)")
        }
        DecodeError::LimitExceeded => {
            format!("a length inside the payload exceeds the frame limit of {MAX_FRAME_LEN} bytes")
        }
        DecodeError::InvalidIntegerType { expected, found } => {
            format!("integer marker for {found:?} where {expected:?} was expected")
        }
        DecodeError::UnexpectedVariant {
            type_name, found, ..
        } => format!("invalid tag {found} for {type_name}"),
        DecodeError::Utf8 { inner } => format!("string is not valid utf-8: {inner}"),
        DecodeError::InvalidBooleanValue(v) => format!("invalid boolean byte {v}"),
        DecodeError::OutsideUsizeRange(v) => format!("length {v} does not fit in memory"),
        DecodeError::OtherString(s) => s.clone(),
        DecodeError::Other(s) => (*s).to_string(),
        other => format!("{other:?}"),
    }
}

/// Encodes `msg` as one complete frame: the 4-byte little-endian length, then the payload.
///
/// Fails with [`FrameError::TooLarge`] if the payload would exceed [`MAX_FRAME_LEN`], and with
/// [`FrameError::Encode`] if the receiver's decoder would refuse it: bincode's decode limit
/// charges each integer its full width (`u64` = 8 bytes, lengths 8, enum tags 4), so a message's
/// *decode budget* can exceed its payload size and must also stay within [`MAX_FRAME_LEN`].
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; HEADER_LEN];
    bincode::serde::encode_into_std_write(msg, &mut frame, config())
        .map_err(|e| FrameError::Encode(format!("{e}")))?;
    let len = frame.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN as usize {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    // bincode's decode limit charges decoded widths, not payload bytes; refuse here what the
    // peer's decoder would refuse (see `budget.rs`).
    let budget = decode_budget(msg).map_err(FrameError::Encode)?;
    if budget > u64::from(MAX_FRAME_LEN) {
        return Err(FrameError::Encode(format!(
            "message would charge {budget} bytes against the decode limit of {MAX_FRAME_LEN} \
             ({len} payload bytes); split it into smaller messages"
        )));
    }
    // Fits: len <= MAX_FRAME_LEN < u32::MAX.
    frame[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

/// Decodes one message from a frame's payload (the bytes after the length prefix).
///
/// The whole payload must be consumed: trailing bytes are a [`FrameError::Decode`] error.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    if payload.len() > MAX_FRAME_LEN as usize {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let (msg, used) = bincode::serde::decode_from_slice::<T, _>(payload, config())
        .map_err(|e| FrameError::Decode(describe_decode_error(&e)))?;
    if used != payload.len() {
        return Err(FrameError::Decode(format!(
            "{} trailing bytes after the message ({} of {} payload bytes used)",
            payload.len() - used,
            used,
            payload.len()
        )));
    }
    Ok(msg)
}

/// Writes `msg` as one frame to `w` and flushes it.
///
/// Not cancel-safe: if the future is dropped part-way, a partial frame may have been written and
/// the stream must be abandoned.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads frames from an [`AsyncRead`], buffering partial frames internally.
///
/// [`FrameReader::next`] is cancel-safe: bytes read before a cancellation stay in the buffer and
/// are used by the next call. The buffer grows only as bytes arrive (never to a declared length up
/// front) and never beyond 4 + [`MAX_FRAME_LEN`] bytes plus one read's worth of look-ahead.
pub struct FrameReader<R> {
    inner: R,
    /// Storage; bytes `start..end` are received and not yet consumed, bytes after `end` are
    /// scratch space for the next read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R> fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &(self.end - self.start))
            .field("capacity", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// What the buffer holds right now.
enum Buffered {
    /// A complete frame whose payload is `buf[start..end]`.
    Frame { start: usize, end: usize },
    /// Not a whole frame yet; `need` is the size of the frame being assembled (4 while the
    /// header is incomplete).
    Partial { need: usize },
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `inner`. No bytes are read until [`FrameReader::next`] is called.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped reader. Reading from it directly bypasses (and desynchronizes) the framing.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Number of bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads the next frame and decodes it.
    ///
    /// Returns `Ok(None)` when the stream ends exactly at a frame boundary, and
    /// [`FrameError::Truncated`] when it ends inside a frame. A frame whose declared length exceeds
    /// [`MAX_FRAME_LEN`] is rejected with [`FrameError::TooLarge`] before its body is read; the
    /// stream cannot be resynchronized after that, and every later call fails the same way. A
    /// frame that fails to decode is consumed, so the caller may report the error and go on.
    ///
    /// Cancel-safe: dropping the future before it completes loses no bytes.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        loop {
            let need = match self.check()? {
                Buffered::Frame { start, end } => {
                    // Consume the frame before decoding, so a bad frame does not wedge the stream.
                    self.start = end;
                    let result = decode_payload(&self.buf[start..end]);
                    self.after_consume();
                    return result.map(Some);
                }
                Buffered::Partial { need } => need,
            };
            self.make_room(need);
            // Cancel-safety: nothing is committed until `read` has returned; the read target is
            // scratch space past `end`.
            let n = self.inner.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                let got = self.end - self.start;
                if got == 0 {
                    return Ok(None);
                }
                return Err(FrameError::Truncated {
                    expected: need,
                    got,
                });
            }
            self.end += n;
        }
    }

    /// Looks at the buffered bytes: a whole frame, or how large the frame being assembled is.
    fn check(&self) -> Result<Buffered, FrameError> {
        let have = self.end - self.start;
        if have < HEADER_LEN {
            return Ok(Buffered::Partial { need: HEADER_LEN });
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let len = u32::from_le_bytes(header);
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: MAX_FRAME_LEN,
            });
        }
        let need = HEADER_LEN + len as usize;
        if have >= need {
            Ok(Buffered::Frame {
                start: self.start + HEADER_LEN,
                end: self.start + need,
            })
        } else {
            Ok(Buffered::Partial { need })
        }
    }

    /// Ensures there is scratch space after `end` for a read, growing the buffer geometrically
    /// (never straight to a declared length) but never past what the current frame needs plus
    /// the minimum buffer.
    fn make_room(&mut self, need: usize) {
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            // Move the partial frame to the front; happens at most once per frame.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end < self.buf.len() {
                return;
            }
        }
        // Here `need > end`: the frame is incomplete, so the new size exceeds `end`.
        let grown = need.min(self.buf.len().saturating_mul(2));
        let new_len = grown.max(MIN_BUFFER);
        self.buf.resize(new_len, 0);
    }

    /// Resets the cursors once everything buffered has been consumed, and releases a large
    /// buffer so an idle connection does not pin a megabyte.
    fn after_consume(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > IDLE_BUFFER_KEEP {
                self.buf = Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, JobRequest, ServerMessage, Stream};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;
    use tokio::io::ReadBuf;

    fn hello() -> ClientMessage {
        ClientMessage::Hello {
            version: 1,
            client: "test".into(),
        }
    }

    /// Serves `data`, then panics if polled again (EOF is never reached).
    struct PanicAfter {
        data: Vec<u8>,
        served: bool,
    }

    impl AsyncRead for PanicAfter {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            assert!(!self.served, "read past the frame header");
            assert!(buf.remaining() >= self.data.len());
            buf.put_slice(&self.data);
            self.served = true;
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn encode_frame_prefixes_le_length() {
        let frame = encode_frame(&hello()).unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let back: ClientMessage = decode_payload(&frame[4..]).unwrap();
        assert_eq!(back, hello());
    }

    #[test]
    fn encode_rejects_oversize_message() {
        let msg = ServerMessage::Output {
            job: "j".into(),
            stream: Stream::Stdout,
            data: vec![7; MAX_FRAME_LEN as usize],
        };
        match encode_frame(&msg) {
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > u64::from(MAX_FRAME_LEN));
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    /// Encodes with bincode directly, bypassing `encode_frame`'s checks.
    fn raw_payload<T: Serialize>(msg: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(msg, config()).unwrap()
    }

    /// Pads a message until its decode budget is exactly the limit: it must encode and decode;
    /// one byte more must be refused by `encode_frame` and by the decoder alike.
    fn pin_at_limit<M>(make: impl Fn(usize) -> M)
    where
        M: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        let base = decode_budget(&make(0)).unwrap();
        let pad = (u64::from(MAX_FRAME_LEN) - base) as usize;
        let at = make(pad);
        assert_eq!(decode_budget(&at).unwrap(), u64::from(MAX_FRAME_LEN));
        let frame = encode_frame(&at).unwrap();
        assert!(frame.len() <= 4 + MAX_FRAME_LEN as usize);
        assert_eq!(decode_payload::<M>(&frame[4..]).unwrap(), at);

        let over = make(pad + 1);
        let err = encode_frame(&over).unwrap_err();
        assert!(matches!(err, FrameError::Encode(_)), "{err:?}");
        assert!(err.to_string().contains("decode limit"), "{err}");
        let raw = raw_payload(&over);
        assert!(raw.len() <= MAX_FRAME_LEN as usize);
        let err = decode_payload::<M>(&raw).unwrap_err();
        assert!(err.to_string().contains("exceeds the frame limit"), "{err}");
    }

    #[test]
    fn decode_budget_matches_bincode_at_the_limit() {
        use crate::{Cause, ErrorKind, JobSummary, ResultRecord};
        pin_at_limit(|pad| ServerMessage::Output {
            job: "j".into(),
            stream: Stream::Stderr,
            data: vec![7; pad],
        });
        pin_at_limit(|pad| ClientMessage::Submit {
            request: 1 << 40,
            job: JobRequest {
                profile: "p".repeat(pad),
                argv: vec!["a".into(), String::new()],
                workspace: Some("/w".into()),
                timeout_ms: None,
                env: vec![("K".into(), "V".into())],
                cpu_limit_ms: Some(1),
                idle_timeout_ms: Some(u64::MAX),
                output_limit_bytes: None,
            },
        });
        pin_at_limit(|pad| {
            let mut jobs = vec![
                JobSummary {
                    job: "j-1".into(),
                    profile: "build".into(),
                    argv: vec!["make".into()],
                    owner_uid: 1000,
                    running_ms: 5,
                };
                3
            ];
            jobs[2].profile = "x".repeat(pad);
            ServerMessage::Jobs { request: 3, jobs }
        });
        pin_at_limit(|pad| ServerMessage::Result {
            job: "j".into(),
            record: ResultRecord {
                version: 1,
                job: "j".into(),
                profile: "p".into(),
                cause: Cause::SetupFailed {
                    step: "s".into(),
                    syscall: "c".into(),
                    errno: -1,
                    message: "m".repeat(pad),
                },
                exit_code: 125,
                wall_ms: 1,
                cpu_ms: None,
                peak_memory_bytes: Some(2),
                uid: None,
                gid: Some(3),
                enforcement: vec![],
                pids_peak: Some(4),
                output_bytes: 5,
                output_truncated: true,
                profile_hash: String::new(),
            },
        });
        pin_at_limit(|pad| ServerMessage::Error {
            request: Some(1),
            kind: ErrorKind::Internal,
            message: "e".repeat(pad),
        });
    }

    #[tokio::test]
    async fn oversize_declared_length_is_rejected_after_the_header_only() {
        for len in [MAX_FRAME_LEN + 1, u32::MAX] {
            let mut reader = FrameReader::new(PanicAfter {
                data: len.to_le_bytes().to_vec(),
                served: false,
            });
            let err = reader.next::<ClientMessage>().await.unwrap_err();
            match &err {
                FrameError::TooLarge { len: l, max } => {
                    assert_eq!(*l, u64::from(len));
                    assert_eq!(*max, MAX_FRAME_LEN);
                }
                other => panic!("expected TooLarge, got {other:?}"),
            }
            // Nothing beyond the initial small buffer was allocated.
            assert!(reader.buf.len() <= MIN_BUFFER);
            // The error repeats without reading further.
            assert!(matches!(
                reader.next::<ClientMessage>().await,
                Err(FrameError::TooLarge { .. })
            ));
        }
        assert_eq!(
            FrameError::TooLarge {
                len: u64::from(u32::MAX),
                max: MAX_FRAME_LEN
            }
            .to_string(),
            "frame length 4294967295 exceeds the maximum 1048576"
        );
    }

    #[tokio::test]
    async fn buffer_grows_with_arrivals_not_with_declared_length() {
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(rx);
        // Declares the maximum, sends 10 bytes of body.
        tx.write_all(&MAX_FRAME_LEN.to_le_bytes()).await.unwrap();
        tx.write_all(&[0u8; 10]).await.unwrap();
        let r =
            tokio::time::timeout(Duration::from_millis(50), reader.next::<ClientMessage>()).await;
        assert!(r.is_err(), "must still be waiting for the body");
        assert_eq!(reader.buffered(), 14);
        assert!(reader.buf.len() <= MIN_BUFFER);
    }

    #[tokio::test]
    async fn clean_eof_at_frame_boundary() {
        let mut bytes = encode_frame(&hello()).unwrap();
        bytes.extend(encode_frame(&hello()).unwrap());
        let mut reader = FrameReader::new(&bytes[..]);
        assert_eq!(reader.next::<ClientMessage>().await.unwrap(), Some(hello()));
        assert_eq!(reader.next::<ClientMessage>().await.unwrap(), Some(hello()));
        assert_eq!(reader.next::<ClientMessage>().await.unwrap(), None);
        assert_eq!(reader.next::<ClientMessage>().await.unwrap(), None);

        let mut empty = FrameReader::new(&[][..]);
        assert_eq!(empty.next::<ClientMessage>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn truncated_header() {
        let frame = encode_frame(&hello()).unwrap();
        let mut reader = FrameReader::new(&frame[..3]);
        let err = reader.next::<ClientMessage>().await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    expected: 4,
                    got: 3
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "connection closed mid-frame: got 3 of 4 header bytes"
        );
    }

    #[tokio::test]
    async fn truncated_body() {
        let frame = encode_frame(&hello()).unwrap();
        let cut = frame.len() - 2;
        let mut reader = FrameReader::new(&frame[..cut]);
        let err = reader.next::<ClientMessage>().await.unwrap_err();
        match err {
            FrameError::Truncated { expected, got } => {
                assert_eq!(expected, frame.len());
                assert_eq!(got, cut);
            }
            ref other => panic!("expected Truncated, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "connection closed mid-frame: got {} of {} payload bytes",
                cut - 4,
                frame.len() - 4
            )
        );
    }

    #[tokio::test]
    async fn truncated_after_a_good_frame() {
        let mut bytes = encode_frame(&hello()).unwrap();
        bytes.extend_from_slice(&[5, 0]);
        let mut reader = FrameReader::new(&bytes[..]);
        assert_eq!(reader.next::<ClientMessage>().await.unwrap(), Some(hello()));
        assert!(matches!(
            reader.next::<ClientMessage>().await,
            Err(FrameError::Truncated {
                expected: 4,
                got: 2
            })
        ));
    }

    #[tokio::test]
    async fn garbage_payload_is_a_decode_error_and_the_stream_continues() {
        // Variant index 200 does not exist; then a good frame.
        let mut bytes = vec![3, 0, 0, 0, 200, 1, 2];
        bytes.extend(encode_frame(&hello()).unwrap());
        let mut reader = FrameReader::new(&bytes[..]);
        let err = reader.next::<ClientMessage>().await.unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
        assert!(err.to_string().starts_with("cannot decode message: "));
        assert_eq!(reader.next::<ClientMessage>().await.unwrap(), Some(hello()));
    }

    #[test]
    fn garbage_payloads() {
        let cases: &[&[u8]] = &[
            &[],                                  // empty
            &[0],                                 // Hello without fields
            &[0, 1, 5, b'a'],                     // string shorter than declared
            &[0, 1, 2, 0xff, 0xfe],               // invalid utf-8
            &[0, 253, 1, 2, 3, 4, 5, 6, 7, 8, 0], // u64 marker for a u32 field
            &[3, 0xfe],                           // reserved varint marker
            &[2, 1, 1, b'j', 9],                  // a whole Cancel, then a trailing byte
        ];
        for payload in cases {
            let r = decode_payload::<ClientMessage>(payload);
            assert!(
                matches!(r, Err(FrameError::Decode(_))),
                "{payload:?}: {r:?}"
            );
        }
        // Option tag other than 0/1.
        let r = decode_payload::<ServerMessage>(&[6, 2, 0, 0]);
        assert!(matches!(r, Err(FrameError::Decode(_))), "{r:?}");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let frame = encode_frame(&hello()).unwrap();
        let mut payload = frame[4..].to_vec();
        payload.push(0);
        let err = decode_payload::<ClientMessage>(&payload).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)));
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn forged_inner_lengths_fail_without_allocating() {
        // List of argv claiming 2^60 elements: Submit, request 1, profile "p", argv len = 2^60.
        let mut payload = vec![1, 1, 1, b'p', 253];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        payload.extend_from_slice(&[1, b'x']);
        let err = decode_payload::<ClientMessage>(&payload).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");

        // Output data claiming u64::MAX bytes.
        let mut payload = vec![2, 1, b'j', 0, 253];
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = decode_payload::<ServerMessage>(&payload).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");

        // A string claiming 2^40 bytes is stopped by the decode limit before reading.
        let mut payload = vec![0, 1, 253];
        payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode_payload::<ClientMessage>(&payload).unwrap_err();
        assert!(err.to_string().contains("exceeds the frame limit"), "{err}");

        // Jobs list claiming 2^60 summaries.
        let mut payload = vec![5, 1, 253];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = decode_payload::<ServerMessage>(&payload).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    }

    #[tokio::test]
    async fn write_frame_then_read() {
        let (mut a, b) = tokio::io::duplex(1024);
        let msgs = vec![
            hello(),
            ClientMessage::Submit {
                request: 1,
                job: JobRequest {
                    profile: "build".into(),
                    argv: vec!["make".into()],
                    ..Default::default()
                },
            },
            ClientMessage::List { request: 2 },
        ];
        let sent = msgs.clone();
        let writer = tokio::spawn(async move {
            for m in &sent {
                write_frame(&mut a, m).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(b);
        let mut got = Vec::new();
        while let Some(m) = reader.next::<ClientMessage>().await.unwrap() {
            got.push(m);
        }
        writer.await.unwrap();
        assert_eq!(got, msgs);
    }

    fn sample_stream() -> (Vec<ServerMessage>, Vec<u8>) {
        let mut msgs = Vec::new();
        for i in 0..20u8 {
            msgs.push(ServerMessage::Output {
                job: format!("j-{i}"),
                stream: if i % 2 == 0 {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                },
                data: (0..(i as usize * 37)).map(|b| b as u8).collect(),
            });
        }
        msgs.push(ServerMessage::Accepted {
            request: 300,
            job: "j-last".into(),
        });
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.extend(encode_frame(m).unwrap());
        }
        (msgs, bytes)
    }

    /// Deterministic: after every byte, the read is polled once and then canceled.
    #[tokio::test]
    async fn cancel_safe_deterministic() {
        let (msgs, bytes) = sample_stream();
        let (mut tx, rx) = tokio::io::duplex(16);
        let mut reader = FrameReader::new(rx);
        let mut got = Vec::new();
        let mut canceled = 0;
        for b in &bytes {
            tx.write_all(std::slice::from_ref(b)).await.unwrap();
            tokio::select! {
                biased;
                r = reader.next::<ServerMessage>() => got.push(r.unwrap().unwrap()),
                _ = std::future::ready(()) => canceled += 1,
            }
        }
        drop(tx);
        assert_eq!(reader.next::<ServerMessage>().await.unwrap(), None);
        assert_eq!(got, msgs);
        assert_eq!(canceled, bytes.len() - msgs.len());
    }

    /// Timing-based: a writer feeds a few bytes at a time while the reader races a short sleep.
    #[tokio::test]
    async fn cancel_safe_against_sleep() {
        let (msgs, bytes) = sample_stream();
        let (mut tx, rx) = tokio::io::duplex(8);
        let writer = tokio::spawn(async move {
            for (i, chunk) in bytes.chunks(7).enumerate() {
                tx.write_all(chunk).await.unwrap();
                if i % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut reader = FrameReader::new(rx);
        let mut got = Vec::new();
        let mut timeouts = 0u32;
        loop {
            tokio::select! {
                r = reader.next::<ServerMessage>() => match r.unwrap() {
                    Some(m) => got.push(m),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_micros(200)) => timeouts += 1,
            }
        }
        writer.await.unwrap();
        assert_eq!(got, msgs);
        assert!(timeouts > 0, "the test never canceled a read");
    }

    #[tokio::test]
    async fn large_frame_through_small_pipe_releases_buffer() {
        let msg = ServerMessage::Output {
            job: "big".into(),
            stream: Stream::Stdout,
            data: vec![0xab; 512 * 1024],
        };
        let small = hello();
        let (mut tx, rx) = tokio::io::duplex(4096);
        let m2 = msg.clone();
        let writer = tokio::spawn(async move {
            write_frame(&mut tx, &m2).await.unwrap();
            write_frame(&mut tx, &small).await.unwrap();
        });
        let mut reader = FrameReader::new(rx);
        assert_eq!(reader.next::<ServerMessage>().await.unwrap(), Some(msg));
        writer.await.unwrap();
        let hello_back: ClientMessage = reader.next().await.unwrap().unwrap();
        assert_eq!(hello_back, hello());
        assert!(reader.buf.len() <= IDLE_BUFFER_KEEP);
    }
}
