//! The Workers KV API of a real edge: hyper on 127.0.0.1:0, RocksDB in a temporary
//! directory, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgekv_kv::Clock as _;
use edgekv_test_support::{
    ACCOUNT, Client, OTHER_ACCOUNT_TOKEN, READ_ONLY_TOKEN, TOKEN, TestEdge, encode,
};
use reqwest::Method;
use serde_json::{Value, json};

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts the v4 error envelope and returns its first message.
fn error_message(body: &Value) -> String {
    assert_eq!(body["success"], false, "{body}");
    assert!(body["errors"][0]["code"].as_u64().is_some(), "{body}");
    body["errors"][0]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn namespaces_lifecycle() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let a = kv.create_namespace("alpha").await;
    let b = kv.create_namespace("beta").await;
    assert_eq!(a.len(), 32);

    // A duplicate title in the account is refused.
    let (status, body) = json_of(
        kv.request(Method::POST, "/namespaces")
            .json(&json!({"title": "alpha"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(&body).contains("already exists"));

    // List, paged and ordered.
    let (status, body) = json_of(
        kv.request(
            Method::GET,
            "/namespaces?order=title&direction=desc&per_page=1&page=1",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["result"][0]["title"], "beta");
    assert_eq!(body["result_info"]["total_count"], 2);
    assert_eq!(body["result_info"]["count"], 1);

    // Get, rename, delete.
    let (status, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{a}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["result"]["title"].clone()),
        (200, json!("alpha"))
    );
    let (status, body) = json_of(
        kv.request(Method::PUT, &format!("/namespaces/{a}"))
            .json(&json!({"title": "gamma"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["result"]["title"].clone()),
        (200, json!("gamma"))
    );
    assert_eq!(kv.put(&b, "k", "v").await, 200);
    let (status, _) = json_of(
        kv.request(Method::DELETE, &format!("/namespaces/{b}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{b}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    error_message(&body);
    assert_eq!(kv.get(&b, "k").await.0, 404);
    assert_eq!(
        kv.put(&b, "k", "v").await,
        404,
        "a write to a deleted namespace"
    );

    // Bad bodies and parameters are 400s.
    for (query, body) in [
        ("/namespaces", json!({"name": "x"})),
        ("/namespaces", json!({"title": ""})),
    ] {
        let response = kv
            .request(Method::POST, query)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    let response = kv
        .request(Method::GET, "/namespaces?per_page=0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = kv
        .request(Method::GET, "/namespaces?order=size")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn values_round_trip_with_awkward_keys_and_binary_values() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("values").await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let keys = [
        "plain",
        "a/b/c",
        "with space",
        "100%",
        "what?",
        "#hash",
        "ключ/ü/日本",
        "/leading",
        "trailing/",
    ];
    for key in keys {
        assert_eq!(kv.put(&ns, key, binary.clone()).await, 200, "{key}");
    }
    for key in keys {
        let (status, body) = kv.get(&ns, key).await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(body, binary, "{key}");
    }
    // The listing shows the keys as written.
    let (_, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/keys"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mut listed: Vec<String> = body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected);

    // Overwrite, then delete.
    assert_eq!(kv.put(&ns, "a/b/c", "second").await, 200);
    assert_eq!(kv.get(&ns, "a/b/c").await, (200, b"second".to_vec()));
    assert_eq!(kv.delete(&ns, "a/b/c").await, 200);
    let response = kv
        .request(Method::GET, &Client::value_path(&ns, "a/b/c"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 404);
    assert_eq!(body["errors"][0]["code"], 10009);
    // Deleting a missing key succeeds, as in Workers KV.
    assert_eq!(kv.delete(&ns, "never-written").await, 200);
    // An empty value is a value.
    assert_eq!(kv.put(&ns, "empty", "").await, 200);
    assert_eq!(kv.get(&ns, "empty").await, (200, Vec::new()));
}

#[tokio::test]
async fn metadata_round_trips_through_multipart() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("meta").await;
    let form = reqwest::multipart::Form::new()
        .part(
            "value",
            reqwest::multipart::Part::bytes(b"\x00\x01value".to_vec()),
        )
        .text("metadata", r#"{"owner": "team-a", "n": [1, 2]}"#);
    let response = kv
        .request(Method::PUT, &Client::value_path(&ns, "k"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(kv.get(&ns, "k").await, (200, b"\x00\x01value".to_vec()));
    let (status, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/metadata/k"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], json!({"owner": "team-a", "n": [1, 2]}));
    let (_, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/keys"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["result"][0]["metadata"]["owner"], "team-a");
    // A key without metadata answers null.
    kv.put(&ns, "plain", "v").await;
    let (_, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/metadata/plain"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["result"], Value::Null);
    // Metadata that is not JSON is refused and nothing is written.
    let form = reqwest::multipart::Form::new()
        .text("value", "new")
        .text("metadata", "{oops");
    let response = kv
        .request(Method::PUT, &Client::value_path(&ns, "plain"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(kv.get(&ns, "plain").await, (200, b"v".to_vec()));
    // A multipart body without a value part is refused.
    let form = reqwest::multipart::Form::new().text("metadata", "{}");
    let response = kv
        .request(Method::PUT, &Client::value_path(&ns, "x"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn expiration_follows_the_edge_clock() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("ttl").await;
    let now = edge.clock.now_s();
    let put = |key: &str, query: String| {
        kv.request(
            Method::PUT,
            &format!("{}?{query}", Client::value_path(&ns, key)),
        )
        .body("v")
        .send()
    };
    assert_eq!(
        put("ttl", "expiration_ttl=120".into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put("abs", format!("expiration={}", now + 300))
            .await
            .unwrap()
            .status(),
        200
    );
    // Too soon, malformed, or both: refused.
    assert_eq!(
        put("bad", "expiration_ttl=59".into())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        put("bad", format!("expiration={}", now + 10))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        put("bad", "expiration_ttl=soon".into())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        put(
            "bad",
            format!("expiration={}&expiration_ttl=100", now + 300)
        )
        .await
        .unwrap()
        .status(),
        400
    );
    assert_eq!(kv.get(&ns, "bad").await.0, 404);

    let (_, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/keys"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["result"][0]["name"], "abs");
    assert_eq!(body["result"][0]["expiration"], now + 300);
    assert_eq!(body["result"][1]["expiration"], now + 120);

    edge.clock.advance(Duration::from_secs(121));
    assert_eq!(
        kv.get(&ns, "ttl").await.0,
        404,
        "served after its expiration"
    );
    assert_eq!(kv.get(&ns, "abs").await.0, 200);
    let (_, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/keys"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);
    edge.clock.advance(Duration::from_secs(200));
    assert_eq!(kv.get(&ns, "abs").await.0, 404);
    let metadata = kv
        .request(Method::GET, &format!("/namespaces/{ns}/metadata/abs"))
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 404);

    // The purge removes both from the store itself.
    let purged = edge
        .running
        .as_ref()
        .unwrap()
        .edge()
        .purge_expired()
        .await
        .unwrap();
    assert_eq!(purged, 2);
}

#[tokio::test]
async fn listing_pages_through_2500_keys_with_cursors() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("many").await;
    let mut items = Vec::new();
    for i in 0..2500 {
        items.push(json!({"key": format!("key-{i:05}"), "value": format!("{i}")}));
    }
    items.push(json!({"key": "other-prefix", "value": "x"}));
    let (status, body) = json_of(
        kv.request(Method::PUT, &format!("/namespaces/{ns}/bulk"))
            .json(&items)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["successful_key_count"], 2501);

    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let mut path = format!("/namespaces/{ns}/keys?prefix=key-");
        if !cursor.is_empty() {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, body) = json_of(kv.request(Method::GET, &path).send().await.unwrap()).await;
        assert_eq!(status, 200);
        pages += 1;
        let names = body["result"].as_array().unwrap();
        assert_eq!(body["result_info"]["count"], names.len());
        seen.extend(
            names
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_string()),
        );
        // A write and a delete between pages do not disturb the cursor.
        if pages == 1 {
            assert_eq!(kv.delete(&ns, "key-00500").await, 200, "behind the cursor");
            assert_eq!(
                kv.delete(&ns, "key-01200").await,
                200,
                "ahead of the cursor"
            );
            assert_eq!(kv.put(&ns, "key-00000a", "behind").await, 200);
            assert_eq!(kv.put(&ns, "key-01500a", "ahead").await, 200);
        }
        cursor = body["result_info"]["cursor"].as_str().unwrap().to_string();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3, "1000 per page by default");
    let mut expected: Vec<String> = (0..2500)
        .filter(|i| *i != 1200)
        .map(|i| format!("key-{i:05}"))
        .collect();
    expected.push("key-01500a".into());
    expected.sort();
    assert_eq!(seen, expected);

    // Small pages via limit.
    let (_, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/keys?limit=10"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["result"].as_array().unwrap().len(), 10);
    assert_ne!(body["result_info"]["cursor"], "");
    // A foreign cursor is a 400.
    let response = kv
        .request(
            Method::GET,
            &format!("/namespaces/{ns}/keys?cursor=garbage"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn bulk_write_get_and_delete() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("bulk").await;
    let now = edge.clock.now_s();
    let items = json!([
        {"key": "text", "value": "hello"},
        {"key": "bin", "value": "AAEC/w==", "base64": true},
        {"key": "json", "value": "{\"a\":1}", "metadata": {"m": true}},
        {"key": "ttl", "value": "x", "expiration_ttl": 600},
        {"key": "abs", "value": "y", "expiration": now + 600},
    ]);
    let (status, body) = json_of(
        kv.request(Method::PUT, &format!("/namespaces/{ns}/bulk"))
            .json(&items)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["successful_key_count"], 5);
    assert_eq!(kv.get(&ns, "bin").await, (200, vec![0, 1, 2, 255]));

    let get = |body: Value| {
        kv.request(Method::POST, &format!("/namespaces/{ns}/bulk/get"))
            .json(&body)
            .send()
    };
    let (status, body) = json_of(
        get(json!({"keys": ["text", "json", "missing"]}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["result"]["values"],
        json!({"text": "hello", "json": "{\"a\":1}", "missing": null})
    );
    // A key asked twice is answered once, and the answer stays valid JSON.
    let (status, body) = json_of(
        get(json!({"keys": ["text", "we\"ird", "text"]}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["result"]["values"],
        json!({"text": "hello", "we\"ird": null})
    );
    // Keys and values that need escaping, and a value that is not UTF-8 (as text,
    // each invalid byte is U+FFFD).
    assert_eq!(kv.put(&ns, "we\"ird\\é", "line\nquote\"\u{1}").await, 200);
    let (status, body) = json_of(get(json!({"keys": ["we\"ird\\é", "bin"]})).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["result"]["values"],
        json!({"we\"ird\\é": "line\nquote\"\u{1}", "bin": "\u{0}\u{1}\u{2}\u{fffd}"})
    );
    // A body that is not UTF-8 is not JSON (RFC 8259 §8.1), wherever the bad byte.
    for raw in [
        &b"{\"keys\": [\"k\xff\"]}"[..],
        b"{\"keys\": [\"k\"], \"x\": \"\xff\"}",
    ] {
        let response = kv
            .request(Method::POST, &format!("/namespaces/{ns}/bulk/get"))
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains("utf-8"), "{body}");
    }
    let (_, body) = json_of(
        get(json!({"keys": ["json"], "type": "json", "withMetadata": true}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        body["result"]["values"]["json"],
        json!({"value": {"a": 1}, "metadata": {"m": true}})
    );
    let (status, _) = json_of(
        get(json!({"keys": ["text"], "type": "json"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "text is not JSON");
    let (status, body) = json_of(
        get(json!({"keys": (0..101).map(|i| i.to_string()).collect::<Vec<_>>()}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(&body).contains("101"));

    let (status, body) = json_of(
        kv.request(Method::POST, &format!("/namespaces/{ns}/bulk/delete"))
            .json(&json!(["text", "bin", "never-there"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["successful_key_count"], 3);
    assert_eq!(kv.get(&ns, "text").await.0, 404);
    assert_eq!(kv.get(&ns, "json").await.0, 200);
    // The older DELETE form of bulk delete.
    let response = kv
        .request(Method::DELETE, &format!("/namespaces/{ns}/bulk"))
        .json(&json!(["json"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(kv.get(&ns, "json").await.0, 404);

    // One bad item refuses the whole batch, naming the item; nothing is written.
    let items = json!([
        {"key": "good", "value": "v"},
        {"key": "bad", "value": "not base64!", "base64": true},
    ]);
    let (status, body) = json_of(
        kv.request(Method::PUT, &format!("/namespaces/{ns}/bulk"))
            .json(&items)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(&body).contains("item 1"), "{body}");
    assert_eq!(kv.get(&ns, "good").await.0, 404);
}

#[tokio::test]
async fn every_limit_is_a_4xx_that_writes_nothing() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("limits").await;
    kv.put(&ns, "k", "original").await;

    // Key > 512 bytes.
    let long_key = "k".repeat(513);
    assert_eq!(kv.put(&ns, &long_key, "v").await, 414);
    assert_eq!(kv.put(&ns, &"k".repeat(512), "v").await, 200);
    assert_eq!(kv.get(&ns, &long_key).await.0, 414);

    // Value > 25 MiB, raw and multipart.
    let big = vec![b'x'; 25 * 1024 * 1024 + 1];
    assert_eq!(kv.put(&ns, "k", big.clone()).await, 413);
    let form = reqwest::multipart::Form::new().part("value", reqwest::multipart::Part::bytes(big));
    let response = kv
        .request(Method::PUT, &Client::value_path(&ns, "k"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let exact = vec![b'y'; 25 * 1024 * 1024];
    assert_eq!(kv.put(&ns, "exact", exact.clone()).await, 200);
    assert_eq!(kv.get(&ns, "exact").await.1.len(), exact.len());
    // A declared length far past the limit is refused before the body is read.
    assert_eq!(
        declared_length_status(&edge, &ns, 40 * 1024 * 1024).await,
        413
    );

    // Metadata > 1024 bytes.
    let form = reqwest::multipart::Form::new()
        .text("value", "v")
        .text("metadata", json!({"pad": "m".repeat(1100)}).to_string());
    let response = kv
        .request(Method::PUT, &Client::value_path(&ns, "k"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // > 10,000 bulk items, and a bulk item with too much metadata.
    let items: Vec<Value> = (0..10_001)
        .map(|i| json!({"key": format!("b{i}"), "value": "v"}))
        .collect();
    let (status, body) = json_of(
        kv.request(Method::PUT, &format!("/namespaces/{ns}/bulk"))
            .json(&items)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(error_message(&body).contains("10001"));
    let items = json!([{"key": "b0", "value": "v", "metadata": {"pad": "m".repeat(1100)}}]);
    let response = kv
        .request(Method::PUT, &format!("/namespaces/{ns}/bulk"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let keys: Vec<String> = (0..10_001).map(|i| format!("b{i}")).collect();
    let response = kv
        .request(Method::POST, &format!("/namespaces/{ns}/bulk/delete"))
        .json(&keys)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let items = json!([{"key": "x".repeat(513), "value": "v"}]);
    let response = kv
        .request(Method::PUT, &format!("/namespaces/{ns}/bulk"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // limit > 1000 (and < 1).
    for limit in ["1001", "0", "-1", "many"] {
        let response = kv
            .request(Method::GET, &format!("/namespaces/{ns}/keys?limit={limit}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "limit={limit}");
    }

    // Nothing of the refused writes is visible.
    assert_eq!(kv.get(&ns, "k").await, (200, b"original".to_vec()));
    assert_eq!(kv.get(&ns, "b0").await.0, 404);
    let (_, body) = json_of(
        kv.request(Method::GET, &format!("/namespaces/{ns}/keys"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["result"].as_array().unwrap().len(), 3, "{body}");
}

#[tokio::test]
async fn tokens_are_checked() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("auth").await;
    kv.put(&ns, "k", "v").await;
    let path = Client::value_path(&ns, "k");
    let http = reqwest::Client::new();
    let url = format!("{}{path}", kv.base);

    // Missing and malformed tokens: 401 with the v4 envelope.
    for auth in [
        None,
        Some("Bearer"),
        Some("Basic abc"),
        Some("Bearer wrong-token"),
    ] {
        let mut request = http.get(&url);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let (status, body) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(body["errors"][0]["code"], 10000);
    }
    // The scheme is case-insensitive.
    let response = http
        .get(&url)
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A token of another account: 403, on its namespaces and on the listing.
    let other = Client::new(&kv.base, OTHER_ACCOUNT_TOKEN);
    assert_eq!(other.get(&ns, "k").await.0, 403);
    let response = other
        .request(Method::GET, "/namespaces")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // ...and its own account cannot see this account's namespace.
    let foreign = kv
        .base
        .replace(&format!("/accounts/{ACCOUNT}/"), "/accounts/other-acct/");
    let other_own = Client::new(&foreign, OTHER_ACCOUNT_TOKEN);
    assert_eq!(other_own.get(&ns, "k").await.0, 404);

    // Read-only: reads pass, writes are 403 and write nothing.
    let reader = Client::new(&kv.base, READ_ONLY_TOKEN);
    assert_eq!(reader.get(&ns, "k").await, (200, b"v".to_vec()));
    assert_eq!(reader.put(&ns, "k", "new").await, 403);
    assert_eq!(reader.delete(&ns, "k").await, 403);
    let response = reader
        .request(Method::POST, &format!("/namespaces/{ns}/bulk/get"))
        .json(&json!({"keys": ["k"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "bulk get is a read");
    assert_eq!(kv.get(&ns, "k").await, (200, b"v".to_vec()));
}

/// One keep-alive connection, one token after another: each request is judged by
/// its own token, whatever the connection sent before (the edge remembers the
/// hash of a connection's last token).
#[tokio::test]
async fn each_request_on_a_connection_is_judged_by_its_own_token() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("memo").await;
    kv.put(&ns, "k", "v").await;
    assert_eq!(kv.get(&ns, "k").await, (200, b"v".to_vec()));
    let mut connection = KeepAlive::open(&edge).await;
    let path = format!("/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/k");
    let cases = [
        (Some(TOKEN), 200),
        (Some("wrong-token"), 401),
        (Some(TOKEN), 200),
        (Some(OTHER_ACCOUNT_TOKEN), 403),
        (None, 401),
        (Some(READ_ONLY_TOKEN), 200),
        (Some(TOKEN), 200),
        (Some(""), 401),
        (Some(TOKEN), 200),
    ];
    for (token, expected) in cases {
        let (status, body) = connection.get(&path, token).await;
        assert_eq!(
            status,
            expected,
            "token {token:?}: {}",
            String::from_utf8_lossy(&body)
        );
        if expected == 200 {
            assert_eq!(body, b"v");
        }
    }
}

/// What a keep-alive connection learnt about its token and namespace lasts only
/// until either changes: a revoked token and a deleted namespace take effect on
/// the very next request of a connection that was just served from them.
#[tokio::test]
async fn a_revoked_token_or_deleted_namespace_is_refused_on_a_connection_it_was_served_on() {
    use edgekv_edge::tokens::{self, Grant};
    const CONTROL_TOKEN: &str = "0000000000000000000000000000000c";
    let edge = TestEdge::start().await;
    let kv = edge.client();
    // A full namespace: the edge answers for absent keys too, so a stale scope
    // would answer "key not found" where the namespace is gone.
    let ns = kv.create_full_namespace("memo").await;
    let other = kv.create_namespace("other").await;
    kv.put(&ns, "k", "v").await;
    kv.put(&other, "k", "w").await;
    edge.edge().set_control_tokens(
        2,
        vec![(tokens::hash(CONTROL_TOKEN), Grant::full("ctl", ACCOUNT))],
    );
    let mut connection = KeepAlive::open(&edge).await;
    let path =
        |ns: &str| format!("/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/k");
    for _ in 0..3 {
        assert_eq!(
            connection.get(&path(&ns), Some(CONTROL_TOKEN)).await,
            (200, b"v".to_vec())
        );
    }
    // Control's next table leaves the token out.
    edge.edge().set_control_tokens(3, vec![]);
    assert_eq!(connection.get(&path(&ns), Some(CONTROL_TOKEN)).await.0, 401);
    // A bootstrap token still reads; then its namespace is deleted.
    assert_eq!(
        connection.get(&path(&ns), Some(TOKEN)).await,
        (200, b"v".to_vec())
    );
    assert_eq!(
        connection.get(&path(&ns), Some(TOKEN)).await,
        (200, b"v".to_vec())
    );
    let deleted = kv
        .request(Method::DELETE, &format!("/namespaces/{ns}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, body) = connection.get(&path(&ns), Some(TOKEN)).await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["errors"][0]["code"], 10013, "{body}");
    // The other namespace is unaffected.
    assert_eq!(
        connection.get(&path(&other), Some(TOKEN)).await,
        (200, b"w".to_vec())
    );
}

/// One raw HTTP/1.1 keep-alive connection to an edge's KV API.
struct KeepAlive {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl KeepAlive {
    async fn open(edge: &TestEdge) -> KeepAlive {
        let addr = edge.running.as_ref().unwrap().http_addr;
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        KeepAlive {
            stream: tokio::io::BufReader::new(stream),
        }
    }

    /// A GET of `path` with `token` (if any); the status and body.
    async fn get(&mut self, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
        let (status, _, body) = self.exchange(path, token, "").await;
        (status, body)
    }

    /// A GET of `path` with `token` (if any) and `extra` header lines; the status,
    /// the headers (names in lower case) and the body.
    async fn exchange(
        &mut self,
        path: &str,
        token: Option<&str>,
        extra: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let head = format!("GET {path} HTTP/1.1\r\nhost: edge\r\n{auth}{extra}\r\n");
        self.stream
            .get_mut()
            .write_all(head.as_bytes())
            .await
            .unwrap();
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).await.unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let length = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map_or(0, |(_, value)| value.parse().unwrap());
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        (status, headers, body)
    }
}

/// The hot path checks a key only when the edge does not hold it (a held record's
/// key was checked when written): a bad key it does not hold is left to the full
/// handler, a 4xx, never answered 404 from a full namespace.
#[tokio::test]
async fn the_hot_path_leaves_a_bad_key_it_does_not_hold_to_the_full_handler() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_full_namespace("bad-keys").await;
    kv.put(&ns, "k", "v").await;
    let memo = edgekv_edge::tokens::TokenMemo::default();
    let hot = |key: &str| {
        let mut request = http::Request::get(format!(
            "/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/{key}"
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
        edgekv_edge::http::try_hot(edge.edge(), &mut request, &memo).map(|r| r.status())
    };
    // Once the namespace is synced, the hot path answers its absent keys itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hot("absent") != Some(http::StatusCode::NOT_FOUND) {
        assert!(std::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hot("k"), Some(http::StatusCode::OK));
    let long_key = "k".repeat(513);
    assert_eq!(hot(&long_key), None);
    assert_eq!(hot(""), None);
    assert_eq!(kv.get(&ns, &long_key).await.0, 414);
}

/// A hot read answers in the request's own header map, cleared: no header of the
/// request (its token above all) comes back, on any request of a connection,
/// whatever was answered before on it.
#[tokio::test]
async fn a_hot_answer_carries_its_own_headers_and_none_of_the_request() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("headers").await;
    kv.put(&ns, "k", "v").await;
    let path = |key: &str| {
        format!("/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/{key}")
    };
    let mut version: Option<String> = None;
    let mut connection = KeepAlive::open(&edge).await;
    let extra = "x-request-id: r-123\r\naccept: */*\r\nuser-agent: probe\r\n";
    // Hot answers, then a new route table: the next answer on the same connection
    // carries its version.
    for round in 0..2 {
        for _ in 0..3 {
            let (got, headers, _) = connection.exchange(&path("k"), Some(TOKEN), "").await;
            assert_eq!(got, 200);
            let carried = headers
                .iter()
                .find(|(name, _)| name == "edgekv-route-version")
                .map(|(_, value)| value.clone());
            assert_eq!(carried, version, "round {round}: {headers:?}");
        }
        let routes = edge.edge().routes();
        edge.edge()
            .set_routes(std::sync::Arc::new(edgekv_edge::routes::Routes {
                table: None,
                known_good: routes.known_good.clone(),
                builds: routes.builds.clone(),
                ejected: routes.builds.iter().map(|_| Default::default()).collect(),
                version_header: Some(http::HeaderValue::from(41 + round)),
            }));
        version = Some((41 + round).to_string());
    }
    // Hot answers, then a 404 from the build, a full-handler answer (a query) and
    // hot ones again.
    for (key, query, status, cache) in [
        ("k", "", 200, "HIT"),
        ("k", "", 200, "HIT"),
        ("absent", "", 404, "MISS"),
        ("k", "?cache_ttl=30", 200, "HIT"),
        ("k", "", 200, "HIT"),
        ("k", "", 200, "HIT"),
    ] {
        let (got, headers, body) = connection
            .exchange(&format!("{}{query}", path(key)), Some(TOKEN), extra)
            .await;
        assert_eq!(got, status, "{key}{query}: {headers:?}");
        let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        for name in [
            "authorization",
            "host",
            "x-request-id",
            "accept",
            "user-agent",
        ] {
            assert!(!names.contains(&name), "{name} echoed in {headers:?}");
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(header("edgekv-cache"), Some(cache), "{headers:?}");
        if status == 200 {
            assert_eq!(body, b"v");
            assert_eq!(header("content-type"), Some("application/octet-stream"));
            assert_eq!(header("edgekv-route-version"), version.as_deref());
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "a header twice: {headers:?}");
        }
    }
}

/// Shutting down: a request the edge has begun is finished and answered, an idle
/// keep-alive connection is closed at once, and the edge stops once both are done.
#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let mut edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("drain").await;
    let addr = edge.running.as_ref().unwrap().http_addr;
    let path = format!("/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/k");
    let head = |method: &str, extra: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {TOKEN}\r\n{extra}\r\n"
        )
    };
    // An idle keep-alive connection: one request answered, then nothing.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(head("GET", "").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // A PUT whose body has not arrived: begun, not finished.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(head("PUT", "content-length: 5\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = tokio::spawn(async move {
        edge.stop().await;
        edge
    });
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("the idle connection was not closed")
        .unwrap();
    assert_eq!(n, 0, "the idle connection was answered instead of closed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stopping.is_finished(),
        "the edge stopped with a request in flight"
    );
    busy.write_all(b"hello").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut answer))
        .await
        .expect("the request in flight was not answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let edge = tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the edge did not stop once its last request was answered")
        .unwrap();
    let edge = edge.restart().await;
    assert_eq!(edge.client().get(&ns, "k").await, (200, b"hello".to_vec()));
}

#[tokio::test]
async fn writes_survive_a_restart() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("durable").await;
    for i in 0..50 {
        assert_eq!(kv.put(&ns, &format!("k{i}"), format!("v{i}")).await, 200);
    }
    kv.delete(&ns, "k7").await;
    let edge = edge.restart().await;
    let kv = edge.client();
    assert_eq!(kv.get(&ns, "k49").await, (200, b"v49".to_vec()));
    assert_eq!(kv.get(&ns, "k7").await.0, 404);
    let (_, body) = json_of(kv.request(Method::GET, "/namespaces").send().await.unwrap()).await;
    assert_eq!(body["result"][0]["title"], "durable");
}

#[tokio::test]
async fn http2_cleartext_and_keep_alive_are_served() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("h2").await;
    kv.put(&ns, "k", "v").await;
    let url = format!("{}{}", kv.base, Client::value_path(&ns, "k"));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = h2.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["edgekv-cache"], "HIT");
        assert_eq!(response.bytes().await.unwrap(), "v");
    }
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let response = h1.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("routes").await;
    let response = kv
        .request(Method::GET, "/nothing-here")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = kv
        .request(Method::PATCH, &format!("/namespaces/{ns}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, PUT, DELETE");
    let response = kv
        .request(Method::GET, &format!("/namespaces/{ns}/bulk"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "PUT, DELETE");
    let response = kv
        .request(
            Method::GET,
            &format!("/namespaces/{}/values/k", "f".repeat(32)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = kv
        .request(Method::GET, "/namespaces/not-an-id/values/k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// `docs/openapi.yaml`, as JSON, to anyone: no token needed.
#[tokio::test]
async fn the_openapi_document_is_served_without_a_token() {
    let edge = TestEdge::start().await;
    let origin = edge.base.split("/client/v4/").next().unwrap();
    let url = format!("{origin}/client/v4/openapi.json");
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(
        document["paths"]["/client/v4/accounts/{account_id}/storage/kv/namespaces"].is_object(),
        "{document}"
    );
    let response = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
}

/// wrangler asks `GET /client/v4/user/tokens/verify` after a 401 to explain it:
/// answered as Cloudflare does, 200 with the token's id for a valid token, 401
/// otherwise (before, a 404 made wrangler's explanation itself fail).
#[tokio::test]
async fn a_token_is_verified_as_cloudflare_verifies_it() {
    let edge = TestEdge::start().await;
    let origin = edge.base.split("/client/v4/").next().unwrap();
    let url = format!("{origin}/client/v4/user/tokens/verify");
    let client = reqwest::Client::new();
    let response = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["result"]["status"], "active", "{body}");
    let id = body["result"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(!TOKEN.contains(id), "the id is not the secret");
    for bearer in [Some("0000000000000000ffffffffffffffff"), None] {
        let mut request = client.get(&url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{bearer:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["success"], false);
    }
}

#[tokio::test]
async fn admin_endpoints() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("admin").await;
    kv.put(&ns, "k", "v").await;
    kv.get(&ns, "k").await;
    kv.get(&ns, "missing").await;
    let get = |path: &str| reqwest::get(format!("{}{path}", edge.admin));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"edgekv_http_requests_total{route="value",status="200"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"edgekv_http_requests_total{route="value",status="404"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("edgekv_http_request_duration_seconds_bucket{route=\"value\",le=\"+Inf\"} 3")
    );
    assert!(metrics.contains("edgekv_hot_hits_total 1"), "{metrics}");
    assert!(metrics.contains("edgekv_hot_bytes "));
    let status: Value = get("/status").await.unwrap().json().await.unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(get("/nope").await.unwrap().status(), 404);
}

#[tokio::test]
async fn percent_encoding_in_keys_round_trips_through_the_listing() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("enc").await;
    let key = "a%2Fb"; // a literal percent sign followed by 2F
    assert_eq!(kv.put(&ns, key, "literal").await, 200);
    assert_eq!(kv.put(&ns, "a/b", "slash").await, 200);
    assert_eq!(kv.get(&ns, key).await, (200, b"literal".to_vec()));
    assert_eq!(kv.get(&ns, "a/b").await, (200, b"slash".to_vec()));
    let (_, body) = json_of(
        kv.request(
            Method::GET,
            &format!("/namespaces/{ns}/keys?prefix={}", encode("a%")),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(body["result"][0]["name"], key);
}

/// Sends only the head of a PUT that declares `length` bytes, and returns the status
/// the edge answers without waiting for the body.
async fn declared_length_status(edge: &TestEdge, ns: &str, length: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = edge.running.as_ref().unwrap().http_addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/k HTTP/1.1\r\n\
         host: edge\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the edge waited for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}
