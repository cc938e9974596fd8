//! Framing of the launch plan and of the setup error on the helper's control socket.
//!
//! Same shape as the client protocol: u32 little-endian length, then a bincode 2 payload decoded
//! with a hard limit, so a corrupt length can never make the helper allocate without bound.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest plan or error frame accepted (a plan with a huge environment is still far below).
pub const MAX_CONTROL_FRAME: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_CONTROL_FRAME>()
}

/// Encode `msg` as a length-prefixed frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, String> {
    let payload = bincode::serde::encode_to_vec(msg, config()).map_err(|e| e.to_string())?;
    if payload.len() > MAX_CONTROL_FRAME {
        return Err(format!(
            "control frame of {} bytes exceeds the maximum {MAX_CONTROL_FRAME}",
            payload.len()
        ));
    }
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decode a frame body (without the length prefix). Trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    let (msg, used) =
        bincode::serde::decode_from_slice(payload, config()).map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        ));
    }
    Ok(msg)
}

/// Check a length prefix against the limit.
pub fn check_len(header: [u8; 4]) -> Result<usize, String> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_CONTROL_FRAME {
        return Err(format!(
            "control frame length {len} exceeds the maximum {MAX_CONTROL_FRAME}"
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SetupError, Step};

    #[test]
    fn round_trip_and_limits() {
        let err = SetupError::other(Step::Exec, "execve(\"x\")", "command not found");
        let frame = encode(&err).unwrap();
        let len = check_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode::<SetupError>(&frame[4..]).unwrap(), err);
        assert!(check_len(u32::MAX.to_le_bytes())
            .unwrap_err()
            .contains("exceeds the maximum"));
        let mut trailing = frame[4..].to_vec();
        trailing.push(0);
        assert!(decode::<SetupError>(&trailing)
            .unwrap_err()
            .contains("trailing"));
        // A forged inner length (a string claiming 2^60 bytes) is a decode error, not an abort.
        let forged = [0u8, 253, 0, 0, 0, 0, 0, 0, 0, 16];
        assert!(decode::<SetupError>(&forged).is_err());
    }
}
