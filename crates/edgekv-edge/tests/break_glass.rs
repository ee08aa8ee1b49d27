//! Break-glass orders on the edge, across restarts and against the pin in force: an
//! accepted order stays spent when the edge is reopened over its data dir (a
//! captured pin cannot put its build back), and an unpin lifts only the pin it
//! names (one made for an older pin cannot lift a newer one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgekv_breakglass::{Action, Order, SignedOrder, SigningKey};
use edgekv_edge::{Edge, EdgeConfig};
use edgekv_kv::{Clock, ManualClock};

use edgekv_test_support::{CREDENTIAL, ENVIRONMENT, token_table};

/// An edge's data dir holding a route table of builds v1 (known-good) and v2, the
/// break-glass key pair, and the clock the edge reads.
struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    public: PathBuf,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("glass.key"), dir.path().join("glass.pub"));
        edgekv_breakglass::generate_key_files(&private, &public).unwrap();
        // The table kept from control; the builds are never called here.
        let entry = |build: &str, weight_bp: u32| {
            serde_json::json!({
                "build_id": build,
                "environment": ENVIRONMENT,
                "tenant": ENVIRONMENT,
                "artifact_digest": "",
                "weight_bp": weight_bp,
                "endpoints": ["http://127.0.0.1:9"],
            })
        };
        let table = serde_json::json!({
            "version": 3,
            "environment": ENVIRONMENT,
            "tenant": ENVIRONMENT,
            "issued_at": 1,
            "known_good_build": "v1",
            "entries": [entry("v1", 10_000), entry("v2", 0)],
        });
        std::fs::write(
            edgekv_edge::routes::table_file(dir.path()),
            table.to_string(),
        )
        .unwrap();
        Fixture {
            key: SigningKey::load(&private).unwrap(),
            public,
            clock: Arc::new(ManualClock::new(1_700_000_000_000)),
            dir,
        }
    }

    /// Opens an edge over the fixture's data dir: a restart when one was open before
    /// (and has been dropped).
    fn open(&self) -> Arc<Edge> {
        let config = EdgeConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            data_dir: self.dir.path().to_path_buf(),
            control: "http://127.0.0.1:9".into(),
            environment: ENVIRONMENT.into(),
            tenant: ENVIRONMENT.into(),
            node_id: Some("edge-1".into()),
            break_glass_key: Some(self.public.clone()),
            ..EdgeConfig::default()
        };
        let edge = edgekv_edge::open(
            config,
            self.clock.clone() as Arc<dyn Clock>,
            token_table(),
            CREDENTIAL,
        )
        .unwrap();
        assert_eq!(edge.routes().version(), 3, "the kept table is loaded");
        edge
    }

    fn pin(&self, build: &str, ttl: Duration) -> SignedOrder {
        self.sign(Action::Pin, build, "", ttl)
    }

    fn unpin(&self, lifts: &str) -> SignedOrder {
        self.sign(Action::Unpin, "", lifts, Duration::from_secs(300))
    }

    fn sign(&self, action: Action, build: &str, lifts: &str, ttl: Duration) -> SignedOrder {
        let now = self.clock.now_ms();
        self.key.sign(&Order {
            action,
            environment: ENVIRONMENT.into(),
            node: "all".into(),
            build: build.into(),
            issued_ms: now,
            not_after_ms: now + ttl.as_millis() as u64,
            nonce: edgekv_breakglass::nonce(),
            lifts: lifts.into(),
        })
    }
}

/// The nonce of a signed order.
fn nonce_of(signed: &SignedOrder) -> String {
    serde_json::from_str::<Order>(&signed.order).unwrap().nonce
}

