use super::*;
use crate::{SigningKey, nonce};

const NOW: u64 = 1_700_000_000_000;
const MAX_TTL: u64 = 3_600_000;

fn key() -> SigningKey {
    SigningKey(ed25519_dalek::SigningKey::from_bytes(&rand::random()))
}

fn order() -> Order {
    Order {
        action: Action::Pin,
        environment: "production".into(),
        node: "edge-1".into(),
        build: "v41".into(),
        issued_ms: NOW - 1_000,
        not_after_ms: NOW + 600_000,
        nonce: nonce(),
        lifts: String::new(),
    }
}

fn verifier(key: &SigningKey) -> Verifier {
    Verifier::new(key.verifying_key(), MAX_TTL)
}

fn check(verifier: &Verifier, signed: &SignedOrder) -> Result<Order, Refusal> {
    verifier.verify(signed, NOW, "production", "edge-1")
}

#[test]
fn round_trip_sign_verify() {
    let key = key();
    let order = order();
    let signed = key.sign(&order);
    assert_eq!(check(&verifier(&key), &signed), Ok(order));
}

#[test]
fn signed_order_survives_its_own_json() {
    let key = key();
    let order = order();
    let wire = serde_json::to_string(&key.sign(&order)).unwrap();
    let signed: SignedOrder = serde_json::from_str(&wire).unwrap();
    assert_eq!(check(&verifier(&key), &signed), Ok(order));
}

#[test]
fn tampered_order_text_is_refused() {
    let key = key();
    let mut o = order();
    o.environment = "staging".into();
    let mut signed = key.sign(&o);
    // An attacker retargets a staging order at production; otherwise it is valid.
    signed.order = signed.order.replace("\"staging\"", "\"production\"");
    assert!(signed.order.contains("\"production\""));
    assert_eq!(check(&verifier(&key), &signed), Err(Refusal::BadSignature));
}

#[test]
fn signature_from_another_key_is_refused() {
    let ours = key();
    let theirs = key();
    let signed = theirs.sign(&order());
    assert_eq!(check(&verifier(&ours), &signed), Err(Refusal::BadSignature));
}

#[test]
fn malformed_signature_is_refused() {
    let key = key();
    let mut signed = key.sign(&order());
    signed.signature = "zz".into();
    assert!(matches!(
        check(&verifier(&key), &signed),
        Err(Refusal::MalformedSignature(_))
    ));
    signed.signature = "abcd".into();
    assert!(matches!(
        check(&verifier(&key), &signed),
        Err(Refusal::MalformedSignature(_))
    ));
}

#[test]
fn signed_text_that_is_not_an_order_is_refused() {
    let key = key();
    let v = verifier(&key);
    let signed = key.sign_text("not json".into());
    assert!(matches!(check(&v, &signed), Err(Refusal::NotJson(_))));

    // A field this edge does not understand may be a restriction: refuse it.
    let mut value = serde_json::to_value(order()).unwrap();
    value["only_if_build"] = "v40".into();
    let signed = key.sign_text(value.to_string());
    assert!(matches!(check(&v, &signed), Err(Refusal::NotJson(e)) if e.contains("only_if_build")));
}

#[test]
fn wrong_environment_is_refused() {
    let key = key();
    let signed = key.sign(&order());
    let refusal = verifier(&key)
        .verify(&signed, NOW, "staging", "edge-1")
        .unwrap_err();
    assert_eq!(
        refusal,
        Refusal::WrongEnvironment {
            order: "production".into(),
            node: "staging".into()
        }
    );
    assert_eq!(
        refusal.to_string(),
        "the order is for environment \"production\"; this node is \"staging\""
    );
}

#[test]
fn wrong_node_is_refused_but_all_is_accepted() {
    let key = key();
    let v = verifier(&key);
    let for_edge_1 = key.sign(&order());
    assert_eq!(
        v.verify(&for_edge_1, NOW, "production", "edge-2"),
        Err(Refusal::WrongNode {
            order: "edge-1".into(),
            node: "edge-2".into()
        })
    );
    let for_all = key.sign(&Order {
        node: "all".into(),
        ..order()
    });
    assert!(v.verify(&for_all, NOW, "production", "edge-2").is_ok());
    // The refusal above did not spend edge-1's order.
    assert!(v.verify(&for_edge_1, NOW, "production", "edge-1").is_ok());
}

