//! The wire of workerd's KV binding protocol, apart from any IO: which call a
//! request is, its parameters checked, and the texts of its answers.
//!
//! The protocol (docs/workerd-binding.md) is not the REST API: the key is the whole path, percent-encoded (never `+` for a
//! space: GET and PUT send `+` raw, DELETE sends `%2B`); list parameters are
//! form-encoded; errors reach the Worker only through the status line's reason
//! phrase.

use std::borrow::Cow;

use edgekv_kv::limits::MAX_KEY_BYTES;

use edgekv_kv::validate;
use http::Method;
use percent_encoding::percent_decode_str;

use crate::http::query::Query;
use crate::{Error, Result};

/// The shortest `cache_ttl` (and bulk `cacheTtl`) accepted, in seconds: what
/// workerd's own backend accepts.
pub const MIN_CACHE_TTL_S: u64 = 30;

/// The path of a bulk get. A key never reaches it: workerd encodes `/` in keys.
const BULK_GET_PATH: &str = "/bulk/get";

/// One call of the binding, as the request line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<'a> {
    /// `GET /<key>?urlencoded=true[&cache_ttl=S]`: get and getWithMetadata.
    Get {
        /// The key, percent-decoded.
        key: Cow<'a, [u8]>,
        /// `cache_ttl`, checked.
        cache_ttl_s: Option<u64>,
    },
    /// `PUT /<key>?urlencoded=true[&expiration=T][&expiration_ttl=S]`.
    Put {
        /// The key, percent-decoded.
        key: Cow<'a, [u8]>,
        /// When the value expires: `expiration_ttl` from now when given (it wins
        /// over `expiration`, as in workerd's own backend), else `expiration`.
        expiry: Expiry,
    },
    /// `DELETE /<key>?urlencoded=true`.
    Delete {
        /// The key, percent-decoded.
        key: Cow<'a, [u8]>,
    },
    /// `GET /?key_count_limit=L&prefix=P&cursor=C`, form-encoded.
    List {
        /// `key_count_limit`, checked (1 to 1000; 1000 when not sent).
        limit: usize,
        /// `prefix` (empty when not sent).
        prefix: Vec<u8>,
        /// `cursor`, if sent and not empty (checked by the caller when decoded).
        cursor: Option<String>,
    },
    /// `POST /bulk/get` with a JSON body.
    BulkGet,
}

/// The expiration a put asked for, before it is checked against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// None asked for.
    Never,
    /// `expiration`: Unix seconds.
    At(u64),
    /// `expiration_ttl`: seconds from now.
    Ttl(u64),
}

impl Expiry {
    /// The absolute expiration at `now_s`, checked: at least
    /// [`edgekv_kv::limits::MIN_EXPIRATION_TTL_S`] ahead.
    pub fn resolve(self, now_s: u64) -> Result<Option<u64>> {
        let resolved = match self {
            Expiry::Never => validate::expiration(None, None, now_s),
            Expiry::At(at) => validate::expiration(Some(at), None, now_s),
            Expiry::Ttl(ttl) => validate::expiration(None, Some(ttl), now_s),
        };
        Ok(resolved?)
    }
}

impl<'a> Call<'a> {
    /// Parses a request's method, path and query into a call. An error is the
    /// client's fault (a 400 or 405), and says which part is wrong.
    pub fn parse(method: &Method, path: &'a str, query: &'a str) -> Result<Call<'a>> {
        if path == "/" || path.is_empty() {
            if method != Method::GET {
                return Err(Error::MethodNotAllowed(method.to_string()));
            }
            return list(query);
        }
        if path == BULK_GET_PATH {
            if method != Method::POST {
                return Err(Error::MethodNotAllowed(method.to_string()));
            }
            return Ok(Call::BulkGet);
        }
        let Some(encoded) = path.strip_prefix('/') else {
            return Err(Error::BadRequest(
                "the path must be `/` and a key, percent-encoded".into(),
            ));
        };
        let key = key(encoded);
        let query = Query::parse(query);
        match *method {
            Method::GET => Ok(Call::Get {
                key,
                cache_ttl_s: query.get("cache_ttl").map(cache_ttl).transpose()?,
            }),
            Method::PUT => {
                let ttl = query
                    .get("expiration_ttl")
                    .map(|t| seconds("expiration_ttl", t))
                    .transpose()?;
                let at = query
                    .get("expiration")
                    .map(|t| seconds("expiration", t))
                    .transpose()?;
                let expiry = match (ttl, at) {
                    (Some(ttl), _) => Expiry::Ttl(ttl),
                    (None, Some(at)) => Expiry::At(at),
                    (None, None) => Expiry::Never,
                };
                Ok(Call::Put { key, expiry })
            }
            Method::DELETE => Ok(Call::Delete { key }),
            _ => Err(Error::MethodNotAllowed(method.to_string())),
        }
    }

    /// Whether the call changes data (needs a token that may write).
    pub fn writes(&self) -> bool {
        matches!(self, Call::Put { .. } | Call::Delete { .. })
    }
}

