//! Break-glass on the edge: Ed25519-signed pin and unpin orders, accepted on the
//! admin listener and checked against the public key in the edge's config — no
//! control plane, no network auth and no KV involved.
//!
//! A pin routes every request of this edge to one build of its route table until
//! the order's `not_after`. The edge keeps validating and ACKing route tables
//! meanwhile, and reports the pin to control (which holds promotions). A pin is
//! kept in the edge's store, so it survives a restart. Every use is logged at
//! error level.

use std::sync::Arc;

use edgekv_breakglass::{Action, SignedOrder, Verifier, VerifyingKey};

use crate::service::Pin;
use crate::{Edge, Error, Result};

/// The meta entry holding the pin in force.
const PIN: &str = "break_glass_pin";
/// The longest pin an order may ask for.
pub const MAX_PIN_MS: u64 = 24 * 3600 * 1000;

/// Loads the verifier of the configured public key, if one is configured.
pub fn verifier(edge_config: &crate::EdgeConfig) -> Result<Option<Verifier>> {
    edge_config
        .break_glass_key
        .as_ref()
        .map(|path| {
            VerifyingKey::load(path)
                .map(|key| Verifier::new(key, MAX_PIN_MS))
                .map_err(|e| Error::Config(format!("break_glass_key: {e}")))
        })
        .transpose()
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
}

impl Edge {
    /// Checks a signed order and applies it. A refusal says why (the operator's
    /// fault: 4xx); nothing changes then.
    pub fn break_glass(&self, signed: &SignedOrder) -> Result<Applied> {
        let verifier = self.break_glass.as_ref().ok_or_else(|| {
            Error::Forbidden(
                "this edge has no break-glass public key configured (break_glass_key)".into(),
            )
        })?;
        let now = self.clock().now_ms();
        let order = verifier
            .verify(signed, now, &self.config.environment, self.node_id())
            .map_err(|e| Error::Forbidden(format!("break-glass order refused: {e}")))?;
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
                })
            }
            Action::Unpin => {
                self.store.set_meta_synced(PIN, b"")?;
                self.pin.store(None);
                tracing::error!(nonce = %order.nonce, "BREAK-GLASS: pin lifted; the route table decides again");
                Ok(Applied {
                    action: "unpinned",
                    node: self.node_id().to_string(),
                    build: String::new(),
                    until_ms: 0,
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
            self.pin.store(Some(Arc::new(Pin {
                build: build.to_string(),
                until_ms,
                nonce: nonce.unwrap_or_default().to_string(),
            })));
        }
        Ok(())
    }
}
