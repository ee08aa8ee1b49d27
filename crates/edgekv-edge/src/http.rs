//! The KV API over HTTP: routing, authentication, and the handlers.
//!
//! [`handle`] takes any request body, so tests and benches drive it in-process as
//! well as through [`crate::server`].

pub(crate) mod body;
pub(crate) mod bulk;
mod json;
mod namespaces;
pub(crate) mod query;
pub mod respond;
mod route;
mod values;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Body as HttpBody;

pub use respond::Body;
pub use route::{Route, Scope};

use crate::hot::ValueBuf;
use crate::metrics::{RouteLabel, Started};
use crate::tokens::{Admission, TokenHash, TokenMemo};
use crate::{Edge, Error, Result};

/// Answers one request of the KV API. Never panics on input and never answers a
/// client fault with a 5xx.
pub async fn handle<B>(edge: &Arc<Edge>, request: Request<B>) -> Response<Body>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let start = Started::now();
    let (parts, body) = request.into_parts();
    let route = Route::parse(parts.uri.path());
    let label = route.as_ref().map_or(RouteLabel::Other, Route::label);
    let request = Incoming {
        edge,
        method: &parts.method,
        headers: &parts.headers,
        query: parts.uri.query().unwrap_or(""),
    };
    let response = match route {
        Some(route) => dispatch(request, route, body).await,
        None => Err(Error::NoRoute(parts.uri.path().chars().take(200).collect())),
    }
    .unwrap_or_else(|err| respond::error(&err));
    let mut response = response;
    if let Some(version) = &edge.routes().version_header {
        response
            .headers_mut()
            .insert(respond::ROUTE_VERSION_HEADER.clone(), version.clone());
    }
    edge.metrics()
        .record(label, response.status().as_u16(), start.elapsed());
    response
}

/// The hot read path, answered without awaiting anything: a GET of a value the
/// edge holds (hot tier, else a point read of its store) while held entries may
/// be served, with a valid token and no per-request options (`cache-control`,
/// `edgekv-version-override`, a query). Anything else — including every error —
/// is `None`, and the request is left as it was: [`handle`] answers it fully.
/// Keeping this path synchronous keeps the future hyper stores per request tiny
/// (the full handler's is large, and hyper moves it into place on every request).
///
/// A value's answer carries its headers in the request's own header map,
/// cleared: hyper hands each answer's map back for the next request of the
/// connection to be parsed into, so a connection's hot reads allocate nothing.
pub fn try_hot<B>(
    edge: &Edge,
    request: &mut Request<B>,
    memo: &TokenMemo,
) -> Option<Response<Body>> {
    if request.method() != Method::GET || request.uri().query().is_some() {
        return None;
    }
    // One pass over the headers (a request has a handful): the token, and whether
    // any header asks for more than a held read.
    let mut authorization = None;
    for (name, value) in request.headers() {
        if name == http::header::AUTHORIZATION {
            authorization.get_or_insert(value);
        } else if name == http::header::CACHE_CONTROL || name == VERSION_OVERRIDE {
            return None;
        }
    }
    let start = Started::now();
    let Some(Route::Value(scope, key)) = Route::parse(request.uri().path()) else {
        return None;
    };
    let token = memo.hash(bearer_bytes(authorization?)?);
    let (value, route_version) = hot_value(edge, memo, token, &scope, &key)?;
    let response = match value {
        Some(value) => {
            let headers = std::mem::take(request.headers_mut());
            respond::hit_in(value, route_version, headers)
        }
        None => {
            let mut response = respond::error(&Error::KeyNotFound);
            respond::mark(&mut response, &crate::service::Source::Hit);
            if let Some(version) = route_version {
                response
                    .headers_mut()
                    .insert(respond::ROUTE_VERSION_HEADER.clone(), version);
            }
            response
        }
    };
    edge.metrics().record(
        RouteLabel::Value,
        response.status().as_u16(),
        start.elapsed(),
    );
    Some(response)
}

