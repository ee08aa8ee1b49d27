//! `edgekv kv ...`: a client of an edge's KV API, for people and scripts.
//!
//! Output is plain text by default (values raw, lists one item per line) and the
//! exit code says what happened: see the `EXIT_*` constants.

use std::io::{Read as _, Write as _};

use anyhow::Context as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::{KvArgs, KvCommand, NamespaceCommand};

/// The key or namespace does not exist.
pub const EXIT_NOT_FOUND: u8 = 1;
/// The token was missing, invalid or not allowed (401/403).
pub const EXIT_DENIED: u8 = 3;
/// The request was refused as invalid (another 4xx).
pub const EXIT_REFUSED: u8 = 4;
/// The edge failed or could not be reached (5xx, connection error), or a local
/// failure (reading a file).
pub const EXIT_FAILURE: u8 = 5;

/// A failed client command, with the exit code that tells scripts why.
#[derive(Debug)]
pub struct ClientError {
    /// The process exit code.
    pub exit_code: u8,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

struct Kv {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Runs a `kv` subcommand.
pub async fn run(args: KvArgs) -> anyhow::Result<()> {
    let token = args.token.clone().ok_or_else(|| ClientError {
        exit_code: EXIT_DENIED,
        message: "no token: pass --token or set EDGEKV_TOKEN (`edgekv dev` prints one)".into(),
    })?;
    let kv = Kv {
        http: reqwest::Client::new(),
        base: format!(
            "{}/client/v4/accounts/{}/storage/kv",
            args.url.trim_end_matches('/'),
            encode(&args.account)
        ),
        token,
    };
    let mut out = std::io::stdout().lock();
    match args.command {
        KvCommand::Namespace(NamespaceCommand::Create { title }) => {
            let body = serde_json::json!({ "title": title });
            let result = kv.json(Method::POST, "/namespaces", Some(body)).await?;
            writeln!(
                out,
                "{}",
                result["result"]["id"].as_str().unwrap_or_default()
            )?;
        }
        KvCommand::Namespace(NamespaceCommand::List { json }) => {
            let mut all = Vec::new();
            for page in 1.. {
                let path = format!("/namespaces?per_page=1000&page={page}");
                let result = kv.json(Method::GET, &path, None).await?;
                let items = result["result"].as_array().cloned().unwrap_or_default();
                let done = items.len() < 1000;
                all.extend(items);
                if done {
                    break;
                }
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            } else {
                for ns in all {
                    let id = ns["id"].as_str().unwrap_or_default();
                    writeln!(out, "{id}\t{}", ns["title"].as_str().unwrap_or_default())?;
                }
            }
        }
        KvCommand::Namespace(NamespaceCommand::Rename { id, title }) => {
            let body = serde_json::json!({ "title": title });
            kv.json(
                Method::PUT,
                &format!("/namespaces/{}", encode(&id)),
                Some(body),
            )
            .await?;
        }
        KvCommand::Namespace(NamespaceCommand::Delete { id }) => {
            kv.json(
                Method::DELETE,
                &format!("/namespaces/{}", encode(&id)),
                None,
            )
            .await?;
        }
        KvCommand::Put {
            namespace,
            key,
            value,
            file,
            metadata,
            ttl,
            expiration,
        } => {
            let value = match (value, file) {
                (Some(value), _) => value.into_bytes(),
                (None, Some(path)) if path.as_os_str() != "-" => std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, _) => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("cannot read the value from standard input")?;
                    buf
                }
            };
            let mut path = value_path(&namespace, &key);
            if let Some(ttl) = ttl {
                path.push_str(&format!("?expiration_ttl={ttl}"));
            } else if let Some(at) = expiration {
                path.push_str(&format!("?expiration={at}"));
            }
            let mut request = kv.request(Method::PUT, &path);
            request = match metadata {
                Some(metadata) => {
                    let form = reqwest::multipart::Form::new()
                        .part("value", reqwest::multipart::Part::bytes(value))
                        .text("metadata", metadata);
                    request.multipart(form)
                }
                None => request.body(value),
            };
            kv.send(request).await?;
        }
        KvCommand::Get { namespace, key } => {
            let response = kv
                .send(kv.request(Method::GET, &value_path(&namespace, &key)))
                .await?;
            out.write_all(&response.bytes().await?)?;
        }
        KvCommand::Delete { namespace, key } => {
            kv.json(Method::DELETE, &value_path(&namespace, &key), None)
                .await?;
        }
        KvCommand::List {
            namespace,
            prefix,
            limit,
            json,
        } => {
            let mut cursor = String::new();
            let mut printed = 0usize;
            loop {
                let page = limit.map_or(1000, |l| (l - printed).clamp(1, 1000));
                let mut path = format!("/namespaces/{}/keys?limit={page}", encode(&namespace));
                if let Some(prefix) = &prefix {
                    path.push_str(&format!("&prefix={}", encode(prefix)));
                }
                if !cursor.is_empty() {
                    path.push_str(&format!("&cursor={}", encode(&cursor)));
                }
                let result = kv.json(Method::GET, &path, None).await?;
                for entry in result["result"].as_array().into_iter().flatten() {
                    if json {
                        writeln!(out, "{entry}")?;
                    } else {
                        writeln!(out, "{}", entry["name"].as_str().unwrap_or_default())?;
                    }
                    printed += 1;
                }
                cursor = result["result_info"]["cursor"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if cursor.is_empty() || limit.is_some_and(|l| printed >= l) {
                    break;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

impl Kv {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request; turns a non-2xx answer into a [`ClientError`].
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| ClientError {
            exit_code: EXIT_FAILURE,
            message: format!("cannot reach the edge: {e}"),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["errors"][0]["message"]
            .as_str()
            .unwrap_or("no error message")
            .to_string();
        let exit_code = match status {
            StatusCode::NOT_FOUND => EXIT_NOT_FOUND,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => EXIT_DENIED,
            s if s.is_client_error() => EXIT_REFUSED,
            _ => EXIT_FAILURE,
        };
        Err(ClientError {
            exit_code,
            message: format!("{} {message}", status.as_u16()),
        }
        .into())
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(request).await?;
        response.json().await.map_err(|e| {
            ClientError {
                exit_code: EXIT_FAILURE,
                message: format!("the edge answered something that is not JSON: {e}"),
            }
            .into()
        })
    }
}

fn value_path(namespace: &str, key: &str) -> String {
    format!("/namespaces/{}/values/{}", encode(namespace), encode(key))
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}
