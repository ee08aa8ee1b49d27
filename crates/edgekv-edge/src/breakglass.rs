//! Break-glass on the edge: Ed25519-signed pin and unpin orders, accepted on the
//! admin listener and checked against the public key in the edge's config — no
//! control plane, no network auth and no KV involved.
//!
//! A pin routes every request of this edge to one build of its route table until
//! the order's `not_after`. The edge keeps validating and ACKing route tables
//! meanwhile, and reports the pin to control (which holds promotions). A pin is
//! kept in the edge's store, so it survives a restart. An unpin names the pin it
//! lifts by its nonce, and is refused when another pin is in force. Every use is
//! logged at error level.
//!
//! Each order is accepted once, also across a restart: the nonces of accepted
//! orders that have not expired are kept in the store (fsynced) before the order
//! acts, and handed back to the verifier when the edge starts.

use std::sync::Arc;

use edgekv_breakglass::{Action, SignedOrder, Verifier, VerifyingKey};
use parking_lot::Mutex;

use crate::service::Pin;
use crate::{Edge, Error, Result};

/// The meta entry holding the pin in force.
const PIN: &str = "break_glass_pin";
/// The meta entry holding the nonces of accepted orders that have not expired, one
/// `nonce not_after_ms` line each.
const NONCES: &str = "break_glass_nonces";
/// The longest pin an order may ask for.
pub const MAX_PIN_MS: u64 = 24 * 3600 * 1000;

/// The edge's break-glass state: the verifier of orders, and the lock that makes
/// each order's check, the record of its nonce and its effect on the pin one step.
#[derive(Debug)]
pub struct BreakGlass {
    /// Checks orders and remembers their nonces.
    verifier: Verifier,
    /// Held while an order is checked and applied: an unpin checks the pin in force
    /// and lifts it with no other order in between (so it cannot lift a pin placed
    /// after its check), and each write of the kept nonces holds every nonce
    /// accepted before it.
    one_at_a_time: Mutex<()>,
}

/// Loads the verifier of the configured public key, if one is configured.
pub fn load(edge_config: &crate::EdgeConfig) -> Result<Option<BreakGlass>> {
    edge_config
        .break_glass_key
        .as_ref()
        .map(|path| {
            VerifyingKey::load(path)
                .map(|key| BreakGlass {
                    verifier: Verifier::new(key, MAX_PIN_MS),
                    one_at_a_time: Mutex::new(()),
                })
                .map_err(|e| Error::Config(format!("break_glass_key: {e}")))
        })
        .transpose()
}

/// Writes nonces as the text of the [`NONCES`] entry: one `nonce not_after_ms` line
/// each.
fn encode_nonces(nonces: &[(String, u64)]) -> String {
    nonces
        .iter()
        .map(|(nonce, not_after_ms)| format!("{nonce} {not_after_ms}\n"))
        .collect()
}

/// Reads the text of the [`NONCES`] entry: the nonces, and how many lines did not
/// parse (blank lines are not counted).
fn decode_nonces(raw: &[u8]) -> (Vec<(String, u64)>, usize) {
    let text = String::from_utf8_lossy(raw);
    let mut nonces = Vec::new();
    let mut damaged = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = line.split_once(' ').and_then(|(nonce, not_after)| {
            let well_formed = nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit());
            let not_after_ms = not_after.trim().parse::<u64>().ok()?;
            well_formed.then(|| (nonce.to_string(), not_after_ms))
        });
        match parsed {
            Some(entry) => nonces.push(entry),
            None => damaged += 1,
        }
    }
    (nonces, damaged)
}

/// What an accepted order did, for the operator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    /// `pinned` or `unpinned`.
    pub action: &'static str,
    /// The node that applied it.
    pub node: String,
    /// The pinned build (empty for an unpin).
    pub build: String,
    /// When the pin ends, Unix ms (0 for an unpin).
    pub until_ms: u64,
    /// The pin's nonce: of the new pin (an unpin names it), or of the lifted one.
    pub pin: String,
}