/// The lines of the nonces the edge keeps in its store.
fn kept_nonces(edge: &Edge) -> Vec<String> {
    let raw = edge
        .store()
        .meta("break_glass_nonces")
        .unwrap()
        .unwrap_or_default();
    String::from_utf8(raw)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn an_accepted_pin_replayed_after_the_edge_reopens_is_refused_as_a_replay() {
    let fixture = Fixture::new();
    let edge = fixture.open();
    let first = fixture.pin("v2", Duration::from_secs(600));
    let applied = edge.break_glass(&first).unwrap();
    assert_eq!((applied.action, applied.build.as_str()), ("pinned", "v2"));
    assert_eq!(applied.pin, nonce_of(&first));
    let second = fixture.pin("v1", Duration::from_secs(1200));
    edge.break_glass(&second).unwrap();
    assert_eq!(edge.pin().unwrap().build, "v1");
    assert_eq!(kept_nonces(&edge).len(), 2, "{:?}", kept_nonces(&edge));
    drop(edge);

    // Reopened over the same data dir. Replayed, the first (captured) pin would put
    // v2 back; it is refused as a replay, and so is the second.
    let edge = fixture.open();
    assert_eq!(edge.pin().unwrap().build, "v1");
    for replayed in [&first, &second] {
        let refused = edge.break_glass(replayed).unwrap_err();
        assert_eq!(refused.status().as_u16(), 403, "{refused}");
        assert!(refused.to_string().contains("already used"), "{refused}");
    }
    assert_eq!(
        edge.pin().unwrap().build,
        "v1",
        "refused replays change nothing"
    );

    // What is kept stays bounded: once the first order has expired, the next write
    // leaves its nonce out.
    fixture.clock.advance(Duration::from_secs(601));
    edge.break_glass(&fixture.pin("v1", Duration::from_secs(60)))
        .unwrap();
    let kept = kept_nonces(&edge);
    assert_eq!(kept.len(), 2, "{kept:?}");
    let first_nonce = nonce_of(&first);
    assert!(
        kept.iter().all(|line| !line.starts_with(&first_nonce)),
        "{kept:?}"
    );
    assert!(
        kept.iter().any(|line| line.starts_with(&nonce_of(&second))),
        "{kept:?}"
    );
}

#[tokio::test]
async fn an_unpin_naming_an_older_pin_is_refused_and_the_newer_pin_stays() {
    let fixture = Fixture::new();
    let edge = fixture.open();
    // No pin in force: an unpin says so and changes nothing.
    let stray = edge
        .break_glass(&fixture.unpin(&edgekv_breakglass::nonce()))
        .unwrap_err();
    assert_eq!(stray.status().as_u16(), 400, "{stray}");
    assert!(stray.to_string().contains("no pin is in force"), "{stray}");
    assert!(edge.pin().is_none());

    let older = edge
        .break_glass(&fixture.pin("v2", Duration::from_secs(600)))
        .unwrap()
        .pin;
    let newer = edge
        .break_glass(&fixture.pin("v1", Duration::from_secs(600)))
        .unwrap()
        .pin;
    assert_ne!(older, newer);

    // An unpin made for the older pin cannot lift the newer one; the refusal names
    // both pins.
    let refused = edge.break_glass(&fixture.unpin(&older)).unwrap_err();
    assert_eq!(refused.status().as_u16(), 400, "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains(&older) && message.contains(&newer),
        "{message}"
    );
    let pin = edge.pin().unwrap();
    assert_eq!(
        (pin.build.as_str(), pin.nonce.as_str()),
        ("v1", newer.as_str())
    );

    // The same across a restart; an unpin naming the pin in force lifts it, and the
    // lift is kept.
    drop(edge);
    let edge = fixture.open();
    assert!(edge.break_glass(&fixture.unpin(&older)).is_err());
    assert_eq!(edge.pin().unwrap().nonce, newer);
    let lifted = edge.break_glass(&fixture.unpin(&newer)).unwrap();
    assert_eq!(
        (lifted.action, lifted.pin.as_str()),
        ("unpinned", newer.as_str())
    );
    assert!(edge.pin().is_none());
    drop(edge);
    assert!(
        fixture.open().pin().is_none(),
        "the lift survives a restart"
    );
}