/// The key of a path (after its `/`), percent-decoded as bytes: a `+` stays a
/// `+`. Borrowed when it has no escape.
pub fn key(encoded: &str) -> Cow<'_, [u8]> {
    if !encoded.as_bytes().contains(&b'%') {
        return Cow::Borrowed(encoded.as_bytes());
    }
    percent_decode_str(encoded).into()
}

/// The parameters of a list.
fn list(query: &str) -> Result<Call<'static>> {
    let query = Query::parse(query);
    let limit = match query.get("key_count_limit") {
        None => edgekv_kv::limits::MAX_LIST_LIMIT,
        some => validate::list_limit(some)?,
    };
    let prefix = query.get("prefix").unwrap_or("").as_bytes().to_vec();
    if prefix.len() > MAX_KEY_BYTES {
        return Err(Error::BadRequest(format!(
            "prefix length of {} exceeds the key length limit of {MAX_KEY_BYTES}",
            prefix.len()
        )));
    }
    let cursor = query.get("cursor").map(str::to_owned);
    Ok(Call::List {
        limit,
        prefix,
        cursor,
    })
}

/// A whole number of seconds, as workerd sends it: an integer, or a numeric
/// string a Worker passed (a fraction is dropped, as workerd drops it from a
/// TTL).
pub fn seconds(name: &str, text: &str) -> Result<u64> {
    let text = text.trim();
    if let Ok(whole) = text.parse::<u64>() {
        return Ok(whole);
    }
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 && value < u64::MAX as f64 => {
            // Truncation is the point; checked in range just above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(value.trunc() as u64)
        }
        _ => Err(Error::Kv(edgekv_kv::Error::InvalidExpiration(format!(
            "Invalid {name} of {text}. Please specify a whole number of seconds."
        )))),
    }
}

/// `cache_ttl` / `cacheTtl`: whole seconds, at least [`MIN_CACHE_TTL_S`].
pub fn cache_ttl(text: &str) -> Result<u64> {
    let refuse = || {
        Error::BadRequest(format!(
            "Invalid cache_ttl of {text}. Cache TTL must be at least {MIN_CACHE_TTL_S}."
        ))
    };
    let ttl = seconds("cache_ttl", text).map_err(|_| refuse())?;
    if ttl < MIN_CACHE_TTL_S {
        return Err(refuse());
    }
    Ok(ttl)
}

