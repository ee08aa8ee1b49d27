//! JSON arrays read with their item limit checked as they are read.
//!
//! A bulk body is parsed straight into its items, and the item after the last
//! one allowed is refused before it is read: a body of ten million keys costs
//! what one of the limit does, never ten million strings. Which limit stopped
//! the parse is kept in an [`Overflow`] beside the parser (a parse error says
//! only where it happened), so the answer names the limit, not the JSON.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{Error, Result};

/// Where a bounded read stopped, if one did.
#[derive(Debug, Default)]
pub(super) struct Overflow(Cell<Option<Stop>>);

/// The item a bounded read stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stop {
    /// The items come to when reading stopped: the limit plus one.
    pub(super) seen: usize,
    /// The limit.
    pub(super) max: usize,
}

impl Overflow {
    /// The item the read stopped at, if a limit stopped it.
    pub(super) fn stop(&self) -> Option<Stop> {
        self.0.get()
    }

    /// Why a parse failed: a limit that stopped it (a 400 that names the limit),
    /// else what `bad` makes of the JSON error.
    pub(super) fn refusal(
        &self,
        err: &serde_json::Error,
        bad: impl FnOnce(&dyn fmt::Display) -> Error,
    ) -> Error {
        match self.stop() {
            Some(Stop { seen, max }) => edgekv_kv::Error::TooManyItemsRead { seen, max }.into(),
            None => bad(err),
        }
    }
}

/// Parses all of `de`'s input with `seed` (only whitespace may follow the value).
pub(super) fn parse<'de, R, S>(
    mut de: serde_json::Deserializer<R>,
    seed: S,
) -> serde_json::Result<S::Value>
where
    R: serde_json::de::Read<'de>,
    S: DeserializeSeed<'de>,
{
    let value = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Reads a JSON array of at most `max` items of `T`.
pub(super) struct AtMost<'o, T> {
    max: usize,
    overflow: &'o Overflow,
    items: PhantomData<fn() -> T>,
}

impl<'o, T> AtMost<'o, T> {
    /// An array of at most `max` items; a longer one is refused at item
    /// `max + 1`, and `overflow` says so.
    pub(super) fn new(max: usize, overflow: &'o Overflow) -> Self {
        AtMost {
            max,
            overflow,
            items: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for AtMost<'_, T> {
    type Value = Vec<T>;

    fn deserialize<D>(self, deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for AtMost<'_, T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {} items", self.max)
    }

    fn visit_seq<A>(self, mut seq: A) -> Result<Vec<T>, A::Error>
    where
        A: SeqAccess<'de>,
    {
        // A size hint (JSON gives none) is trusted only up to the limit.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while items.len() < self.max {
            match seq.next_element()? {
                Some(item) => items.push(item),
                None => return Ok(items),
            }
        }
        // At the limit: another item is refused before it is read.
        let refuse = Refuse {
            stop: Stop {
                seen: self.max.saturating_add(1),
                max: self.max,
            },
            overflow: self.overflow,
        };
        match seq.next_element_seed(refuse)? {
            None => Ok(items),
            // `Refuse` never yields an item; this is its error, should it ever.
            Some(()) => Err(de::Error::custom(too_many(self.max))),
        }
    }
}

/// The item past the limit: refused without being read.
struct Refuse<'o> {
    stop: Stop,
    overflow: &'o Overflow,
}

impl<'de> DeserializeSeed<'de> for Refuse<'_> {
    type Value = ();

    fn deserialize<D>(self, _item: D) -> Result<(), D::Error>
    where
        D: Deserializer<'de>,
    {
        self.overflow.0.set(Some(self.stop));
        Err(de::Error::custom(too_many(self.stop.max)))
    }
}

fn too_many(max: usize) -> String {
    format!("more than {max} items")
}

/// A key of a bulk get: borrowed from the body unless it has escapes.
#[derive(Deserialize)]
pub(super) struct Key<'a>(#[serde(borrow)] pub(super) std::borrow::Cow<'a, str>);