#[test]
fn expired_order_is_refused() {
    let key = key();
    let v = verifier(&key);
    let signed = key.sign(&Order {
        not_after_ms: NOW,
        ..order()
    });
    assert_eq!(
        check(&v, &signed),
        Err(Refusal::Expired {
            not_after_ms: NOW,
            now_ms: NOW
        })
    );
    let signed = key.sign(&Order {
        not_after_ms: NOW + 1,
        ..order()
    });
    assert!(check(&v, &signed).is_ok());
}

#[test]
fn too_long_ttl_is_refused() {
    let key = key();
    let v = verifier(&key);
    let signed = key.sign(&Order {
        not_after_ms: NOW + MAX_TTL + 1,
        ..order()
    });
    assert_eq!(
        check(&v, &signed),
        Err(Refusal::TooLong {
            asked_ms: MAX_TTL + 1,
            max_ms: MAX_TTL
        })
    );
    let signed = key.sign(&Order {
        not_after_ms: NOW + MAX_TTL,
        ..order()
    });
    assert!(check(&v, &signed).is_ok());
}

#[test]
fn order_issued_in_the_future_is_refused_beyond_skew() {
    let key = key();
    let v = verifier(&key);
    let signed = key.sign(&Order {
        issued_ms: NOW + CLOCK_SKEW_MS + 1,
        ..order()
    });
    assert!(matches!(
        check(&v, &signed),
        Err(Refusal::IssuedInFuture { .. })
    ));
    let signed = key.sign(&Order {
        issued_ms: NOW + CLOCK_SKEW_MS,
        ..order()
    });
    assert!(check(&v, &signed).is_ok());
}

#[test]
fn pin_without_build_is_refused_but_unpin_without_build_is_accepted() {
    let key = key();
    let v = verifier(&key);
    let pin = key.sign(&Order {
        build: String::new(),
        ..order()
    });
    assert_eq!(check(&v, &pin), Err(Refusal::PinWithoutBuild));
    let unpin = key.sign(&Order {
        action: Action::Unpin,
        build: String::new(),
        lifts: nonce(),
        ..order()
    });
    assert!(check(&v, &unpin).is_ok());
}

#[test]
fn malformed_nonce_is_refused() {
    let key = key();
    let v = verifier(&key);
    for bad in ["", "abc", &"g".repeat(32), &"a".repeat(33)] {
        let signed = key.sign(&Order {
            nonce: bad.to_owned(),
            ..order()
        });
        assert_eq!(
            check(&v, &signed),
            Err(Refusal::MalformedNonce(bad.to_owned())),
            "{bad:?}"
        );
    }
}

#[test]
fn replayed_nonce_is_refused_but_a_different_nonce_is_accepted() {
    let key = key();
    let v = verifier(&key);
    let first = order();
    let signed = key.sign(&first);
    assert!(check(&v, &signed).is_ok());
    assert_eq!(check(&v, &signed), Err(Refusal::Replayed));
    // Even a different order carrying the same nonce is a replay.
    let same_nonce = key.sign(&Order {
        build: "v42".into(),
        ..first.clone()
    });
    assert_eq!(check(&v, &same_nonce), Err(Refusal::Replayed));
    let fresh = key.sign(&Order {
        nonce: nonce(),
        ..first
    });
    assert!(check(&v, &fresh).is_ok());
}

#[test]
fn refused_order_does_not_spend_its_nonce() {
    let key = key();
    let v = verifier(&key);
    let signed = key.sign(&order());
    assert!(v.verify(&signed, NOW, "staging", "edge-1").is_err());
    assert_eq!(v.remembered_nonces(), 0);
    assert!(check(&v, &signed).is_ok());
}

#[test]
fn nonces_are_forgotten_once_their_orders_expire() {
    let key = key();
    let v = verifier(&key);
    let short = key.sign(&Order {
        not_after_ms: NOW + 10,
        ..order()
    });
    let long = key.sign(&Order {
        not_after_ms: NOW + 1_000,
        ..order()
    });
    assert!(check(&v, &short).is_ok());
    assert!(check(&v, &long).is_ok());
    assert_eq!(v.remembered_nonces(), 2);
    // Past the short order's expiry, the next accepted order prunes its nonce and
    // keeps the long one's.
    let later = key.sign(&order());
    assert!(v.verify(&later, NOW + 10, "production", "edge-1").is_ok());
    assert_eq!(v.remembered_nonces(), 2);
    assert_eq!(
        v.verify(&long, NOW + 10, "production", "edge-1"),
        Err(Refusal::Replayed)
    );
    // The expired order is still refused, now because it has expired.
    assert!(matches!(
        v.verify(&short, NOW + 10, "production", "edge-1"),
        Err(Refusal::Expired { .. })
    ));
}