/// What the edge holds for a value, if the hot path may answer with it (`None`
/// inside: a 404), and the route version header the answer carries.
fn hot_value(
    edge: &Edge,
    memo: &TokenMemo,
    token: TokenHash,
    scope: &Scope<'_>,
    key: &[u8],
) -> Option<(Option<ValueBuf>, Option<HeaderValue>)> {
    // Read before the tables: a decision made from them holds while it stands.
    let generation = edge.scope_generation();
    let admission = match memo.admitted(generation, &token, &scope.account, &scope.namespace) {
        Some(admission) => admission,
        None => {
            edge.authorize_hashed(Some(token), &scope.account, Some(&scope.namespace), false)
                .ok()?;
            let admission = Admission {
                mode: edge.known_mode(&scope.account, &scope.namespace)?.ok()?,
                index: edge.hot().intern(&scope.namespace)?,
                route_version: edge.routes().version_header.clone(),
            };
            let (account, namespace) = (&scope.account, &scope.namespace);
            memo.admit(generation, token, account, namespace, admission.clone());
            admission
        }
    };
    let value = edge.get_held_value(&scope.namespace, admission.index, admission.mode, key)?;
    // A held record's key was checked when it was written; only an absent one is
    // checked here, so that a bad key is a 400, not a 404.
    if value.is_none() {
        edgekv_kv::validate::key(key).ok()?;
    }
    Some((value, admission.route_version))
}

/// `edgekv-version-override`: a build of the table to target (admin tokens only).
static VERSION_OVERRIDE: http::HeaderName =
    http::HeaderName::from_static("edgekv-version-override");
/// `edgekv-version-key`: the affinity key that picks the build during a rollout.
static VERSION_KEY: http::HeaderName = http::HeaderName::from_static("edgekv-version-key");

/// What every handler needs from the request, besides its route and body.
#[derive(Clone, Copy)]
struct Incoming<'a> {
    edge: &'a Arc<Edge>,
    method: &'a Method,
    headers: &'a HeaderMap,
    query: &'a str,
}

impl Incoming<'_> {
    /// Authenticates the request for a scope; `write` for requests that change data.
    fn authorize(&self, account: &str, namespace: Option<&str>, write: bool) -> Result<()> {
        self.edge
            .authorize(bearer(self.headers), account, namespace, write)
            .map(drop)
    }

    /// Authenticates a request that creates (`namespace` none), renames or deletes
    /// a namespace: a token scoped to namespaces may not
    /// ([`Edge::authorize_namespace_change`]).
    fn authorize_namespace_change(&self, account: &str, namespace: Option<&str>) -> Result<()> {
        self.edge
            .authorize_namespace_change(bearer(self.headers), account, namespace)
            .map(drop)
    }

    /// Authenticates a namespace listing of `account` and returns the namespaces
    /// the token may see ([`Edge::visible_namespaces`]).
    fn visible_namespaces(&self, account: &str) -> Result<Vec<edgekv_kv::Namespace>> {
        self.edge.visible_namespaces(bearer(self.headers), account)
    }

    /// Authenticates the request, checks that its namespace exists and returns its
    /// mode.
    async fn enter(&self, scope: &Scope<'_>, write: bool) -> Result<edgekv_kv::Mode> {
        self.authorize(&scope.account, Some(&scope.namespace), write)?;
        self.edge
            .namespace_mode(&scope.account, &scope.namespace)
            .await
    }

    /// `edgekv-version-key`, if the request sent one.
    fn version_key(&self) -> Option<Bytes> {
        self.headers
            .get(&VERSION_KEY)
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
    }

    /// `edgekv-version-override`: a build of the current table to target directly;
    /// admin tokens only.
    fn version_override(&self, scope: &Scope<'_>) -> Result<Option<std::sync::Arc<str>>> {
        let build = match self.headers.get(&VERSION_OVERRIDE) {
            None => None,
            Some(value) => {
                let access = self.edge.authorize(
                    bearer(self.headers),
                    &scope.account,
                    Some(&scope.namespace),
                    false,
                )?;
                if !access.admin {
                    return Err(Error::Forbidden(
                        "edgekv-version-override needs an admin token".into(),
                    ));
                }
                let name = value.to_str().map_err(|_| {
                    Error::BadRequest("edgekv-version-override is not a build id".into())
                })?;
                Some(std::sync::Arc::from(name.trim()))
            }
        };
        Ok(build)
    }

    /// The read options of the request: `cache-control: no-cache`, `?cache_ttl=`,
    /// and `edgekv-version-override` for admin tokens.
    fn read_options(&self, scope: &Scope<'_>) -> Result<crate::service::ReadOptions> {
        let build = self.version_override(scope)?;
        let no_cache = self
            .headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
            });
        let cache_ttl_s = query::Query::parse(self.query)
            .get("cache_ttl")
            .map(|t| {
                t.parse::<u64>().map_err(|_| {
                    Error::BadRequest(format!(
                        "cache_ttl must be a whole number of seconds, got {t:?}"
                    ))
                })
            })
            .transpose()?;
        Ok(crate::service::ReadOptions {
            version_key: self.version_key(),
            build,
            no_cache,
            cache_ttl_s,
        })
    }
}

