//! ClickHouse's RowBinary encoding of our row types, through serde: the pipeline encodes each
//! row as it is built, so that a batch waiting for ClickHouse is bytes, not structs (issue 15:
//! bigger batches, fewer inserts, within the memory budget).
//!
//! The `clickhouse` crate has the same serializer, but it is private to the crate. The wire
//! format is the one its docs give (<https://clickhouse.com/docs/interfaces/formats/RowBinary>):
//!
//! | serde | RowBinary |
//! | --- | --- |
//! | `bool`, integers | 1 byte / little-endian fixed width |
//! | `str` | LEB128 length, then the UTF-8 bytes (`String`, `LowCardinality(String)`) |
//! | `Option<T>` | one byte, 1 = NULL, 0 = a value follows (`Nullable(T)`) |
//! | sequences | LEB128 count, then the elements (`Array(T)`; `Map(K, V)` as pairs) |
//! | tuples, structs | the elements in order, nothing else |
//!
//! Anything else (floats, maps, enums, chars, bytes) is refused: our rows do not hold them, and
//! a type that would be encoded wrongly must fail a test, not reach ClickHouse.

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{self, Serialize};

/// Why a row could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("RowBinary: {0}")]
    Message(String),
    #[error("RowBinary: {0} is not supported by tether-pro's rows")]
    Unsupported(&'static str),
    #[error("RowBinary: the data ended inside a row")]
    Eof,
}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error::Message(msg.to_string())
    }
}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error::Message(msg.to_string())
    }
}

/// Appends `row` to `out` in RowBinary. In debug builds, checks each field's name against
/// `columns` (the table's inserted columns, in order), so a row type and the insert's header
/// cannot drift apart unnoticed.
pub fn encode<R: Serialize>(row: &R, columns: &'static [(&'static str, &'static str)], out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    let r = row.serialize(&mut Encoder { out, columns, field: 0 });
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Decodes every row of `input` (the rows one [`encode`] after another wrote).
pub fn decode_all<R: de::DeserializeOwned>(mut input: &[u8]) -> Result<Vec<R>, Error> {
    let mut rows = Vec::new();
    while !input.is_empty() {
        rows.push(R::deserialize(&mut Decoder { input: &mut input })?);
    }
    Ok(rows)
}

/// The `RowBinaryWithNamesAndTypes` header for `columns`: ClickHouse refuses an insert whose
/// header names a missing column (Code 16) or another type (Code 117) instead of reading the
/// rows wrongly.
pub fn header(columns: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    leb128(&mut out, columns.len() as u64);
    for (name, _) in columns {
        string(&mut out, name.as_bytes());
    }
    for (_, ty) in columns {
        string(&mut out, ty.as_bytes());
    }
    out
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    leb128(out, s.len() as u64);
    out.extend_from_slice(s);
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    columns: &'static [(&'static str, &'static str)],
    field: usize,
}

macro_rules! fixed {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<(), Error> {
            self.out.extend_from_slice(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

macro_rules! unsupported {
    ($($f:ident($($t:ty),*) -> $r:ty: $what:literal),*) => {$(
        fn $f(self, $(_: $t),*) -> Result<$r, Error> {
            Err(Error::Unsupported($what))
        }
    )*};
}

impl<'b> ser::Serializer for &'b mut Encoder<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fixed!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        string(self.out, v.as_bytes());
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.out.push(1);
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        self.out.push(0);
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        let len = len.ok_or(Error::Unsupported("a sequence of unknown length"))?;
        leb128(self.out, len as u64);
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }

    unsupported!(
        serialize_f32(f32) -> (): "f32", serialize_f64(f64) -> (): "f64", serialize_char(char) -> (): "char",
        serialize_bytes(&[u8]) -> (): "bytes", serialize_unit() -> (): "()",
        serialize_unit_struct(&'static str) -> (): "a unit struct",
        serialize_unit_variant(&'static str, u32, &'static str) -> (): "an enum",
        serialize_map(Option<usize>) -> Self::SerializeMap: "a map",
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant: "an enum",
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant: "an enum"
    );

    fn serialize_newtype_variant<T: ?Sized + Serialize>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<(), Error> {
        Err(Error::Unsupported("an enum"))
    }
}

impl ser::SerializeSeq for &mut Encoder<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut Encoder { out: self.out, columns: &[], field: 0 })
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Encoder<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut Encoder { out: self.out, columns: &[], field: 0 })
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Encoder<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut Encoder { out: self.out, columns: &[], field: 0 })
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Encoder<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        // The row's fields are the insert header's columns, in order (checked where it is cheap).
        if cfg!(debug_assertions) && !self.columns.is_empty() {
            let want = self.columns.get(self.field).map(|c| c.0);
            if want != Some(key) {
                return Err(Error::Message(format!("field {key} is column {} of the row, where the table's inserted columns have {want:?}", self.field)));
            }
        }
        self.field += 1;
        value.serialize(&mut Encoder { out: self.out, columns: &[], field: 0 })
    }
    fn end(self) -> Result<(), Error> {
        if cfg!(debug_assertions) && !self.columns.is_empty() && self.field != self.columns.len() {
            return Err(Error::Message(format!("the row has {} fields, the table's inserted columns {}", self.field, self.columns.len())));
        }
        Ok(())
    }
}

