//! Who may do what: every route of the KV API against every kind of token, each
//! cell's status written down in one table ([`TABLE`]) and checked against a real
//! edge over a real origin. A token scoped to namespaces uses them but never
//! creates, renames or deletes a namespace, and a namespace listing shows it (and
//! counts) only its own (issue #21). Every refusal is a 401/403 about the
//! client's own token, says why, and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgekv_edge::tokens::{self, Grant, TokenHash};
use edgekv_test_support::{ACCOUNT, Client, OTHER_ACCOUNT_TOKEN, READ_ONLY_TOKEN, TOKEN, TestEdge};
use reqwest::Method;
use serde_json::{Value, json};

use Target::{A, B};

/// A token of the whole account that reads and writes, and is no operator's.
const ACCOUNT_TOKEN: &str = "0000000000000000000000000000000a";
/// A token scoped to namespace A of each cell (read and write).
const SCOPED_TOKEN: &str = "0000000000000000000000000000000b";
/// A token control granted once, then left out of every later table.
const REVOKED_TOKEN: &str = "0000000000000000000000000000000d";

/// The kinds of token, in the order of the columns of [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every right on the account, operator features included ([`TOKEN`]).
    Admin,
    /// Read and write on the whole account, not an operator's.
    Account,
    /// Read and write on namespace A only.
    Scoped,
    /// Read only, on the whole account ([`READ_ONLY_TOKEN`]).
    ReadOnly,
    /// No longer in the table.
    Revoked,
    /// Every right on another account ([`OTHER_ACCOUNT_TOKEN`]).
    OtherAccount,
}

const KINDS: [Kind; 6] = [
    Kind::Admin,
    Kind::Account,
    Kind::Scoped,
    Kind::ReadOnly,
    Kind::Revoked,
    Kind::OtherAccount,
];

impl Kind {
    fn token(self) -> &'static str {
        match self {
            Kind::Admin => TOKEN,
            Kind::Account => ACCOUNT_TOKEN,
            Kind::Scoped => SCOPED_TOKEN,
            Kind::ReadOnly => READ_ONLY_TOKEN,
            Kind::Revoked => REVOKED_TOKEN,
            Kind::OtherAccount => OTHER_ACCOUNT_TOKEN,
        }
    }

    /// What a refusal of `op` to this kind of token says.
    fn refusal(self, op: Op) -> &'static str {
        match self {
            Kind::Revoked => "invalid or revoked token",
            Kind::OtherAccount => "not valid for account",
            Kind::ReadOnly => "read-only",
            Kind::Scoped if op.target() == Some(B) => "not valid for namespace",
            Kind::Scoped => "scoped to namespaces",
            // Never refused: any refusal is wrong, whatever it says.
            Kind::Admin | Kind::Account => "(no refusal expected)",
        }
    }
}

/// The namespace a route addresses: A is in the scoped token's scope, B is not.
/// Each cell of the table gets a fresh A and B, each holding the key `k` = `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    A,
    B,
}

impl Target {
    /// The title of this namespace in cell `cell`.
    fn title(self, cell: usize) -> String {
        match self {
            A => format!("a-{cell}"),
            B => format!("b-{cell}"),
        }
    }
}

/// One route of the KV API with one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    ListNamespaces,
    CreateNamespace,
    GetNamespace(Target),
    RenameNamespace(Target),
    DeleteNamespace(Target),
    PutValue(Target),
    GetValue(Target),
    DeleteValue(Target),
    Metadata(Target),
    Keys(Target),
    BulkPut(Target),
    BulkDelete(Target),
    BulkGet(Target),
}

impl Op {
    /// The namespace the route addresses, if it addresses one.
    fn target(self) -> Option<Target> {
        match self {
            Op::ListNamespaces | Op::CreateNamespace => None,
            Op::GetNamespace(t)
            | Op::RenameNamespace(t)
            | Op::DeleteNamespace(t)
            | Op::PutValue(t)
            | Op::GetValue(t)
            | Op::DeleteValue(t)
            | Op::Metadata(t)
            | Op::Keys(t)
            | Op::BulkPut(t)
            | Op::BulkDelete(t)
            | Op::BulkGet(t) => Some(t),
        }
    }
}

