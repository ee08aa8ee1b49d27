//! Parsing of request paths into routes of the KV API.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::metrics::RouteLabel;

/// A path of the KV API, with its parts percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/client/v4/accounts/{account}/storage/kv/namespaces`
    Namespaces {
        /// The account id.
        account: Cow<'a, str>,
    },
    /// `.../namespaces/{ns}`
    Namespace(Scope<'a>),
    /// `.../namespaces/{ns}/values/{key}`
    Value(Scope<'a>, Cow<'a, [u8]>),
    /// `.../namespaces/{ns}/metadata/{key}`
    Metadata(Scope<'a>, Cow<'a, [u8]>),
    /// `.../namespaces/{ns}/keys`
    Keys(Scope<'a>),
    /// `.../namespaces/{ns}/bulk`
    Bulk(Scope<'a>),
    /// `.../namespaces/{ns}/bulk/delete`
    BulkDelete(Scope<'a>),
    /// `.../namespaces/{ns}/bulk/get`
    BulkGet(Scope<'a>),
    /// `/client/v4/openapi.json`: the OpenAPI document of this API.
    OpenApi,
    /// `/client/v4/user/tokens/verify`: whether the bearer token is valid (what
    /// wrangler asks after a 401, to explain it).
    TokenVerify,
}

/// The account and namespace a route addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope<'a> {
    /// The account id.
    pub account: Cow<'a, str>,
    /// The namespace id.
    pub namespace: Cow<'a, str>,
}

const PREFIX: &str = "/client/v4/accounts/";
const KV: &str = "storage/kv/namespaces";
/// The path of the OpenAPI document (`docs/openapi.yaml`, served as JSON).
const OPENAPI_PATH: &str = "/client/v4/openapi.json";
const TOKEN_VERIFY_PATH: &str = "/client/v4/user/tokens/verify";

impl<'a> Route<'a> {
    /// Parses a request path (without the query). Returns `None` for paths outside
    /// the KV API, or parts that are not valid UTF-8 where text is required.
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        // Most paths have no escape at all: one scan says so for every segment.
        let plain = memchr::memchr(b'%', path.as_bytes()).is_none();
        let text = |segment| {
            if plain {
                Some(Cow::Borrowed(segment))
            } else {
                text(segment)
            }
        };
        let bytes = |segment: &'a str| {
            if plain {
                Cow::Borrowed(segment.as_bytes())
            } else {
                bytes(segment)
            }
        };
        // Checked only off the KV paths: a KV request pays nothing for it.
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return match path {
                OPENAPI_PATH => Some(Route::OpenApi),
                TOKEN_VERIFY_PATH => Some(Route::TokenVerify),
                _ => None,
            };
        };
        let (account, rest) = split_segment(rest)?;
        let account = text(account)?;
        let rest = rest.strip_prefix(KV)?;
        let rest = match rest {
            "" | "/" => return Some(Route::Namespaces { account }),
            _ => rest.strip_prefix('/')?,
        };
        let (namespace, rest) = match split_segment(rest) {
            Some((ns, rest)) => (ns, Some(rest)),
            None => (rest, None),
        };
        let scope = Scope {
            account,
            namespace: text(namespace)?,
        };
        let Some(rest) = rest else {
            return Some(Route::Namespace(scope));
        };
        // A key is everything after `values/`: clients should encode `/` in keys,
        // but a raw `/` is kept as part of the key rather than refused.
        if let Some(key) = rest.strip_prefix("values/") {
            return Some(Route::Value(scope, bytes(key)));
        }
        if let Some(key) = rest.strip_prefix("metadata/") {
            return Some(Route::Metadata(scope, bytes(key)));
        }
        match rest.trim_end_matches('/') {
            "" => Some(Route::Namespace(scope)),
            "keys" => Some(Route::Keys(scope)),
            "bulk" => Some(Route::Bulk(scope)),
            "bulk/delete" => Some(Route::BulkDelete(scope)),
            "bulk/get" => Some(Route::BulkGet(scope)),
            _ => None,
        }
    }

    /// The label this route is counted under.
    pub fn label(&self) -> RouteLabel {
        match self {
            Route::Namespaces { .. } => RouteLabel::Namespaces,
            Route::Namespace(_) => RouteLabel::Namespace,
            Route::Value(..) => RouteLabel::Value,
            Route::Metadata(..) => RouteLabel::Metadata,
            Route::Keys(_) => RouteLabel::Keys,
            Route::Bulk(_) => RouteLabel::BulkWrite,
            Route::BulkDelete(_) => RouteLabel::BulkDelete,
            Route::BulkGet(_) => RouteLabel::BulkGet,
            Route::OpenApi | Route::TokenVerify => RouteLabel::Other,
        }
    }

    /// The methods this route serves, as the `Allow` header of a 405 says them.
    /// They are the methods `docs/openapi.yaml` lists for its path (a test checks).
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Namespaces { .. } => "GET, POST",
            Route::Namespace(_) | Route::Value(..) => "GET, PUT, DELETE",
            Route::Metadata(..) | Route::Keys(_) | Route::OpenApi | Route::TokenVerify => "GET",
            Route::Bulk(_) => "PUT, DELETE",
            Route::BulkDelete(_) | Route::BulkGet(_) => "POST",
        }
    }
}

/// Splits at the first `/`: `(segment, rest after the slash)`. A vector search
/// takes fewer instructions than a byte loop already over a 32-character
/// namespace id (`make bench-instructions`).
fn split_segment(path: &str) -> Option<(&str, &str)> {
    let at = memchr::memchr(b'/', path.as_bytes())?;
    Some((&path[..at], &path[at + 1..]))
}