struct Decoder<'a, 'de> {
    input: &'a mut &'de [u8],
}

impl<'de> Decoder<'_, 'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8], Error> {
        if self.input.len() < n {
            return Err(Error::Eof);
        }
        let (head, rest) = self.input.split_at(n);
        *self.input = rest;
        Ok(head)
    }

    fn leb128(&mut self) -> Result<u64, Error> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Error::Message("a length longer than 64 bits".into()))
    }

    fn str(&mut self) -> Result<&'de str, Error> {
        let len = usize::try_from(self.leb128()?).map_err(|_| Error::Eof)?;
        std::str::from_utf8(self.take(len)?).map_err(|e| Error::Message(format!("a String that is not UTF-8: {e}")))
    }
}

macro_rules! read_fixed {
    ($($f:ident: $t:ty => $visit:ident),*) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let bytes = self.take(std::mem::size_of::<$t>())?;
            visitor.$visit(<$t>::from_le_bytes(bytes.try_into().expect("sized")))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'_, 'de> {
    type Error = Error;

    read_fixed!(
        deserialize_i8: i8 => visit_i8, deserialize_i16: i16 => visit_i16, deserialize_i32: i32 => visit_i32,
        deserialize_i64: i64 => visit_i64, deserialize_u8: u8 => visit_u8, deserialize_u16: u16 => visit_u16,
        deserialize_u32: u32 => visit_u32, deserialize_u64: u64 => visit_u64
    );

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("a self-describing value"))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.take(1)?[0] {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(Error::Message(format!("a Bool byte {b}"))),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.str()?)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.str()?)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.take(1)?[0] {
            1 => visitor.visit_none(),
            0 => visitor.visit_some(self),
            b => Err(Error::Message(format!("a Nullable marker byte {b}"))),
        }
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let len = usize::try_from(self.leb128()?).map_err(|_| Error::Eof)?;
        visitor.visit_seq(Elements { de: self, left: len })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Elements { de: self, left: len })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Elements { de: self, left: len })
    }
    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Elements { de: self, left: fields.len() })
    }

    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("f32"))
    }
    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("f64"))
    }
    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("char"))
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("bytes"))
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("bytes"))
    }
    fn deserialize_unit<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("()"))
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("a unit struct"))
    }
    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("a map"))
    }
    fn deserialize_enum<V: Visitor<'de>>(self, _: &'static str, _: &'static [&'static str], _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("an enum"))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("an identifier"))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::Unsupported("an ignored value"))
    }
}

