//! The decode budget of a message: what bincode's decode limit will charge for it.
//!
//! bincode 2 enforces its limit (here [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN)) not on payload
//! bytes but on *decoded* bytes: every integer is charged its full width whatever its varint
//! length (`u32` 4, `u64` 8), every length prefix 8, every enum tag 4, every `Option` tag 1,
//! and every string or byte buffer its length. So a payload under the frame limit can still be
//! refused by the decoder. [`decode_budget`] computes that charge without encoding, so
//! [`encode_frame`](crate::encode_frame) refuses such a message at the sender instead.
//!
//! The rules mirror bincode 2.0.1's `Decode` impls as reached through its serde deserializer;
//! the tests in `frame.rs` pin them at the exact limit.

use std::fmt;

use serde::ser::{self, Serialize};

/// Bytes bincode's decoder will charge against its limit when decoding `msg`.
pub(crate) fn decode_budget<T: Serialize + ?Sized>(msg: &T) -> Result<u64, String> {
    let mut counter = Counter(0);
    msg.serialize(&mut counter).map_err(|e| e.0)?;
    Ok(counter.0)
}

/// Widths bincode charges.
const TAG: u64 = 4; // enum variant index, decoded as u32
const LEN: u64 = 8; // sequence, string and map lengths, decoded as u64
const OPTION_TAG: u64 = 1;

struct Counter(u64);

impl Counter {
    fn add(&mut self, n: u64) {
        self.0 = self.0.saturating_add(n);
    }
}

#[derive(Debug)]
struct CountError(String);

impl fmt::Display for CountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CountError {}

impl ser::Error for CountError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CountError(msg.to_string())
    }
}

type R = Result<(), CountError>;

impl ser::Serializer for &mut Counter {
    type Ok = ();
    type Error = CountError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> R {
        self.add(1);
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        self.add(1);
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        self.add(2);
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> R {
        self.add(4);
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        self.add(8);
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> R {
        self.add(16);
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        self.add(1);
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        self.add(2);
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        self.add(4);
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        self.add(8);
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> R {
        self.add(16);
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        self.add(4);
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        self.add(8);
        Ok(())
    }
    fn serialize_char(self, v: char) -> R {
        self.add(v.len_utf8() as u64);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        self.add(LEN + v.len() as u64);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        self.add(LEN + v.len() as u64);
        Ok(())
    }
    fn serialize_none(self) -> R {
        self.add(OPTION_TAG);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        self.add(OPTION_TAG);
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        self.add(TAG);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        self.add(TAG);
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, CountError> {
        self.add(LEN);
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, CountError> {
        self.add(TAG);
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, CountError> {
        self.add(LEN);
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, CountError> {
        self.add(TAG);
        Ok(self)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

impl ser::SerializeSeq for &mut Counter {
    type Ok = ();
    type Error = CountError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Counter {
    type Ok = ();
    type Error = CountError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Counter {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for &mut Counter {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Counter {
    type Ok = ();
    type Error = CountError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> R {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Counter {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Counter {
    type Ok = ();
    type Error = CountError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}