/// The status of each route for each kind of token. Columns, in the order of
/// [`KINDS`]:
///
/// ```text
///   admin | account | scoped (to A) | read-only | revoked | other account
/// ```
const TABLE: &[(Op, [u16; 6])] = &[
    // The account's namespaces: any token of the account lists them (a scoped
    // one sees only its own); only a writing token of the whole account creates.
    (Op::ListNamespaces, [200, 200, 200, 200, 401, 403]),
    (Op::CreateNamespace, [200, 200, 403, 403, 401, 403]),
    // Namespace A, in the scoped token's scope: it opens A, but neither renames
    // nor deletes it.
    (Op::GetNamespace(A), [200, 200, 200, 200, 401, 403]),
    (Op::RenameNamespace(A), [200, 200, 403, 403, 401, 403]),
    (Op::DeleteNamespace(A), [200, 200, 403, 403, 401, 403]),
    // Namespace B, outside its scope: nothing.
    (Op::GetNamespace(B), [200, 200, 403, 200, 401, 403]),
    (Op::RenameNamespace(B), [200, 200, 403, 403, 401, 403]),
    (Op::DeleteNamespace(B), [200, 200, 403, 403, 401, 403]),
    // Keys in A: the scoped token reads and writes them; the read-only one reads.
    (Op::GetValue(A), [200, 200, 200, 200, 401, 403]),
    (Op::Metadata(A), [200, 200, 200, 200, 401, 403]),
    (Op::Keys(A), [200, 200, 200, 200, 401, 403]),
    (Op::BulkGet(A), [200, 200, 200, 200, 401, 403]),
    (Op::PutValue(A), [200, 200, 200, 403, 401, 403]),
    (Op::DeleteValue(A), [200, 200, 200, 403, 401, 403]),
    (Op::BulkPut(A), [200, 200, 200, 403, 401, 403]),
    (Op::BulkDelete(A), [200, 200, 200, 403, 401, 403]),
    // Keys in B: the scoped token may do nothing with them.
    (Op::GetValue(B), [200, 200, 403, 200, 401, 403]),
    (Op::Metadata(B), [200, 200, 403, 200, 401, 403]),
    (Op::Keys(B), [200, 200, 403, 200, 401, 403]),
    (Op::BulkGet(B), [200, 200, 403, 200, 401, 403]),
    (Op::PutValue(B), [200, 200, 403, 403, 401, 403]),
    (Op::DeleteValue(B), [200, 200, 403, 403, 401, 403]),
    (Op::BulkPut(B), [200, 200, 403, 403, 401, 403]),
    (Op::BulkDelete(B), [200, 200, 403, 403, 401, 403]),
];

/// A grant of `account`'s namespaces `namespaces` (every one when `None`), read
/// and write, not an operator's.
fn grant(name: &str, namespaces: Option<&[&str]>) -> Grant {
    Grant {
        namespaces: namespaces.map(|list| list.iter().map(|&n| n.to_owned()).collect()),
        admin: false,
        ..Grant::full(name, ACCOUNT)
    }
}

/// Control's token table for a cell: the account-wide token, and the scoped
/// token scoped to `a`.
fn control_table(a: &str) -> Vec<(TokenHash, Grant)> {
    vec![
        (tokens::hash(ACCOUNT_TOKEN), grant("account", None)),
        (tokens::hash(SCOPED_TOKEN), grant("scoped", Some(&[a]))),
    ]
}

/// Sends a request; its status and JSON body (`null` when the body is not JSON).
async fn json_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Lists the namespaces `client`'s token may see, with `query`.
async fn list(client: &Client, query: &str) -> (u16, Value) {
    json_of(client.request(Method::GET, &format!("/namespaces{query}"))).await
}