struct Elements<'x, 'a, 'de> {
    de: &'x mut Decoder<'a, 'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, '_, 'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        s: String,
        n: u32,
        big: u64,
        t: i64,
        b: bool,
        opt: Option<i64>,
        none: Option<i64>,
        list: Vec<String>,
        pairs: Vec<(String, u32)>,
        shared: std::sync::Arc<str>,
    }

    const SAMPLE_COLUMNS: &[(&str, &str)] = &[
        ("s", "String"), ("n", "UInt32"), ("big", "UInt64"), ("t", "Int64"), ("b", "Bool"), ("opt", "Nullable(Int64)"),
        ("none", "Nullable(Int64)"), ("list", "Array(String)"), ("pairs", "Map(String, UInt32)"), ("shared", "String"),
    ];

    fn sample() -> Sample {
        Sample {
            s: "é".repeat(100), // 200 bytes: a two-byte length
            n: 7,
            big: u64::MAX,
            t: -2,
            b: true,
            opt: Some(1_700_000_000_123),
            none: None,
            list: vec!["a".into(), String::new()],
            pairs: vec![("k".into(), 3)],
            shared: "x".into(),
        }
    }

    #[test]
    fn the_wire_format_is_clickhouses() {
        let mut out = Vec::new();
        encode(&sample(), SAMPLE_COLUMNS, &mut out).unwrap();
        let mut want = vec![0xc8, 0x01]; // 200 as LEB128
        want.extend("é".repeat(100).as_bytes());
        want.extend(7u32.to_le_bytes());
        want.extend(u64::MAX.to_le_bytes());
        want.extend((-2i64).to_le_bytes());
        want.push(1);
        want.push(0);
        want.extend(1_700_000_000_123i64.to_le_bytes());
        want.push(1);
        want.extend([2, 1, b'a', 0]);
        want.extend([1, 1, b'k', 3, 0, 0, 0]);
        want.extend([1, b'x']);
        assert_eq!(out, want);
    }

    #[test]
    fn rows_decode_to_what_was_encoded() {
        let mut out = Vec::new();
        encode(&sample(), SAMPLE_COLUMNS, &mut out).unwrap();
        encode(&Sample { s: String::new(), list: vec![], pairs: vec![], opt: None, ..sample() }, SAMPLE_COLUMNS, &mut out).unwrap();
        let rows: Vec<Sample> = decode_all(&out).unwrap();
        assert_eq!(rows, vec![sample(), Sample { s: String::new(), list: vec![], pairs: vec![], opt: None, ..sample() }]);
    }

    #[test]
    fn cut_or_corrupt_data_is_an_error_not_a_row() {
        let mut out = Vec::new();
        encode(&sample(), SAMPLE_COLUMNS, &mut out).unwrap();
        for cut in [1, 10, out.len() - 1] {
            assert_eq!(decode_all::<Sample>(&out[..cut]), Err(Error::Eof), "cut at {cut}");
        }
        let mut bad = out.clone();
        bad[2] = 0xff; // inside the UTF-8 of `s`
        assert!(matches!(decode_all::<Sample>(&bad), Err(Error::Message(_))));
    }

    #[test]
    fn a_field_out_of_the_columns_order_is_refused_and_nothing_is_written() {
        let mut swapped = SAMPLE_COLUMNS.to_vec();
        swapped.swap(1, 2);
        let swapped: &'static [(&str, &str)] = Box::leak(swapped.into_boxed_slice());
        let mut out = vec![9];
        let err = encode(&sample(), swapped, &mut out).unwrap_err();
        assert!(err.to_string().contains("field n is column 1"), "{err}");
        assert_eq!(out, vec![9], "a refused row leaves the buffer as it was");
        assert!(encode(&sample(), &SAMPLE_COLUMNS[..3], &mut out).is_err(), "more fields than columns");
    }

    #[test]
    fn types_our_rows_do_not_hold_are_refused() {
        assert_eq!(encode(&1.5f64, &[], &mut Vec::new()), Err(Error::Unsupported("f64")));
        let map: std::collections::BTreeMap<String, u32> = [("a".to_owned(), 1)].into();
        assert_eq!(encode(&map, &[], &mut Vec::new()), Err(Error::Unsupported("a map")));
    }

    #[test]
    fn the_header_names_and_types_the_columns() {
        let h = header(&[("a", "String"), ("bb", "UInt32")]);
        assert_eq!(h, [&[2u8, 1, b'a', 2, b'b', b'b', 6][..], b"String", &[6], b"UInt32"].concat());
    }
}