/// The body of a bulk get: `{"keys": [...], "type": "text"|"json",
/// "withMetadata": bool, "cacheTtl": "60"}`, its keys bounded as they are read.
/// Other fields are ignored.
pub(super) struct GetBody<'a> {
    /// The keys asked for, in order.
    pub(super) keys: Vec<Key<'a>>,
    /// `type`: `text` (the default) or `json`.
    pub(super) kind: Option<String>,
    /// `withMetadata`: whether each value comes with its metadata.
    pub(super) with_metadata: bool,
    /// `cacheTtl`, as text: workerd's KV binding sends it as a string, a
    /// number is taken as its text.
    pub(super) cache_ttl: Option<String>,
}

/// Reads a [`GetBody`] of at most `max` keys.
pub(super) struct GetBodySeed<'o> {
    /// The most keys.
    pub(super) max: usize,
    /// Says whether the keys ran over `max`.
    pub(super) overflow: &'o Overflow,
}

impl<'de> DeserializeSeed<'de> for GetBodySeed<'_> {
    type Value = GetBody<'de>;

    fn deserialize<D>(self, deserializer: D) -> Result<GetBody<'de>, D::Error>
    where
        D: Deserializer<'de>,
    {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GetBodySeed<'_> {
    type Value = GetBody<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with `keys`")
    }

    fn visit_map<A>(self, mut map: A) -> Result<GetBody<'de>, A::Error>
    where
        A: MapAccess<'de>,
    {
        let mut keys = None;
        let mut kind = None;
        let mut with_metadata = None;
        let mut cache_ttl = None;
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "keys" => {
                    if keys.is_some() {
                        return Err(de::Error::duplicate_field("keys"));
                    }
                    keys = Some(
                        map.next_value_seed(AtMost::<Key<'de>>::new(self.max, self.overflow))?,
                    );
                }
                "type" => {
                    if kind.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    }
                    kind = Some(map.next_value::<Option<String>>()?);
                }
                "withMetadata" => {
                    if with_metadata.is_some() {
                        return Err(de::Error::duplicate_field("withMetadata"));
                    }
                    with_metadata = Some(map.next_value::<bool>()?);
                }
                "cacheTtl" => {
                    if cache_ttl.is_some() {
                        return Err(de::Error::duplicate_field("cacheTtl"));
                    }
                    cache_ttl = Some(match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(text) => Some(text),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => return Err(de::Error::custom("cacheTtl must be a number")),
                    });
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(GetBody {
            keys: keys.ok_or_else(|| <A::Error as de::Error>::missing_field("keys"))?,
            kind: kind.flatten(),
            with_metadata: with_metadata.unwrap_or(false),
            cache_ttl: cache_ttl.flatten(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::borrow::Cow;

    use super::*;

    /// `n` empty keys as a JSON array.
    fn empty_keys(n: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(n * 3 + 2);
        body.push(b'[');
        for i in 0..n {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"\"\"");
        }
        body.push(b']');
        body
    }

    fn read_keys(body: &[u8], max: usize) -> (Result<Vec<Cow<'_, str>>>, Option<Stop>) {
        let overflow = Overflow::default();
        let parsed = parse(
            serde_json::Deserializer::from_slice(body),
            AtMost::<Cow<'_, str>>::new(max, &overflow),
        )
        .map_err(|e| overflow.refusal(&e, |e| Error::BadRequest(e.to_string())));
        (parsed, overflow.stop())
    }

    #[test]
    fn an_array_at_the_limit_is_read_whole() {
        let body = empty_keys(10_000);
        let (keys, stop) = read_keys(&body, 10_000);
        assert_eq!(keys.unwrap().len(), 10_000);
        assert_eq!(stop, None);
        let (keys, _) = read_keys(b"[]", 10_000);
        assert!(keys.unwrap().is_empty());
    }

    #[test]
    fn one_item_past_the_limit_is_refused_naming_the_limit() {
        let body = empty_keys(10_001);
        let (keys, stop) = read_keys(&body, 10_000);
        assert_eq!(
            stop,
            Some(Stop {
                seen: 10_001,
                max: 10_000
            })
        );
        let err = keys.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            err.to_string(),
            "bulk request has at least 10001 items; the limit is 10000"
        );
    }

    #[test]
    fn a_long_array_stops_at_the_first_item_past_the_limit() {
        // 100,000 empty keys: reading stops at item 10,001, where the JSON error
        // is raised (its column is where that item begins), not at the end.
        let body = empty_keys(100_000);
        let overflow = Overflow::default();
        let err = parse(
            serde_json::Deserializer::from_slice(&body),
            AtMost::<String>::new(10_000, &overflow),
        )
        .map(|keys| keys.len())
        .unwrap_err();
        assert_eq!(
            overflow.stop(),
            Some(Stop {
                seen: 10_001,
                max: 10_000
            })
        );
        // `[` then 10,000 items of `"",` (3 bytes each): item 10,001 begins at
        // column 30,002; the parser is no further on than that item.
        assert_eq!(err.line(), 1);
        assert!(
            (30_000..=30_010).contains(&err.column()),
            "stopped at column {} of {}",
            err.column(),
            body.len()
        );
    }

    #[test]
    fn malformed_arrays_are_not_called_too_long() {
        let (keys, stop) = read_keys(b"[\"a\",", 1);
        assert_eq!(stop, None);
        assert_eq!(keys.unwrap_err().status(), http::StatusCode::BAD_REQUEST);
        let (keys, stop) = read_keys(b"{\"a\": 1}", 1);
        assert_eq!(stop, None);
        assert!(keys.is_err());
        let (keys, stop) = read_keys(b"[\"a\"] x", 1);
        assert_eq!(stop, None);
        assert!(keys.is_err());
    }

    #[test]
    fn bulk_get_bodies_are_bounded_and_read_as_before() {
        let overflow = Overflow::default();
        let text = r#"{"keys": ["a", "b\"c"], "type": "json", "withMetadata": true, "other": [1]}"#;
        let body = parse(
            serde_json::Deserializer::from_str(text),
            GetBodySeed {
                max: 2,
                overflow: &overflow,
            },
        )
        .unwrap();
        let keys: Vec<&str> = body.keys.iter().map(|Key(k)| &**k).collect();
        assert_eq!(keys, ["a", "b\"c"]);
        assert!(matches!(body.keys[0].0, Cow::Borrowed(_)));
        assert_eq!(body.kind.as_deref(), Some("json"));
        assert!(body.with_metadata);

        let defaults = parse(
            serde_json::Deserializer::from_str(r#"{"keys": [], "type": null}"#),
            GetBodySeed {
                max: 2,
                overflow: &overflow,
            },
        )
        .unwrap();
        assert_eq!(defaults.kind, None);
        assert!(!defaults.with_metadata);

        for bad in [
            r#"{"type": "text"}"#,
            r#"{"keys": "k"}"#,
            r#"{"keys": [], "keys": []}"#,
        ] {
            let overflow = Overflow::default();
            let parsed = parse(
                serde_json::Deserializer::from_str(bad),
                GetBodySeed {
                    max: 2,
                    overflow: &overflow,
                },
            );
            assert!(parsed.is_err(), "{bad}");
            assert_eq!(overflow.stop(), None, "{bad}");
        }

        let overflow = Overflow::default();
        let parsed = parse(
            serde_json::Deserializer::from_str(r#"{"keys": ["a", "b", "c", "d"]}"#),
            GetBodySeed {
                max: 2,
                overflow: &overflow,
            },
        );
        assert!(parsed.is_err());
        assert_eq!(overflow.stop(), Some(Stop { seen: 3, max: 2 }));
    }
}