/// A segment as text, percent-decoded; borrowed when it has no escape (the
/// common case: no decoding, no UTF-8 check, the path is already text).
fn text(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.as_bytes().contains(&b'%') {
        return Some(Cow::Borrowed(segment));
    }
    percent_decode_str(segment).decode_utf8().ok()
}

/// A segment as bytes, percent-decoded; borrowed when it has no escape.
fn bytes(segment: &str) -> Cow<'_, [u8]> {
    if !segment.as_bytes().contains(&b'%') {
        return Cow::Borrowed(segment.as_bytes());
    }
    percent_decode_str(segment).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NS: &str = "0123456789abcdef0123456789abcdef";

    fn base(rest: &str) -> String {
        format!("/client/v4/accounts/acct/storage/kv/namespaces{rest}")
    }

    #[test]
    fn routes() {
        assert!(matches!(
            Route::parse(&base("")),
            Some(Route::Namespaces { .. })
        ));
        assert!(matches!(
            Route::parse(&base(&format!("/{NS}"))),
            Some(Route::Namespace(_))
        ));
        assert!(matches!(
            Route::parse(&base(&format!("/{NS}/keys"))),
            Some(Route::Keys(_))
        ));
        assert!(matches!(
            Route::parse(&base(&format!("/{NS}/bulk"))),
            Some(Route::Bulk(_))
        ));
        assert!(matches!(
            Route::parse(&base(&format!("/{NS}/bulk/delete"))),
            Some(Route::BulkDelete(_))
        ));
        assert!(matches!(
            Route::parse(&base(&format!("/{NS}/bulk/get"))),
            Some(Route::BulkGet(_))
        ));
        assert_eq!(Route::parse("/other"), None);
        assert_eq!(Route::parse(&base(&format!("/{NS}/nope"))), None);
        assert_eq!(
            Route::parse("/client/v4/openapi.json"),
            Some(Route::OpenApi)
        );
        assert_eq!(Route::parse("/client/v4/openapi.json/"), None);
        assert_eq!(
            Route::parse("/client/v4/user/tokens/verify"),
            Some(Route::TokenVerify)
        );
        assert_eq!(Route::parse("/client/v4/openapi.yaml"), None);
    }

    #[test]
    fn keys_are_percent_decoded() {
        let path = base(&format!("/{NS}/values/a%2Fb%20c%25%3F%23%C3%A9/raw"));
        let Some(Route::Value(scope, key)) = Route::parse(&path) else {
            panic!("not a value route");
        };
        assert_eq!(scope.namespace, NS);
        assert_eq!(&*key, "a/b c%?#é/raw".as_bytes());
        let path = base(&format!("/{NS}/metadata/k"));
        assert!(matches!(Route::parse(&path), Some(Route::Metadata(_, k)) if &*k == b"k"));
    }

    /// The parser as first written: percent-decoding every segment, splitting with
    /// `str::split_once`. The fast parser must agree with it on every path.
    fn reference(path: &str) -> Option<Route<'_>> {
        if path == OPENAPI_PATH {
            return Some(Route::OpenApi);
        }
        if path == TOKEN_VERIFY_PATH {
            return Some(Route::TokenVerify);
        }
        let text = |s| percent_decode_str(s).decode_utf8().ok();
        let rest = path.strip_prefix(PREFIX)?;
        let (account, rest) = rest.split_once('/')?;
        let account = text(account)?;
        let rest = rest.strip_prefix(KV)?;
        let rest = match rest {
            "" | "/" => return Some(Route::Namespaces { account }),
            _ => rest.strip_prefix('/')?,
        };
        let (namespace, rest) = match rest.split_once('/') {
            Some((ns, rest)) => (ns, Some(rest)),
            None => (rest, None),
        };
        let scope = Scope {
            account,
            namespace: text(namespace)?,
        };
        let Some(rest) = rest else {
            return Some(Route::Namespace(scope));
        };
        if let Some(key) = rest.strip_prefix("values/") {
            return Some(Route::Value(scope, percent_decode_str(key).into()));
        }
        if let Some(key) = rest.strip_prefix("metadata/") {
            return Some(Route::Metadata(scope, percent_decode_str(key).into()));
        }
        match rest.trim_end_matches('/') {
            "" => Some(Route::Namespace(scope)),
            "keys" => Some(Route::Keys(scope)),
            "bulk" => Some(Route::Bulk(scope)),
            "bulk/delete" => Some(Route::BulkDelete(scope)),
            "bulk/get" => Some(Route::BulkGet(scope)),
            _ => None,
        }
    }

    #[test]
    fn escapes_that_are_not_utf8_are_refused_in_text_but_kept_in_keys() {
        assert_eq!(Route::parse(&base("/%FF")), None);
        let path = base(&format!("/{NS}/values/%FF%00"));
        assert!(matches!(Route::parse(&path), Some(Route::Value(_, k)) if &*k == b"\xff\x00"));
    }

    proptest! {
        #[test]
        fn any_path_parses_as_the_reference_parser_does(
            path in "\\PC*",
            tail in "(/|%[0-9a-fA-F]{2}|%|[a-z0-9]|values/|metadata/|keys|bulk|get|delete){0,12}",
        ) {
            prop_assert_eq!(Route::parse(&path), reference(&path));
            let under = base(&path);
            prop_assert_eq!(Route::parse(&under), reference(&under));
            let structured = base(&format!("/{NS}{tail}"));
            prop_assert_eq!(Route::parse(&structured), reference(&structured));
            let structured = base(&tail);
            prop_assert_eq!(Route::parse(&structured), reference(&structured));
        }
    }
}
