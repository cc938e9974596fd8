//! Wire protocol of stockade: messages, length-prefixed framing, handshake and an async client.
//!
//! See `docs/protocol.md` for the bytes.

mod messages;

pub use messages::*;
