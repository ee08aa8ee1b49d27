//! What an edge checks before it accepts a token table from control. Token tables
//! keep the rules of route tables (`edgekv_routing::validate`): the table is for
//! this edge's environment and tenant, and so is every grant in it; its version is
//! newer than the one held, or the same with the same content (ACKed again). An
//! older table, another environment's or tenant's, or the same version with other
//! content is NACKed, and the edge keeps the table it holds.
//!
//! The checks are pure: the stream in [`crate::control`] applies the verdict.

use std::collections::HashSet;

use edgekv_proto::v1;
use sha2::{Digest, Sha256};

use super::{Grant, TokenHash};

/// The SHA-256 of a table's grants in a canonical order: the same grants in
/// another order are the same content.
pub type ContentHash = [u8; 32];

/// The control table an edge holds: its version and content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The table's version.
    pub version: u64,
    /// [`content_hash`] of its grants.
    pub content_hash: ContentHash,
}

/// Why a token table is refused; the reason goes back to control in the NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nack {
    /// The table is for another environment or tenant than the edge's.
    #[error(
        "token table is for {table_environment:?}/{table_tenant:?}; this edge is {environment:?}/{tenant:?}"
    )]
    WrongScope {
        /// The table's environment.
        table_environment: String,
        /// The table's tenant.
        table_tenant: String,
        /// The edge's environment.
        environment: String,
        /// The edge's tenant.
        tenant: String,
    },
    /// A grant is for another environment than the edge's.
    #[error("token {name:?} is for environment {grant_environment:?}, not {environment:?}")]
    ForeignGrant {
        /// The token's name.
        name: String,
        /// Its environment.
        grant_environment: String,
        /// The edge's environment.
        environment: String,
    },
    /// A grant cannot be used: its hash is not a SHA-256 in hex, it names no
    /// account, or its hash appears twice.
    #[error("token {name:?}: {why}")]
    Malformed {
        /// The token's name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The version is older than the one held.
    #[error("version {offered} is older than the held version {held}")]
    Older {
        /// The offered version.
        offered: u64,
        /// The held version.
        held: u64,
    },
    /// The same version as held, with other content.
    #[error("version {0} was already accepted with other content")]
    Conflict(u64),
}

/// What to do with a valid table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A newer table (or the first): install these grants and ACK.
    Install(Vec<(TokenHash, Grant)>),
    /// The table already held: ACK again, change nothing.
    AckAgain,
}

/// Checks a token table from control against the edge's `environment` and
/// `tenant` and the table it holds (`None`: no table of control's yet, as at a
/// first start).
pub fn validate(
    table: &v1::TokenTable,
    environment: &str,
    tenant: &str,
    held: Option<Held>,
) -> Result<Verdict, Nack> {
    if table.environment != environment || table.tenant != tenant {
        return Err(Nack::WrongScope {
            table_environment: table.environment.clone(),
            table_tenant: table.tenant.clone(),
            environment: environment.to_string(),
            tenant: tenant.to_string(),
        });
    }
    let grants = grants(table, environment)?;
    match held {
        None => Ok(Verdict::Install(grants)),
        Some(held) if table.version > held.version => Ok(Verdict::Install(grants)),
        Some(held) if table.version == held.version => {
            if content_hash(&grants) == held.content_hash {
                Ok(Verdict::AckAgain)
            } else {
                Err(Nack::Conflict(held.version))
            }
        }
        Some(held) => Err(Nack::Older {
            offered: table.version,
            held: held.version,
        }),
    }
}

/// The grants of a table, each for `environment` (or for every environment: a
/// token issued before tokens had one) and well formed.
fn grants(table: &v1::TokenTable, environment: &str) -> Result<Vec<(TokenHash, Grant)>, Nack> {
    let mut seen = HashSet::with_capacity(table.grants.len());
    table
        .grants
        .iter()
        .map(|g| {
            if !g.environment.is_empty() && g.environment != environment {
                return Err(Nack::ForeignGrant {
                    name: g.name.clone(),
                    grant_environment: g.environment.clone(),
                    environment: environment.to_string(),
                });
            }
            let malformed = |why: &'static str| Nack::Malformed {
                name: g.name.clone(),
                why,
            };
            let hash: TokenHash = hex::decode(&g.hash)
                .ok()
                .and_then(|raw| raw.try_into().ok())
                .ok_or_else(|| malformed("its hash is not a SHA-256 in hex"))?;
            if g.account.is_empty() {
                return Err(malformed("it names no account"));
            }
            if !seen.insert(hash) {
                return Err(malformed("its hash appears twice"));
            }
            let grant = Grant {
                name: g.name.clone(),
                account: g.account.clone(),
                namespaces: (!g.namespaces.is_empty()).then(|| g.namespaces.clone()),
                read_only: g.read_only,
                admin: g.admin,
            };
            Ok((hash, grant))
        })
        .collect()
}

/// The content hash of a table's grants: each grant's fields, length-prefixed,
/// in the order of the token hashes, so the order control listed them in does
/// not matter.
pub fn content_hash(grants: &[(TokenHash, Grant)]) -> ContentHash {
    fn text(hasher: &mut Sha256, value: &str) {
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    let mut sorted: Vec<&(TokenHash, Grant)> = grants.iter().collect();
    sorted.sort_unstable_by_key(|(hash, _)| *hash);
    let mut hasher = Sha256::new();
    hasher.update((sorted.len() as u64).to_le_bytes());
    for (hash, grant) in sorted {
        hasher.update(hash);
        text(&mut hasher, &grant.name);
        text(&mut hasher, &grant.account);
        match &grant.namespaces {
            None => hasher.update([0u8]),
            Some(list) => {
                hasher.update([1u8]);
                hasher.update((list.len() as u64).to_le_bytes());
                for namespace in list {
                    text(&mut hasher, namespace);
                }
            }
        }
        hasher.update([u8::from(grant.read_only), u8::from(grant.admin)]);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests;