async fn dispatch<B>(request: Incoming<'_>, route: Route<'_>, body: B) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let method = request.method.clone();
    // A request that sends a body holds a place of the body gate from before
    // its body is read until it is answered (`max_body_requests`).
    let _place = if reads_body(&route, &method) {
        Some(request.edge.body_gate.admit().await?)
    } else {
        None
    };
    match (route, method) {
        (Route::Namespaces { account }, Method::GET) => namespaces::list(request, &account),
        (Route::Namespaces { account }, Method::POST) => {
            namespaces::create(request, &account, body).await
        }
        (Route::Namespace(scope), Method::GET) => namespaces::get(request, &scope).await,
        (Route::Namespace(scope), Method::PUT) => namespaces::rename(request, &scope, body).await,
        (Route::Namespace(scope), Method::DELETE) => namespaces::delete(request, &scope).await,
        (Route::Value(scope, key), Method::GET) => values::get(request, &scope, &key).await,
        (Route::Value(scope, key), Method::PUT) => {
            values::put(request, &scope, Bytes::copy_from_slice(&key), body).await
        }
        (Route::Value(scope, key), Method::DELETE) => {
            values::delete(request, &scope, Bytes::copy_from_slice(&key)).await
        }
        (Route::Metadata(scope, key), Method::GET) => values::metadata(request, &scope, &key).await,
        (Route::Keys(scope), Method::GET) => values::list(request, &scope).await,
        (Route::Bulk(scope), Method::PUT) => bulk::write(request, &scope, body).await,
        (Route::Bulk(scope), Method::DELETE) | (Route::BulkDelete(scope), Method::POST) => {
            bulk::delete(request, &scope, body).await
        }
        (Route::BulkGet(scope), Method::POST) => bulk::get(request, &scope, body).await,
        (Route::OpenApi, Method::GET) => Ok(respond::json_static(OPENAPI)),
        (Route::TokenVerify, Method::GET) => {
            let id = request.edge.verify_token(bearer(request.headers))?;
            Ok(respond::ok(
                serde_json::json!({ "id": id, "status": "active" }),
            ))
        }
        (route, method) => Ok(method_not_allowed(&route, &method)),
    }
}

/// The OpenAPI document of this API: `docs/openapi.yaml` as JSON, generated by
/// `scripts/openapi-json.py` (a test fails when it is out of date).
const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// 405 for a method `route` does not serve, with the `Allow` header RFC 9110
/// asks for. Needs no token.
fn method_not_allowed(route: &Route<'_>, method: &Method) -> Response<Body> {
    let mut response = respond::error(&Error::MethodNotAllowed(method.to_string()));
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(route.allow()));
    response
}

/// Whether the handler of `route` and `method` reads the request's body.
fn reads_body(route: &Route<'_>, method: &Method) -> bool {
    matches!(
        (route, method),
        (Route::Namespaces { .. }, &Method::POST)
            | (Route::Namespace(_), &Method::PUT)
            | (Route::Value(..), &Method::PUT)
            | (Route::Bulk(_), &Method::PUT | &Method::DELETE)
            | (Route::BulkDelete(_) | Route::BulkGet(_), &Method::POST)
    )
}

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers.get(http::header::AUTHORIZATION)?)
}

/// The token of an `Authorization: Bearer <token>` value (scheme in any case).
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    std::str::from_utf8(bearer_bytes(value)?).ok()
}

