//! The edge's HTTP handler (`edgekv_edge::http::handle`, after the synchronous
//! `try_hot`, as the server calls them) on any method, path, query, headers and
//! body. The input is an HTTP/1.1 request when it parses as one (read with
//! httparse, as hyper reads it; the seeds are such requests), else a request
//! built from it with `arbitrary`: paths mostly of the API's shape with fuzzed
//! segments, tokens mostly real ones.
//!
//! Checked (see `edgekv_fuzz_edge::send`): no panic, no 5xx but 503, errors in
//! the JSON envelope, the hot path agreeing with the handler.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use edgekv_fuzz_edge::{
    ACCOUNT, CACHE_NS, FULL_NS, KEYS, OTHER_NS, OTHER_TOKEN, Parts, READ_ONLY_TOKEN, SCOPED_TOKEN,
    TOKEN, bearer, namespace_path, send,
};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

#[derive(Arbitrary, Debug)]
enum AnyMethod {
    Get,
    Put,
    Post,
    Delete,
    Head,
    Patch,
    Options,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum AnyText {
    /// One of the values the edge knows.
    Known(u8),
    /// Any text, percent-encoded.
    Encoded(String),
    /// Any bytes, percent-encoded.
    Bytes(Vec<u8>),
    /// Any text as it comes (an invalid URI is skipped, as hyper refuses it).
    Raw(String),
}

impl AnyText {
    fn get(&self, known: &[&str]) -> String {
        match self {
            AnyText::Known(i) => known[usize::from(*i) % known.len()].to_string(),
            AnyText::Encoded(text) => utf8_percent_encode(text, NON_ALPHANUMERIC).to_string(),
            AnyText::Bytes(bytes) => {
                percent_encoding::percent_encode(bytes, NON_ALPHANUMERIC).to_string()
            }
            AnyText::Raw(text) => text.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AnyRoute {
    Namespaces,
    Namespace,
    Value(AnyText),
    Metadata(AnyText),
    Keys,
    Bulk,
    BulkDelete,
    BulkGet,
    /// Anything after the namespace.
    Rest(String),
}

#[derive(Arbitrary, Debug)]
enum AnyPath {
    Api {
        account: AnyText,
        namespace: AnyText,
        route: AnyRoute,
        trailing_slash: bool,
    },
    OpenApi,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum AnyToken {
    None,
    Known(u8),
    /// Any value of `Authorization`.
    Value(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum AnyHeaderName {
    ContentType,
    ContentLength,
    CacheControl,
    VersionKey,
    VersionOverride,
    Authorization,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct AnyRequest {
    method: AnyMethod,
    path: AnyPath,
    query: Option<String>,
    token: AnyToken,
    headers: Vec<(AnyHeaderName, Vec<u8>)>,
    frames: Vec<Vec<u8>>,
}

impl AnyRequest {
    fn parts(self) -> Option<Parts> {
        let method = match self.method {
            AnyMethod::Get => http::Method::GET,
            AnyMethod::Put => http::Method::PUT,
            AnyMethod::Post => http::Method::POST,
            AnyMethod::Delete => http::Method::DELETE,
            AnyMethod::Head => http::Method::HEAD,
            AnyMethod::Patch => http::Method::PATCH,
            AnyMethod::Options => http::Method::OPTIONS,
            AnyMethod::Other(name) => http::Method::from_bytes(name.as_bytes()).ok()?,
        };
        let mut path = match self.path {
            AnyPath::Api {
                account,
                namespace,
                route,
                trailing_slash,
            } => {
                let account = account.get(&[ACCOUNT, "other"]);
                let namespace = namespace.get(&[FULL_NS, CACHE_NS, OTHER_NS, "nope"]);
                let rest = match route {
                    AnyRoute::Namespaces => {
                        return Self::finish(
                            method,
                            format!("/client/v4/accounts/{account}/storage/kv/namespaces"),
                            self.query,
                            self.token,
                            self.headers,
                            self.frames,
                        );
                    }
                    AnyRoute::Namespace => String::new(),
                    AnyRoute::Value(key) => format!("/values/{}", key.get(&KEYS)),
                    AnyRoute::Metadata(key) => format!("/metadata/{}", key.get(&KEYS)),
                    AnyRoute::Keys => "/keys".into(),
                    AnyRoute::Bulk => "/bulk".into(),
                    AnyRoute::BulkDelete => "/bulk/delete".into(),
                    AnyRoute::BulkGet => "/bulk/get".into(),
                    AnyRoute::Rest(rest) => rest,
                };
                let mut path = namespace_path(&account, &namespace, &rest);
                if trailing_slash {
                    path.push('/');
                }
                path
            }
            AnyPath::OpenApi => "/client/v4/openapi.json".into(),
            AnyPath::Raw(path) => path,
        };
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        Self::finish(
            method,
            path,
            self.query,
            self.token,
            self.headers,
            self.frames,
        )
    }

    fn finish(
        method: http::Method,
        path: String,
        query: Option<String>,
        token: AnyToken,
        headers: Vec<(AnyHeaderName, Vec<u8>)>,
        frames: Vec<Vec<u8>>,
    ) -> Option<Parts> {
        let uri = match query {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let uri = http::Uri::try_from(uri).ok()?;
        let mut map = http::HeaderMap::new();
        match token {
            AnyToken::None => {}
            AnyToken::Known(i) => {
                let tokens = [TOKEN, READ_ONLY_TOKEN, SCOPED_TOKEN, OTHER_TOKEN];
                map.insert(
                    http::header::AUTHORIZATION,
                    bearer(tokens[usize::from(i) % tokens.len()]),
                );
            }
            AnyToken::Value(value) => {
                map.insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_bytes(&value).ok()?,
                );
            }
        }
        for (name, value) in headers.into_iter().take(16) {
            let name = match name {
                AnyHeaderName::ContentType => http::header::CONTENT_TYPE,
                AnyHeaderName::ContentLength => http::header::CONTENT_LENGTH,
                AnyHeaderName::CacheControl => http::header::CACHE_CONTROL,
                AnyHeaderName::VersionKey => http::HeaderName::from_static("edgekv-version-key"),
                AnyHeaderName::VersionOverride => {
                    http::HeaderName::from_static("edgekv-version-override")
                }
                AnyHeaderName::Authorization => http::header::AUTHORIZATION,
                AnyHeaderName::Other(name) => http::HeaderName::from_bytes(name.as_bytes()).ok()?,
            };
            let Ok(value) = http::HeaderValue::from_bytes(&value) else {
                continue;
            };
            map.append(name, value);
        }
        Some(Parts {
            method,
            uri,
            headers: map,
            frames: frames.into_iter().take(8).map(Bytes::from).collect(),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let parts = match http_text(data) {
        Some(parts) => parts,
        None => AnyRequest::arbitrary(&mut Unstructured::new(data))
            .ok()
            .and_then(AnyRequest::parts),
    };
    if let Some(parts) = parts {
        send(&parts);
    }
});

/// The input as an HTTP/1.1 request: `None` when it is not one, `Some(None)`
/// when it is one hyper would refuse before the handler (a method, path or
/// header the `http` crate does not take). The body is what follows the head.
fn http_text(data: &[u8]) -> Option<Option<Parts>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = request.parse(data) else {
        return None;
    };
    let parts = (|| {
        let method = http::Method::from_bytes(request.method?.as_bytes()).ok()?;
        let uri = http::Uri::try_from(request.path?).ok()?;
        let mut map = http::HeaderMap::new();
        for header in request.headers.iter() {
            map.append(
                http::HeaderName::from_bytes(header.name.as_bytes()).ok()?,
                http::HeaderValue::from_bytes(header.value).ok()?,
            );
        }
        let body = Bytes::copy_from_slice(&data[head..]);
        let half = body.len() / 2;
        Some(Parts {
            method,
            uri,
            headers: map,
            frames: vec![body.slice(..half), body.slice(half..)],
        })
    })();
    Some(parts)
}
