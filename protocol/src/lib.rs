//! Wire protocol of stockade: messages, length-prefixed framing, handshake and an async client.
//!
//! Framing: every message travels as one frame, a `u32` little-endian payload length followed by
//! the payload. The payload is the message encoded with bincode 2 in its `standard`
//! configuration (little-endian, varint integers) through serde; it must be consumed exactly.
//! A frame carries at most [`MAX_FRAME_LEN`] (1 MiB) of payload; larger declared lengths are
//! rejected before anything is read or allocated. EOF between frames is a clean end.
//!
//! The first exchange is a handshake ([`ClientMessage::Hello`] / [`ServerMessage::Hello`]); see
//! `docs/protocol.md` for the exact bytes, variant indices, the job lifecycle and limits.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod budget;
mod client;
mod frame;
mod fs;
mod messages;

pub use client::{Client, ClientError, HANDSHAKE_TIMEOUT};
pub use frame::{
    decode_payload, encode_frame, write_frame, FrameError, FrameReader, MAX_FRAME_LEN,
};
pub use fs::*;
pub use messages::*;

#[cfg(test)]
mod tests;