/// The reason phrase of an error: its message in visible ASCII (other
/// characters escaped as `\u{..}`, so nothing can end the status line), at most
/// `MAX_REASON` bytes. workerd shows only this to the Worker.
pub fn reason(message: &str) -> String {
    const MAX_REASON: usize = 300;
    let mut out = String::with_capacity(message.len().min(MAX_REASON));
    for c in message.chars() {
        if out.len() >= MAX_REASON {
            out.push_str("...");
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    use proptest::prelude::*;

    /// What workerd leaves raw in a GET or PUT path (besides alphanumerics).
    const GET_PUT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'$')
        .remove(b'&')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')')
        .remove(b'*')
        .remove(b'+')
        .remove(b',')
        .remove(b'-')
        .remove(b'.')
        .remove(b':')
        .remove(b';')
        .remove(b'=')
        .remove(b'@')
        .remove(b'[')
        .remove(b']')
        .remove(b'^')
        .remove(b'_')
        .remove(b'|')
        .remove(b'~');
    /// What workerd leaves raw in a DELETE path: encodeURIComponent's set.
    const DELETE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')')
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');

    fn path(key: &str, set: &'static AsciiSet) -> String {
        format!("/{}", utf8_percent_encode(key, set))
    }

    #[test]
    fn a_plus_in_a_path_is_a_plus() {
        for (method, path) in [
            (Method::GET, "/a+b"),
            (Method::PUT, "/a+b"),
            (Method::DELETE, "/a%2Bb"),
        ] {
            let call = Call::parse(&method, path, "urlencoded=true").unwrap();
            let key = match call {
                Call::Get { key, .. } | Call::Put { key, .. } | Call::Delete { key } => key,
                other => panic!("{other:?}"),
            };
            assert_eq!(&*key, b"a+b", "{method} {path}");
        }
    }

    #[test]
    fn list_parameters_are_form_decoded() {
        let call = Call::parse(
            &Method::GET,
            "/",
            "key_count_limit=2&prefix=a+b%2Bc%2F&cursor=xyz",
        )
        .unwrap();
        assert_eq!(
            call,
            Call::List {
                limit: 2,
                prefix: b"a b+c/".to_vec(),
                cursor: Some("xyz".into()),
            }
        );
        // No parameters at all; `prefix=` and `cursor=` as workerd sends them
        // for empty strings.
        let all = Call::List {
            limit: 1000,
            prefix: Vec::new(),
            cursor: None,
        };
        assert_eq!(Call::parse(&Method::GET, "/", "").unwrap(), all);
        assert_eq!(
            Call::parse(&Method::GET, "/", "prefix=&cursor=").unwrap(),
            all
        );
    }

    #[test]
    fn limits_workerd_leaves_to_the_server_are_refused() {
        let status = |method: Method, path: &str, query: &str| {
            Call::parse(&method, path, query).unwrap_err().status()
        };
        assert_eq!(status(Method::GET, "/", "key_count_limit=1001"), 400);
        assert_eq!(status(Method::GET, "/", "key_count_limit=0"), 400);
        let long = format!("prefix={}", "p".repeat(600));
        assert_eq!(status(Method::GET, "/", &long), 400);
        assert_eq!(
            status(Method::GET, "/k", "urlencoded=true&cache_ttl=10"),
            400
        );
        assert_eq!(status(Method::GET, "/k", "cache_ttl=soon"), 400);
        assert_eq!(status(Method::PUT, "/k", "expiration_ttl=x"), 400);
        assert_eq!(status(Method::POST, "/k", ""), 405);
        assert_eq!(status(Method::GET, "/bulk/get", ""), 405);
        assert_eq!(status(Method::DELETE, "/", ""), 405);
        // Checked later, against the clock.
        let Call::Put { expiry, .. } =
            Call::parse(&Method::PUT, "/k", "expiration_ttl=10").unwrap()
        else {
            panic!("not a put")
        };
        assert_eq!(expiry.resolve(1_000).unwrap_err().status(), 400);
        assert_eq!(Expiry::At(1000).resolve(2_000).unwrap_err().status(), 400);
        assert_eq!(Expiry::Ttl(60).resolve(2_000).unwrap(), Some(2_060));
        assert_eq!(Expiry::Never.resolve(2_000).unwrap(), None);
    }

    #[test]
    fn the_ttl_wins_over_an_expiration_and_numbers_may_be_fractions() {
        let call = Call::parse(
            &Method::PUT,
            "/k",
            "urlencoded=true&expiration=1&expiration_ttl=61.9",
        )
        .unwrap();
        assert!(matches!(
            call,
            Call::Put {
                expiry: Expiry::Ttl(61),
                ..
            }
        ));
        assert_eq!(cache_ttl("61.5").unwrap(), 61);
        assert_eq!(
            seconds("expiration", " 1800000000 ").unwrap(),
            1_800_000_000
        );
        assert!(seconds("expiration", "-5").is_err());
        assert!(seconds("expiration", "NaN").is_err());
        assert!(seconds("expiration", "1e400").is_err());
    }

    #[test]
    fn a_reason_phrase_is_visible_ascii_and_bounded() {
        assert_eq!(
            reason("key \"é\"\r\nX: y"),
            "key \"\\u{e9}\"\\u{d}\\u{a}X: y"
        );
        let long = reason(&"x".repeat(5000));
        assert!(long.len() <= 304 && long.ends_with("..."));
        for text in ["", "plain", "tab\there", "\u{7f}", "\u{0}"] {
            let phrase = reason(text);
            assert!(phrase.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
            assert!(hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()).is_ok());
        }
    }

    proptest! {
        /// Any key, encoded as workerd encodes it for each method, decodes to
        /// itself (the key rules are checked later).
        #[test]
        fn every_key_round_trips_through_each_methods_encoding(key in "\\PC{1,40}") {
            for (method, set) in [(Method::GET, GET_PUT), (Method::PUT, GET_PUT), (Method::DELETE, DELETE)] {
                let path = path(&key, set);
                let call = Call::parse(&method, &path, "urlencoded=true").unwrap();
                let decoded = match call {
                    Call::Get { key, .. } | Call::Put { key, .. } | Call::Delete { key } => key.into_owned(),
                    other => panic!("{other:?}"),
                };
                prop_assert_eq!(decoded, key.as_bytes().to_vec());
            }
        }

        /// Whatever a client sends, parsing answers (a call or a client
        /// fault, never a server error) and every message makes a valid
        /// reason phrase.
        #[test]
        fn any_request_line_parses_or_is_the_clients_fault(
            method in prop::sample::select(vec!["GET", "PUT", "DELETE", "POST", "PATCH", "HEAD"]),
            path in "/[\\PC%+/]{0,60}",
            query in "[\\PC=&%+]{0,80}",
        ) {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            match Call::parse(&method, &path, &query) {
                Ok(_) => {}
                Err(err) => {
                    prop_assert!(err.status().is_client_error(), "{err:?}");
                    let phrase = reason(&err.client_message());
                    prop_assert!(hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()).is_ok());
                }
            }
        }

        /// Any form-encoded prefix decodes to itself.
        #[test]
        fn every_prefix_round_trips_through_form_encoding(prefix in "\\PC{0,40}") {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("prefix", &prefix)
                .finish();
            let Call::List { prefix: decoded, .. } = Call::parse(&Method::GET, "/", &query).unwrap() else {
                panic!("not a list");
            };
            prop_assert_eq!(decoded, prefix.as_bytes().to_vec());
        }
    }
}
