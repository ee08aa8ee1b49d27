//! Break-glass orders (`edgekv_breakglass`): the JSON an operator hands to an
//! edge, and the edge's checks of it.
//!
//! The input is JSON text, read two ways:
//! - as a `SignedOrder` (what travels), checked by a verifier of a fixed key: never
//!   a panic; it passes the signature check only when it is exactly what that key
//!   signs for its order; a verifier of another key (one no input was signed
//!   with) refuses it for its signature, always.
//! - as an `Order`, signed with the fixed key and checked: never a panic; an order
//!   accepted is the order signed, and the same order again is a replay.
//!
//! The seeds (`fuzz/corpus/breakglass_order/`) are signed with the fixed key
//! below, so the fuzzer starts past the signature check.
#![no_main]

use std::sync::LazyLock;

use edgekv_breakglass::{Order, Refusal, SignedOrder, SigningKey, Verifier};
use libfuzzer_sys::fuzz_target;

/// The seed of the fixed key (test only: it is in the source).
const SEED_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";
/// The seed of a key nothing is signed with.
const OTHER_SEED_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";
/// The verifier's clock, Unix ms, and its environment and node.
const NOW_MS: u64 = 1_800_000_000_000;
const ENVIRONMENT: &str = "production";
const NODE: &str = "edge-1";
/// The longest an order may stay valid.
const MAX_TTL_MS: u64 = 3_600_000;

/// Loads a private key from its seed, through a key file: the crate makes
/// signing keys only from files.
fn key(seed_hex: &str) -> SigningKey {
    let path = std::env::temp_dir().join(format!(
        "edgekv-fuzz-breakglass-{}-{seed_hex:.8}.key",
        std::process::id()
    ));
    std::fs::write(&path, format!("{seed_hex}\n")).unwrap();
    let key = SigningKey::load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    key
}

static KEY: LazyLock<SigningKey> = LazyLock::new(|| key(SEED_HEX));
static OTHER: LazyLock<SigningKey> = LazyLock::new(|| key(OTHER_SEED_HEX));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(signed) = serde_json::from_str::<SignedOrder>(text) {
        signed_order(&signed);
    }
    if let Ok(order) = serde_json::from_str::<Order>(text) {
        order_signed_here(&order);
    }
});

/// Whether a refusal is about the signature.
fn signature_refused(result: &Result<Order, Refusal>) -> bool {
    matches!(
        result,
        Err(Refusal::MalformedSignature(_) | Refusal::BadSignature)
    )
}

fn signed_order(signed: &SignedOrder) {
    let other = Verifier::new(OTHER.verifying_key(), MAX_TTL_MS);
    let result = other.verify(signed, NOW_MS, ENVIRONMENT, NODE);
    assert!(
        signature_refused(&result),
        "an order passed the signature check of a key that signed nothing: {result:?}"
    );

    let verifier = Verifier::new(KEY.verifying_key(), MAX_TTL_MS);
    let result = verifier.verify(signed, NOW_MS, ENVIRONMENT, NODE);
    if signature_refused(&result) {
        return;
    }
    // Past the signature: the text must be what the key signed for its order
    // (Ed25519 signing is deterministic, and the seeds are `SigningKey::sign`'s
    // output), else the check let through a signature the key never made.
    let order: Order = serde_json::from_str(&signed.order).unwrap_or_else(|e| {
        panic!("an order that is not an order passed the signature check: {e}")
    });
    let genuine = KEY.sign(&order);
    assert_eq!(
        signed.order, genuine.order,
        "a text the key never signed passed"
    );
    assert_eq!(
        signed.signature.to_ascii_lowercase(),
        genuine.signature,
        "a signature the key never made passed"
    );
    if let Ok(accepted) = result {
        assert_eq!(accepted, order);
        assert_eq!(
            verifier.verify(signed, NOW_MS, ENVIRONMENT, NODE),
            Err(Refusal::Replayed)
        );
    }
}

fn order_signed_here(order: &Order) {
    let signed = KEY.sign(order);
    let verifier = Verifier::new(KEY.verifying_key(), MAX_TTL_MS);
    let result = verifier.verify(&signed, NOW_MS, ENVIRONMENT, NODE);
    assert!(
        !signature_refused(&result),
        "an order the key signed failed its signature check: {result:?}"
    );
    if let Ok(accepted) = result {
        assert_eq!(&accepted, order);
        assert!(accepted.not_after_ms > NOW_MS);
        assert!(accepted.not_after_ms - NOW_MS <= MAX_TTL_MS);
        assert_eq!(verifier.remembered_nonces(), 1);
        assert_eq!(
            verifier.verify(&signed, NOW_MS, ENVIRONMENT, NODE),
            Err(Refusal::Replayed)
        );
        // A verifier that remembers the nonce (as after a restart) refuses it too.
        let restarted = Verifier::new(KEY.verifying_key(), MAX_TTL_MS);
        for (nonce, not_after_ms) in verifier.remembered(NOW_MS) {
            restarted.remember(&nonce, not_after_ms);
        }
        assert_eq!(
            restarted.verify(&signed, NOW_MS, ENVIRONMENT, NODE),
            Err(Refusal::Replayed)
        );
    }
}
