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

impl<'a> Route<'a> {
    /// Parses a request path (without the query). Returns `None` for paths outside
    /// the KV API, or parts that are not valid UTF-8 where text is required.
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
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
        // A key is everything after `values/`: clients should encode `/` in keys,
        // but a raw `/` is kept as part of the key rather than refused.
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
        }
    }
}

fn text(segment: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(segment).decode_utf8().ok()
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

    proptest! {
        #[test]
        fn any_path_parses_without_panic(path in "\\PC*") {
            let _ = Route::parse(&path);
            let _ = Route::parse(&base(&path));
        }
    }
}