/// The ids and titles of a namespace listing's page.
fn listed(body: &Value, field: &str) -> Vec<String> {
    body["result"]
        .as_array()
        .map(|page| {
            page.iter()
                .filter_map(|n| n[field].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `op` with `client`'s token, on namespaces `a` and `b` of cell `cell`.
async fn send(client: &Client, op: Op, a: &str, b: &str, cell: usize) -> (u16, Value) {
    let ns = |t: Target| match t {
        A => a,
        B => b,
    };
    let at = |t: Target, rest: &str| format!("/namespaces/{}{rest}", ns(t));
    let request = match op {
        Op::ListNamespaces => client.request(Method::GET, "/namespaces?per_page=1000"),
        Op::CreateNamespace => client
            .request(Method::POST, "/namespaces")
            .json(&json!({ "title": format!("new-{cell}") })),
        Op::GetNamespace(t) => client.request(Method::GET, &at(t, "")),
        Op::RenameNamespace(t) => client
            .request(Method::PUT, &at(t, ""))
            .json(&json!({ "title": format!("renamed-{cell}") })),
        Op::DeleteNamespace(t) => client.request(Method::DELETE, &at(t, "")),
        Op::PutValue(t) => client
            .request(Method::PUT, &Client::value_path(ns(t), "k"))
            .body("new"),
        Op::GetValue(t) => client.request(Method::GET, &Client::value_path(ns(t), "k")),
        Op::DeleteValue(t) => client.request(Method::DELETE, &Client::value_path(ns(t), "k")),
        Op::Metadata(t) => client.request(Method::GET, &at(t, "/metadata/k")),
        Op::Keys(t) => client.request(Method::GET, &at(t, "/keys")),
        Op::BulkPut(t) => client
            .request(Method::PUT, &at(t, "/bulk"))
            .json(&json!([{ "key": "k", "value": "bulk" }])),
        Op::BulkDelete(t) => client
            .request(Method::POST, &at(t, "/bulk/delete"))
            .json(&json!(["k"])),
        Op::BulkGet(t) => client
            .request(Method::POST, &at(t, "/bulk/get"))
            .json(&json!({ "keys": ["k"] })),
    };
    json_of(request).await
}

/// What a refused `op` changed anyway, seen with the admin token; `None` when
/// it changed nothing.
async fn changed(admin: &Client, op: Op, a: &str, b: &str, cell: usize) -> Option<String> {
    let ns = |t: Target| match t {
        A => a,
        B => b,
    };
    match op {
        Op::CreateNamespace => {
            let (_, body) = list(admin, "?per_page=1000").await;
            let title = format!("new-{cell}");
            listed(&body, "title")
                .contains(&title)
                .then(|| format!("namespace {title:?} was created"))
        }
        Op::RenameNamespace(t) | Op::DeleteNamespace(t) => {
            let (status, body) =
                json_of(admin.request(Method::GET, &format!("/namespaces/{}", ns(t)))).await;
            (status != 200 || body["result"]["title"] != t.title(cell).as_str())
                .then(|| format!("namespace {t:?} is now {status} {body}"))
        }
        Op::PutValue(t) | Op::DeleteValue(t) | Op::BulkPut(t) | Op::BulkDelete(t) => {
            let (status, value) = admin.get(ns(t), "k").await;
            (status != 200 || value != b"v").then(|| {
                format!(
                    "key k of {t:?} is now {status} {:?}",
                    String::from_utf8_lossy(&value)
                )
            })
        }
        // Reads: nothing to change.
        Op::ListNamespaces
        | Op::GetNamespace(_)
        | Op::GetValue(_)
        | Op::Metadata(_)
        | Op::Keys(_)
        | Op::BulkGet(_) => None,
    }
}

/// Every cell of [`TABLE`], each on fresh namespaces A and B made with the admin
/// token (so a cell's write or delete cannot change the next cell's
/// preconditions). Every wrong cell is reported, in one failure.
#[tokio::test]
async fn every_route_answers_every_kind_of_token_as_the_table_says() {
    let edge = TestEdge::start().await;
    let admin = edge.client();
    let clients: Vec<(Kind, Client)> = KINDS
        .iter()
        .map(|&kind| (kind, Client::new(&edge.base, kind.token())))
        .collect();

    // The revoked token worked once: control granted it, then left it out.
    let mut version = 2;
    let mut first = control_table("none");
    first.push((tokens::hash(REVOKED_TOKEN), grant("revoked", None)));
    edge.edge().set_control_tokens(version, first);
    let revoked = Client::new(&edge.base, REVOKED_TOKEN);
    assert_eq!(list(&revoked, "").await.0, 200, "before it was revoked");

    let mut wrong = Vec::new();
    let mut cells = 0;
    for &(op, statuses) in TABLE {
        for ((kind, client), expected) in clients.iter().zip(statuses) {
            let kind = *kind;
            cells += 1;
            let cell = cells;
            let a = admin.create_namespace(&A.title(cell)).await;
            let b = admin.create_namespace(&B.title(cell)).await;
            assert_eq!(admin.put(&a, "k", "v").await, 200);
            assert_eq!(admin.put(&b, "k", "v").await, 200);
            version += 1;
            edge.edge().set_control_tokens(version, control_table(&a));

            let (status, body) = send(client, op, &a, &b, cell).await;
            let at = format!("{op:?} with the {kind:?} token");
            if status != expected {
                wrong.push(format!("{at}: {status}, expected {expected}: {body}"));
                continue;
            }
            if expected >= 400 {
                // A refusal is about the client's own token, says why, and
                // writes nothing.
                let message = body["errors"][0]["message"].as_str().unwrap_or("");
                let why = kind.refusal(op);
                if body["errors"][0]["code"] != 10000 || !message.contains(why) {
                    wrong.push(format!("{at}: refused with {body}, not for {why:?}"));
                }
                if let Some(what) = changed(&admin, op, &a, &b, cell).await {
                    wrong.push(format!("{at}: refused, yet {what}"));
                }
            }
            if op == Op::ListNamespaces && status == 200 {
                let ids = listed(&body, "id");
                let info = &body["result_info"];
                let sees_all = ids.contains(&a) && ids.contains(&b);
                let right = match kind {
                    Kind::Scoped => {
                        ids == [a.as_str()] && info["count"] == 1 && info["total_count"] == 1
                    }
                    _ => sees_all && info["total_count"] == ids.len(),
                };
                if !right {
                    wrong.push(format!(
                        "{at}: listed {ids:?} with {info} (A is {a}, B {b})"
                    ));
                }
            }
        }
    }
    assert_eq!(cells, TABLE.len() * KINDS.len());
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells are wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A scoped token's listing counts only what it may see: `result_info` and its
/// pages are those of its own namespaces, whatever else the account holds.
#[tokio::test]
async fn a_scoped_token_lists_and_counts_only_its_own_namespaces() {
    let edge = TestEdge::start().await;
    let admin = edge.client();
    let mine = admin.create_namespace("mine").await;
    let also_mine = admin.create_namespace("also-mine").await;
    for title in ["theirs-1", "theirs-2", "theirs-3"] {
        admin.create_namespace(title).await;
    }
    edge.edge().set_control_tokens(
        2,
        vec![(
            tokens::hash(SCOPED_TOKEN),
            grant("scoped", Some(&[mine.as_str(), also_mine.as_str()])),
        )],
    );
    let scoped = Client::new(&edge.base, SCOPED_TOKEN);

    let (status, body) = list(&scoped, "").await;
    assert_eq!(status, 200, "{body}");
    let mut ids = listed(&body, "id");
    ids.sort();
    let mut expected = vec![mine.clone(), also_mine.clone()];
    expected.sort();
    assert_eq!(ids, expected, "{body}");

    let pages: [(usize, &[&str]); 3] = [(1, &["also-mine"]), (2, &["mine"]), (3, &[])];
    for (page, titles) in pages {
        let (status, body) = list(&scoped, &format!("?order=title&per_page=1&page={page}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(listed(&body, "title"), titles, "page {page}: {body}");
        assert_eq!(
            body["result_info"],
            json!({
                "page": page,
                "per_page": 1,
                "count": titles.len(),
                "total_count": 2,
                "total_pages": 2,
            }),
            "page {page}"
        );
    }

    // A token of the whole account sees and counts all five.
    let (status, body) = list(&admin, "?per_page=1000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listed(&body, "id").len(), 5, "{body}");
    assert_eq!(body["result_info"]["total_count"], 5, "{body}");

    // The scoped token creates no namespace: 403, saying why, and nothing made.
    let (status, body) = json_of(
        scoped
            .request(Method::POST, "/namespaces")
            .json(&json!({ "title": "sneaky" })),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("scoped to namespaces"), "{body}");
    let (_, body) = list(&admin, "?per_page=1000").await;
    let titles = listed(&body, "title");
    assert!(!titles.iter().any(|t| t == "sneaky"), "{body}");
}
