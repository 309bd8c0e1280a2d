//! Small JSON helpers for the frame codec: string escaping for hand-built frames, lenient
//! parsing of message refs, and the nesting limit of client JSON.

use serde::Deserializer;
use serde::de::{self, Visitor};
use serde_json::value::RawValue;

/// Refs are decimal strings in every known client; integers are accepted too and kept as text.
struct RefVisitor;

impl<'de> Visitor<'de> for RefVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, an integer or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(RefVisitor)
    }
}

pub(super) fn opt_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(RefVisitor)
}

/// A ref from one element of a v2 array; `None` (outer) when it is not a ref at all.
pub(super) fn ref_from_raw(raw: &RawValue) -> Option<Option<String>> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    opt_ref(&mut de).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refs_accept_strings_integers_and_null() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(ref_from_raw(&raw("\"12\"")), Some(Some("12".into())));
        assert_eq!(ref_from_raw(&raw("12")), Some(Some("12".into())));
        assert_eq!(ref_from_raw(&raw("null")), Some(None));
        assert_eq!(ref_from_raw(&raw("{}")), None);
        assert_eq!(ref_from_raw(&raw("1.5")), None);
    }
}
