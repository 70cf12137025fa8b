//! Reading task files as text: BOM stripping, UTF-8 checks with line numbers, byte offsets to
//! line/column, JSON type names for messages, and the key order of the schema's `properties`.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::TaskError;

/// The UTF-8 byte order mark.
pub(super) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads a whole file as bytes; `what` names the file in the error ("schema", "prompt", ...).
pub(super) fn read_bytes(path: &Path, what: &'static str) -> Result<Vec<u8>, TaskError> {
    fs_err::read(path).map_err(|error| TaskError::Read { what, path: path.to_path_buf(), error })
}

/// Reads a UTF-8 text file, dropping a leading BOM. Line endings are left as they are.
pub(super) fn read_text(path: &Path, what: &'static str) -> Result<String, TaskError> {
    let mut bytes = read_bytes(path, what)?;
    if bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
    }
    String::from_utf8(bytes).map_err(|err| {
        let bytes = err.as_bytes();
        let bad = err.utf8_error().valid_up_to();
        let line = bytes[..bad].split(|&b| b == b'\n').count();
        let line_start = bytes[..bad].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        TaskError::NotUtf8 { what, path: path.to_path_buf(), line, column: bad - line_start + 1 }
    })
}

/// 1-based line and column (in characters) of a byte offset into `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = 1 + before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, 1 + before[line_start..].chars().count())
}

/// "a string", "an array", ... for messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Cuts a long message to about `max` characters (validator messages quote whole values).
pub(crate) fn shorten(message: &str, max: usize) -> String {
    match message.char_indices().nth(max) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}...", &message[..cut]),
    }
}

/// The keys of the top-level `properties` object of a JSON document, in document order.
///
/// `serde_json::Value` may sort object keys (without its `preserve_order` feature), so the order
/// is read from the text. Returns an empty list when the text has no such object; the caller
/// falls back to the map order.
pub(super) fn property_order(json: &str) -> Vec<String> {
    member_keys(json, "properties")
}

/// The keys of the object `member` of the top-level object of a JSON document, in document
/// order (empty when there is no such object).
pub(crate) fn member_keys(json: &str, member: &str) -> Vec<String> {
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(TopLevel(member)).unwrap_or_default()
}

/// The keys of a JSON object in document order (empty when `json` is not an object).
pub(crate) fn object_keys(json: &str) -> Vec<String> {
    let mut de = serde_json::Deserializer::from_str(json);
    de::Deserialize::deserialize(&mut de).map(|k: KeyOrder| k.0).unwrap_or_default()
}

/// Visits the top-level object, collecting the keys of its member named by the field.
struct TopLevel<'m>(&'m str);

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut order = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 {
                order = map.next_value::<KeyOrder>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(order)
    }
}

/// The keys of a JSON object in document order; anything else gives no keys.
struct KeyOrder(Vec<String>);

impl<'de> de::Deserialize<'de> for KeyOrder {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = KeyOrder;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                Ok(KeyOrder(keys))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyOrder, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyOrder(Vec::new()))
            }

            fn visit_unit<E: de::Error>(self) -> Result<KeyOrder, E> {
                Ok(KeyOrder(Vec::new()))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeyOrder, E> {
                Ok(KeyOrder(Vec::new()))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeyOrder, E> {
                Ok(KeyOrder(Vec::new()))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeyOrder, E> {
                Ok(KeyOrder(Vec::new()))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyOrder, E> {
                Ok(KeyOrder(Vec::new()))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<KeyOrder, E> {
                Ok(KeyOrder(Vec::new()))
            }
        }
        deserializer.deserialize_any(Keys)
    }
}