#[test]
fn an_unpin_names_the_pin_it_lifts_and_only_an_unpin_does() {
    let key = key();
    let v = verifier(&key);
    let unpin = |lifts: &str| Order {
        action: Action::Unpin,
        build: String::new(),
        lifts: lifts.to_owned(),
        ..order()
    };
    // An unpin that names no pin, or names it by something that is not a nonce.
    for bad in ["", "abc", &"g".repeat(32), &"a".repeat(33)] {
        assert_eq!(
            check(&v, &key.sign(&unpin(bad))),
            Err(Refusal::UnpinWithoutPin(bad.to_owned())),
            "{bad:?}"
        );
    }
    // A pin or a rollback that names a pin to lift.
    let pin = Order {
        lifts: nonce(),
        ..order()
    };
    assert_eq!(
        check(&v, &key.sign(&pin)),
        Err(Refusal::LiftsOutsideUnpin("pin"))
    );
    let rollback = Order {
        action: Action::Rollback,
        lifts: nonce(),
        ..order()
    };
    assert_eq!(
        check(&v, &key.sign(&rollback)),
        Err(Refusal::LiftsOutsideUnpin("rollback"))
    );
    assert_eq!(v.remembered_nonces(), 0, "refusals spend no nonce");

    let lifted = nonce();
    let good = unpin(&lifted);
    assert_eq!(check(&v, &key.sign(&good)), Ok(good.clone()));
    assert_eq!(good.lifts, lifted);
}

#[test]
fn lifts_is_signed_and_left_out_of_the_text_when_empty() {
    let key = key();
    let v = verifier(&key);
    // Pins and rollbacks read as before the field existed: no `lifts` in the text,
    // and a text without it reads as an empty `lifts`.
    let pin = key.sign(&order());
    assert!(!pin.order.contains("lifts"), "{}", pin.order);
    let old_text = serde_json::json!({
        "action": "pin",
        "environment": "production",
        "node": "edge-1",
        "build": "v41",
        "issued_ms": NOW - 1_000,
        "not_after_ms": NOW + 600_000,
        "nonce": nonce(),
    });
    let old = check(&v, &key.sign_text(old_text.to_string())).unwrap();
    assert_eq!(old.lifts, "");

    // An unpin carries it, under the signature: naming another pin breaks it.
    let lifted = nonce();
    let mut unpin = key.sign(&Order {
        action: Action::Unpin,
        build: String::new(),
        lifts: lifted.clone(),
        ..order()
    });
    assert!(
        unpin.order.contains(&format!("\"lifts\":\"{lifted}\"")),
        "{}",
        unpin.order
    );
    unpin.order = unpin.order.replace(&lifted, &nonce());
    assert_eq!(check(&v, &unpin), Err(Refusal::BadSignature));
}

#[test]
fn remembered_nonces_are_refused_as_replays_until_their_orders_expire() {
    let key = key();
    // An edge accepts an order, keeps what its verifier remembers, and restarts.
    let before = verifier(&key);
    let first = order();
    let signed = key.sign(&first);
    assert!(check(&before, &signed).is_ok());
    let kept = before.remembered(NOW);
    assert_eq!(kept, [(first.nonce.clone(), first.not_after_ms)]);

    let after = verifier(&key);
    assert_eq!(after.remembered_nonces(), 0);
    for (nonce, not_after_ms) in &kept {
        after.remember(nonce, *not_after_ms);
    }
    assert_eq!(check(&after, &signed), Err(Refusal::Replayed));
    // A fresh order is still accepted.
    assert!(check(&after, &key.sign(&order())).is_ok());
}

#[test]
fn remembering_keeps_the_later_expiry_and_remembered_drops_the_expired() {
    let key = key();
    let v = verifier(&key);
    let (a, b) = (nonce(), nonce());
    v.remember(&a, NOW + 100);
    v.remember(&a, NOW + 50);
    v.remember(&b, NOW + 10);
    let mut both = vec![(a.clone(), NOW + 100), (b.clone(), NOW + 10)];
    both.sort();
    assert_eq!(v.remembered(NOW), both);
    // At b's expiry only a is left, and b is forgotten for good.
    assert_eq!(v.remembered(NOW + 10), [(a.clone(), NOW + 100)]);
    assert_eq!(v.remembered_nonces(), 1);
    // A seeded nonce is refused like one the verifier accepted itself.
    let signed = key.sign(&Order {
        nonce: a,
        ..order()
    });
    assert_eq!(check(&v, &signed), Err(Refusal::Replayed));
    assert!(v.remembered(NOW + 100).is_empty());
}
