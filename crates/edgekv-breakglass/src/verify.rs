//! The edge's checks on a break-glass order, including replay protection.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::{Action, Order, Refusal, SignedOrder, VerifyingKey};

/// How far in the future an order's `issued_ms` may lie, in ms: clocks of the
/// operator's laptop and of an edge disagree by this much without either being wrong.
pub const CLOCK_SKEW_MS: u64 = 60_000;

/// Checks orders against one public key, remembering nonces until their orders
/// expire (so a captured order cannot be replayed).
///
/// The memory itself is in-process: a node that must refuse replays across a
/// restart keeps [`Verifier::remembered`] on disk after each accepted order, before
/// acting on it, and hands it back to [`Verifier::remember`] when it starts. Only
/// nonces of orders that have not expired need keeping (an expired order is refused
/// anyway), so what is kept is bounded by the orders of one `max_ttl_ms`.
#[derive(Debug)]
pub struct Verifier {
    /// The public key orders must be signed with.
    key: VerifyingKey,
    /// The longest an order may remain valid, counted from now.
    max_ttl_ms: u64,
    /// Nonces of accepted orders, with the `not_after_ms` of their order.
    seen: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    /// Creates a verifier for orders signed by `key` that remain valid for at most
    /// `max_ttl_ms` from when they are checked.
    pub fn new(key: VerifyingKey, max_ttl_ms: u64) -> Self {
        Self {
            key,
            max_ttl_ms,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies the signature, then: environment == `environment`; node == `node_id`
    /// or "all"; not_after_ms > now_ms; not_after_ms - now_ms <= max_ttl; issued_ms <=
    /// now_ms + 60_000 (clock skew allowance); a pin names a build; an unpin names the
    /// pin it lifts (`lifts`, a nonce) and no other order does; the nonce is 128 bits
    /// of hex and not seen before. Records the nonce only when everything passes.
    pub fn verify(
        &self,
        signed: &SignedOrder,
        now_ms: u64,
        environment: &str,
        node_id: &str,
    ) -> Result<Order, Refusal> {
        let signature = hex::decode(&signed.signature)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                ed25519_dalek::Signature::from_slice(&bytes)
                    .map_err(|_| format!("{} bytes", bytes.len()))
            })
            .map_err(Refusal::MalformedSignature)?;
        self.key
            .0
            .verify_strict(signed.order.as_bytes(), &signature)
            .map_err(|_| Refusal::BadSignature)?;
        let order: Order =
            serde_json::from_str(&signed.order).map_err(|e| Refusal::NotJson(e.to_string()))?;

        if order.environment != environment {
            return Err(Refusal::WrongEnvironment {
                order: order.environment,
                node: environment.to_owned(),
            });
        }
        if order.node != node_id && order.node != "all" {
            return Err(Refusal::WrongNode {
                order: order.node,
                node: node_id.to_owned(),
            });
        }
        if order.not_after_ms <= now_ms {
            return Err(Refusal::Expired {
                not_after_ms: order.not_after_ms,
                now_ms,
            });
        }
        let asked_ms = order.not_after_ms - now_ms;
        if asked_ms > self.max_ttl_ms {
            return Err(Refusal::TooLong {
                asked_ms,
                max_ms: self.max_ttl_ms,
            });
        }
        if order.issued_ms > now_ms.saturating_add(CLOCK_SKEW_MS) {
            return Err(Refusal::IssuedInFuture {
                issued_ms: order.issued_ms,
                now_ms,
                skew_ms: CLOCK_SKEW_MS,
            });
        }
        if order.action == Action::Pin && order.build.is_empty() {
            return Err(Refusal::PinWithoutBuild);
        }
        match order.action {
            Action::Unpin if !is_nonce(&order.lifts) => {
                return Err(Refusal::UnpinWithoutPin(order.lifts));
            }
            Action::Pin if !order.lifts.is_empty() => {
                return Err(Refusal::LiftsOutsideUnpin("pin"));
            }
            Action::Rollback if !order.lifts.is_empty() => {
                return Err(Refusal::LiftsOutsideUnpin("rollback"));
            }
            _ => {}
        }
        if !is_nonce(&order.nonce) {
            return Err(Refusal::MalformedNonce(order.nonce));
        }

        // Check and record under one lock, so two copies of an order checked at once
        // cannot both pass.
        let mut seen = self.seen.lock();
        seen.retain(|_, not_after_ms| *not_after_ms > now_ms);
        if seen.contains_key(&order.nonce) {
            return Err(Refusal::Replayed);
        }
        seen.insert(order.nonce.clone(), order.not_after_ms);
        Ok(order)
    }

    /// Returns how many nonces are remembered (orders accepted and not yet expired at
    /// the last check).
    pub fn remembered_nonces(&self) -> usize {
        self.seen.lock().len()
    }

    /// Remembers the nonce of an order accepted before — by an earlier run of this
    /// node, as kept on disk — so an order carrying it is refused as replayed until
    /// `not_after_ms`. A nonce remembered already keeps the later of its two expiries.
    pub fn remember(&self, nonce: &str, not_after_ms: u64) {
        let mut seen = self.seen.lock();
        let kept = seen.entry(nonce.to_owned()).or_insert(not_after_ms);
        *kept = (*kept).max(not_after_ms);
    }

    /// Returns the remembered nonces of orders still valid at `now_ms`, each with its
    /// order's `not_after_ms`, sorted by nonce, and forgets the others: what a node
    /// keeps on disk to refuse replays across a restart.
    pub fn remembered(&self, now_ms: u64) -> Vec<(String, u64)> {
        let mut seen = self.seen.lock();
        seen.retain(|_, not_after_ms| *not_after_ms > now_ms);
        let mut nonces: Vec<(String, u64)> = seen
            .iter()
            .map(|(nonce, not_after_ms)| (nonce.clone(), *not_after_ms))
            .collect();
        nonces.sort_unstable();
        nonces
    }
}

/// Whether `text` is a nonce: 128 bits as 32 hex characters.
fn is_nonce(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