impl Edge {
    /// Checks a signed order and applies it. A refusal says why (the operator's
    /// fault: 4xx); nothing changes then.
    ///
    /// An order that passes the verifier's checks spends its nonce, which is kept in
    /// the store before the order acts: even when the order then cannot apply (a
    /// build the edge does not know, an unpin of another pin) or the edge crashes
    /// midway, the same signed order is refused from then on, also after a restart.
    pub fn break_glass(&self, signed: &SignedOrder) -> Result<Applied> {
        let break_glass = self.break_glass.as_ref().ok_or_else(|| {
            Error::Forbidden(
                "this edge has no break-glass public key configured (break_glass_key)".into(),
            )
        })?;
        let _one_at_a_time = break_glass.one_at_a_time.lock();
        let now = self.clock().now_ms();
        let order = break_glass
            .verifier
            .verify(signed, now, &self.config.environment, self.node_id())
            .map_err(|e| Error::Forbidden(format!("break-glass order refused: {e}")))?;
        let kept = encode_nonces(&break_glass.verifier.remembered(now));
        if let Err(err) = self.store.set_meta_synced(NONCES, kept.as_bytes()) {
            // The nonce stays spent in memory: the order is refused, never replayable.
            tracing::error!(error = %err, nonce = %order.nonce, "BREAK-GLASS: cannot keep the order's nonce; the order is refused");
            return Err(err.into());
        }
        match order.action {
            Action::Pin => {
                let routes = self.routes();
                if routes.build(&order.build).is_none() {
                    return Err(Error::BadRequest(format!(
                        "build {:?} is not in this edge's route table (version {}); pin a build the edge knows",
                        order.build,
                        routes.version()
                    )));
                }
                let pin = Pin {
                    build: order.build.clone(),
                    until_ms: order.not_after_ms,
                    nonce: order.nonce.clone(),
                };
                self.store
                    .set_meta_synced(PIN, format!("{}\n{}\n{}", pin.build, pin.until_ms, pin.nonce).as_bytes())?;
                self.pin.store(Some(Arc::new(pin)));
                tracing::error!(
                    build = %order.build,
                    until_ms = order.not_after_ms,
                    nonce = %order.nonce,
                    "BREAK-GLASS: every request of this edge now goes to the pinned build"
                );
                Ok(Applied {
                    action: "pinned",
                    node: self.node_id().to_string(),
                    build: order.build,
                    until_ms: order.not_after_ms,
                    pin: order.nonce,
                })
            }
            Action::Unpin => {
                let Some(pin) = self.pin() else {
                    return Err(Error::BadRequest(format!(
                        "no pin is in force on this edge, so the unpin of pin {} changes nothing",
                        order.lifts
                    )));
                };
                if pin.nonce != order.lifts {
                    return Err(Error::BadRequest(format!(
                        "the unpin names pin {} but the pin in force is {} (build {:?} until {}); \
                         nothing changed: sign an unpin naming the pin in force",
                        order.lifts, pin.nonce, pin.build, pin.until_ms
                    )));
                }
                self.store.set_meta_synced(PIN, b"")?;
                self.pin.store(None);
                tracing::error!(
                    nonce = %order.nonce,
                    lifted = %pin.nonce,
                    build = %pin.build,
                    "BREAK-GLASS: pin lifted; the route table decides again"
                );
                Ok(Applied {
                    action: "unpinned",
                    node: self.node_id().to_string(),
                    build: String::new(),
                    until_ms: 0,
                    pin: pin.nonce.clone(),
                })
            }
            Action::Rollback => Err(Error::BadRequest(
                "a rollback order is for control, not for an edge; pin the known-good build instead"
                    .into(),
            )),
        }
    }

    /// Restores a pin kept in the store, if it has not ended.
    pub(crate) fn load_pin(&self) -> Result<()> {
        let Some(raw) = self.store.meta(PIN)? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&raw);
        let mut lines = text.lines();
        let (Some(build), Some(until), nonce) = (lines.next(), lines.next(), lines.next()) else {
            return Ok(());
        };
        let Ok(until_ms) = until.parse::<u64>() else {
            return Ok(());
        };
        if until_ms > self.clock().now_ms() {
            tracing::error!(%build, until_ms, "BREAK-GLASS: a pin kept from before the restart is in force");
            let nonce = nonce.unwrap_or_default().to_string();
            // Its order is spent, whatever the kept nonces say (one kept by an edge
            // that did not keep nonces yet, say).
            if let Some(break_glass) = &self.break_glass
                && !nonce.is_empty()
            {
                break_glass.verifier.remember(&nonce, until_ms);
            }
            self.pin.store(Some(Arc::new(Pin {
                build: build.to_string(),
                until_ms,
                nonce,
            })));
        }
        Ok(())
    }

    /// Hands the nonces of accepted orders that have not expired, kept in the store,
    /// back to the verifier: an order accepted before a restart is refused after it.
    pub(crate) fn load_nonces(&self) -> Result<()> {
        let Some(break_glass) = &self.break_glass else {
            return Ok(());
        };
        let Some(raw) = self.store.meta(NONCES)? else {
            return Ok(());
        };
        let (nonces, damaged) = decode_nonces(&raw);
        if damaged > 0 {
            tracing::error!(
                damaged,
                "BREAK-GLASS: lines of the kept nonces do not parse; their orders could be replayed until they expire"
            );
        }
        let now = self.clock().now_ms();
        let mut restored = 0usize;
        for (nonce, not_after_ms) in nonces {
            if not_after_ms > now {
                break_glass.verifier.remember(&nonce, not_after_ms);
                restored += 1;
            }
        }
        if restored > 0 {
            tracing::info!(
                restored,
                "break-glass: orders accepted before the restart stay spent"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_nonces_read_back_and_damaged_lines_are_counted() {
        let nonces = vec![
            ("0123456789abcdef0123456789abcdef".to_string(), 17),
            ("fedcba9876543210fedcba9876543210".to_string(), u64::MAX),
        ];
        let text = encode_nonces(&nonces);
        assert_eq!(decode_nonces(text.as_bytes()), (nonces.clone(), 0));
        assert_eq!(decode_nonces(b""), (Vec::new(), 0));
        let damaged =
            format!("{text}\nnot-a-nonce 5\n0123456789abcdef0123456789abcdef x\nlonely\n");
        assert_eq!(decode_nonces(damaged.as_bytes()), (nonces, 3));
    }
}
