//! Namespace routes: list, create, get, rename, delete.

use bytes::Bytes;
use edgekv_kv::limits::MAX_SMALL_BODY_BYTES;
use edgekv_kv::{Mode, Namespace};
use http::Response;
use hyper::body::Body as HttpBody;
use serde::Deserialize;
use serde_json::{Value, json};

use super::query::Query;
use super::{Body, Incoming, Scope, body, respond};
use crate::{Error, Result};

/// The largest page of a namespace listing.
const MAX_PER_PAGE: usize = 1000;
/// The page size when none is asked for.
const DEFAULT_PER_PAGE: usize = 20;

#[derive(Deserialize)]
struct TitleBody {
    title: String,
    /// `cache` (default) or `full`; only read on create.
    #[serde(default)]
    mode: Option<String>,
}

/// The JSON form of a namespace.
fn json(namespace: &Namespace) -> Value {
    json!({
        "id": namespace.id,
        "title": namespace.title,
        "supports_url_encoding": true,
        "mode": namespace.mode.as_str(),
    })
}

fn number(query: &Query<'_>, name: &str, default: usize, max: usize) -> Result<usize> {
    let Some(text) = query.get(name) else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Error::BadRequest(format!(
            "{name} must be a number from 1 to {max}, got {text:?}"
        ))),
    }
}

/// Lists the namespaces the token may see (a scoped token: only its own), and
/// counts only those in `result_info`.
pub(super) fn list(request: Incoming<'_>, account: &str) -> Result<Response<Body>> {
    let mut all = request.visible_namespaces(account)?;
    let query = Query::parse(request.query);
    let page = number(&query, "page", 1, usize::MAX)?;
    let per_page = number(&query, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
    match query.get("order").unwrap_or("id") {
        "id" => {}
        "title" => all.sort_by(|a, b| a.title.cmp(&b.title).then(a.id.cmp(&b.id))),
        other => {
            return Err(Error::BadRequest(format!(
                "order must be `id` or `title`, got {other:?}"
            )));
        }
    }
    match query.get("direction").unwrap_or("asc") {
        "asc" => {}
        "desc" => all.reverse(),
        other => {
            return Err(Error::BadRequest(format!(
                "direction must be `asc` or `desc`, got {other:?}"
            )));
        }
    }
    let total = all.len();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(json)
        .collect();
    let info = json!({
        "page": page,
        "per_page": per_page,
        "count": items.len(),
        "total_count": total,
        "total_pages": total.div_ceil(per_page),
    });
    Ok(respond::ok_with_info(items, info))
}

async fn read_title<B>(request: Incoming<'_>, body: B) -> Result<TitleBody>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let raw = body::read(request.headers, body, MAX_SMALL_BODY_BYTES).await?;
    let parsed: TitleBody = serde_json::from_slice(&raw).map_err(|e| {
        Error::BadRequest(format!(
            "body must be JSON like {{\"title\": \"...\"}}: {e}"
        ))
    })?;
    Ok(parsed)
}

pub(super) async fn create<B>(
    request: Incoming<'_>,
    account: &str,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    request.authorize_namespace_change(account, None)?;
    let asked = read_title(request, body).await?;
    let mode = match asked.mode.as_deref() {
        None => Mode::Cache,
        Some(text) => Mode::parse(text).ok_or_else(|| {
            Error::BadRequest(format!("mode must be `cache` or `full`, got {text:?}"))
        })?,
    };
    let namespace = request
        .edge
        .create_namespace(account, &asked.title, mode)
        .await?;
    Ok(respond::ok(json(&namespace)))
}

pub(super) async fn get(request: Incoming<'_>, scope: &Scope<'_>) -> Result<Response<Body>> {
    request.enter(scope, false).await?;
    let namespace = request.edge.namespace(&scope.account, &scope.namespace)?;
    Ok(respond::ok(json(&namespace)))
}

pub(super) async fn rename<B>(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    enter_to_change(request, scope).await?;
    let asked = read_title(request, body).await?;
    let namespace = request
        .edge
        .rename_namespace(&scope.account, &scope.namespace, &asked.title)
        .await?;
    Ok(respond::ok(json(&namespace)))
}

pub(super) async fn delete(request: Incoming<'_>, scope: &Scope<'_>) -> Result<Response<Body>> {
    enter_to_change(request, scope).await?;
    request
        .edge
        .delete_namespace(&scope.account, &scope.namespace)
        .await?;
    Ok(respond::ok(json!({})))
}

/// Authenticates a rename or delete of the scope's namespace (a token scoped to
/// namespaces may do neither), then checks that the namespace exists.
async fn enter_to_change(request: Incoming<'_>, scope: &Scope<'_>) -> Result<()> {
    request.authorize_namespace_change(&scope.account, Some(&scope.namespace))?;
    request
        .edge
        .namespace_mode(&scope.account, &scope.namespace)
        .await
        .map(drop)
}