/// [`bearer_token`] as bytes. A token is ASCII (a value with other bytes is no
/// token, as `HeaderValue::to_str` would say); within ASCII it is not checked
/// further: it is looked up by hash, and a token with bytes no token has matches
/// none. Only ASCII is trimmed: a header value holds no other whitespace.
pub(crate) fn bearer_bytes(value: &HeaderValue) -> Option<&[u8]> {
    // As clients send it: one comparison.
    if let Some(token) = value.as_bytes().strip_prefix(b"Bearer ")
        && let Some(&first) = token.first()
        && first != b' '
        && first != b'\t'
    {
        let token = token.trim_ascii_end();
        return (!token.is_empty() && token.is_ascii()).then_some(token);
    }
    let value = value.as_bytes().trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let token = value[space + 1..].trim_ascii();
    let bearer = value[..space].eq_ignore_ascii_case(b"bearer");
    (bearer && !token.is_empty() && token.is_ascii()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_in_any_case_and_trimmed() {
        let token =
            |raw: &'static str| bearer_token(&HeaderValue::from_static(raw)).map(str::to_owned);
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(token("BEARER abc").as_deref(), Some("abc"));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(token("Bearer   "), None);
        assert_eq!(token("Bearerabc"), None);
        assert_eq!(token("\tBearer\tabc"), None);
        assert_eq!(token(" Bearer \tabc\t").as_deref(), Some("abc"));
        // As clients send it (the one-comparison path), and near misses of it.
        assert_eq!(token("Bearer abc\t ").as_deref(), Some("abc"));
        assert_eq!(token("Bearer \tabc").as_deref(), Some("abc"));
        assert_eq!(token("Bearer  abc").as_deref(), Some("abc"));
        assert_eq!(token("Bearer a b").as_deref(), Some("a b"));
        assert_eq!(token("Bearer \t"), None);
        // Not ASCII: no token, by either path.
        let utf8 = |raw: &str| {
            let value = HeaderValue::from_bytes(raw.as_bytes()).unwrap();
            bearer_token(&value).map(str::to_owned)
        };
        assert_eq!(utf8("Bearer tok\u{e9}n"), None);
        assert_eq!(utf8("bearer  tok\u{e9}n"), None);
    }

    /// The document served is `docs/openapi.json`, generated from
    /// `docs/openapi.yaml` by `scripts/openapi-json.py`, which records the SHA-256
    /// of the YAML it read: a YAML edited since fails here.
    #[test]
    fn the_served_openapi_document_is_generated_from_the_yaml() {
        use sha2::{Digest, Sha256};
        let yaml = include_bytes!("../../../docs/openapi.yaml");
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(
            document["x-source-sha256"].as_str(),
            Some(hex::encode(Sha256::digest(yaml)).as_str()),
            "docs/openapi.json is out of date: run scripts/openapi-json.py"
        );
        assert_eq!(document["openapi"], "3.1.0");
    }

    /// Every path of the document is a route, every route has a path there, and
    /// a 405 names exactly the methods the document lists for its path.
    #[test]
    fn the_document_lists_every_route_with_the_methods_it_serves() {
        const METHODS: [&str; 8] = [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ];
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = document["paths"].as_object().unwrap();
        let mut seen = Vec::new();
        for (template, item) in paths {
            let path = template
                .replace("{account_id}", "acct")
                .replace("{namespace_id}", "0123456789abcdef0123456789abcdef")
                .replace("{key_name}", "k");
            let route = Route::parse(&path).unwrap_or_else(|| panic!("{template} is no route"));
            let mut documented: Vec<String> = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|name| METHODS.contains(&name.as_str()))
                .map(|name| name.to_ascii_uppercase())
                .collect();
            documented.sort();
            let mut allowed: Vec<&str> = route.allow().split(", ").collect();
            allowed.sort_unstable();
            assert_eq!(documented, allowed, "{template}");
            // As text: a discriminant would borrow `path` past this iteration.
            seen.push(format!("{:?}", std::mem::discriminant(&route)));
        }
        seen.sort_unstable();
        seen.dedup();
        // Namespaces, Namespace, Value, Metadata, Keys, Bulk, BulkDelete, BulkGet,
        // OpenApi, TokenVerify.
        assert_eq!(seen.len(), 10, "a route is missing from docs/openapi.yaml");
    }
}
