//! The token table: who may do what, looked up by the SHA-256 of a bearer token.
//!
//! The table holds no token, only hashes: a copy of it (on disk or in memory)
//! gives nobody access. (A connection's last token stays in memory beside its
//! hash while the connection lasts: [`TokenMemo`].) Tokens are 128-bit random secrets, so one
//! SHA-256 is as strong as a slow KDF would be and costs well under a microsecond.
//!
//! [`validate`] holds the checks a token table from control passes before it is
//! installed.

pub mod validate;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use edgekv_kv::Mode;

use crate::hot::NamespaceIndex;
use http::HeaderValue;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// A name for logs and listings; never the secret.
    pub name: String,
    /// The account the token acts for.
    pub account: String,
    /// The namespaces it may touch; none means every namespace of the account.
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    /// Whether it may only read.
    #[serde(default)]
    pub read_only: bool,
    /// Whether it may use operator features (`edgekv-version-override`).
    #[serde(default)]
    pub admin: bool,
}

impl Grant {
    /// A grant of every right on `account`.
    pub fn full(name: impl Into<String>, account: impl Into<String>) -> Self {
        Grant {
            name: name.into(),
            account: account.into(),
            namespaces: None,
            read_only: false,
            admin: true,
        }
    }

    /// Whether the grant covers `namespace` (always, when unscoped).
    pub fn covers(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == namespace))
    }
}

/// The set of valid tokens at one version.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    version: u64,
    grants: HashMap<TokenHash, Grant, BuildHasherDefault<DigestHasher>>,
    /// The content hash of control's grants in it ([`validate::content_hash`]),
    /// when it holds a table of control's: what the next table is checked against.
    content_hash: Option<validate::ContentHash>,
}

/// Hashes a [`TokenHash`] by its first eight bytes: it is a SHA-256 digest, already
/// uniform, so hashing it again would only cost time on every request.
#[derive(Debug, Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(head) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*head);
        }
    }

    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

impl TokenTable {
    /// A table at `version` with the given `(hash, grant)` entries.
    pub fn new(version: u64, grants: impl IntoIterator<Item = (TokenHash, Grant)>) -> Self {
        TokenTable {
            version,
            grants: grants.into_iter().collect(),
            content_hash: None,
        }
    }

    /// The table with the content hash of the control table it holds.
    pub fn with_content_hash(mut self, content_hash: validate::ContentHash) -> Self {
        self.content_hash = Some(content_hash);
        self
    }

    /// The version and content hash of the control table it holds, if any.
    pub fn held(&self) -> Option<validate::Held> {
        self.content_hash.map(|content_hash| validate::Held {
            version: self.version,
            content_hash,
        })
    }

    /// The table's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether the table holds no token.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Every `(hash, grant)` entry.
    pub fn entries(&self) -> impl Iterator<Item = (&TokenHash, &Grant)> {
        self.grants.iter()
    }

    /// Returns the grant of a presented token.
    pub fn lookup(&self, token: &str) -> Option<&Grant> {
        self.lookup_hash(&hash(token))
    }

    /// Returns the grant of the token with this hash.
    pub fn lookup_hash(&self, hash: &TokenHash) -> Option<&Grant> {
        self.grants.get(hash)
    }
}

/// The hash of the token a connection presented last, so that its later requests
/// skip the SHA-256: a client sends the same token on every request of a keep-alive
/// connection. The memo keeps that token's bytes to compare with, for the life of
/// the connection that carried them (one memo per connection, never shared, never
/// written anywhere); the table itself still holds hashes only.
///
/// It also keeps the last scope its token was admitted to on the hot read path:
/// the account, the namespace, that namespace's mode and its index in the hot
/// tier (which lasts while the namespace exists), and the route table's version
/// header the answers carry, stamped with the edge's scope generation
/// ([`crate::Edge::scope_generation`]) read before the check. A read of the same
/// scope with the same token skips the token, namespace and route table lookups
/// while the generation stands; any new token table, namespace change or route
/// table moves it, and the next request is checked in full again.
///
/// Behind a proxy that sends many clients' requests over one connection the memo
/// misses more than it hits; each miss costs the SHA-256 it would have cost anyway
/// and a few small allocations.
#[derive(Debug, Default)]
pub struct TokenMemo {
    last: RefCell<Option<(Box<[u8]>, TokenHash)>>,
    admitted: RefCell<Option<Admitted>>,
}

/// A read scope a token was admitted to, and when.
#[derive(Debug)]
struct Admitted {
    generation: u64,
    token: TokenHash,
    account: Box<str>,
    namespace: Box<str>,
    admission: Admission,
}

/// What the hot path learned when it admitted a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The namespace's mode.
    pub mode: Mode,
    /// The namespace's index in the hot tier.
    pub index: NamespaceIndex,
    /// `edgekv-route-version` of the route table then.
    pub route_version: Option<HeaderValue>,
}

/// A clone remembers nothing: each connection starts with an empty memo of its own.
impl Clone for TokenMemo {
    fn clone(&self) -> Self {
        TokenMemo::default()
    }
}

impl TokenMemo {
    /// The hash of `token` (its bytes, as sent: a token that is not text matches
    /// no hash): remembered when it is the connection's last token.
    pub fn hash(&self, token: &[u8]) -> TokenHash {
        if let Some((last, digest)) = &*self.last.borrow()
            && **last == *token
        {
            return *digest;
        }
        let digest = hash(token);
        *self.last.borrow_mut() = Some((token.into(), digest));
        digest
    }

    /// What the hot path learned if this token was admitted to read `namespace` in
    /// `account` at scope generation `generation`.
    pub fn admitted(
        &self,
        generation: u64,
        token: &TokenHash,
        account: &str,
        namespace: &str,
    ) -> Option<Admission> {
        self.admitted
            .borrow()
            .as_ref()
            .filter(|a| {
                a.generation == generation
                    && a.token == *token
                    && *a.account == *account
                    && *a.namespace == *namespace
            })
            .map(|a| a.admission.clone())
    }

    /// Remembers that the token was admitted to read `namespace` in `account`,
    /// checked against tables read after `generation` was.
    pub fn admit(
        &self,
        generation: u64,
        token: TokenHash,
        account: &str,
        namespace: &str,
        admission: Admission,
    ) {
        *self.admitted.borrow_mut() = Some(Admitted {
            generation,
            token,
            account: account.into(),
            namespace: namespace.into(),
            admission,
        });
    }
}

/// Returns the SHA-256 of a token (its bytes, as sent).
pub fn hash(token: impl AsRef<[u8]>) -> TokenHash {
    Sha256::digest(token.as_ref()).into()
}

/// Generates a new token: 128 random bits, as 32 hex digits.
pub fn generate() -> String {
    let mut secret = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut secret);
    hex::encode(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admitted_scope_holds_only_for_the_same_token_account_namespace_and_generation() {
        let memo = TokenMemo::default();
        let (token, other) = (hash("a"), hash("b"));
        let hot = crate::hot::HotTier::new(1 << 20);
        let full = Admission {
            mode: Mode::Full,
            index: hot.intern("ns1").unwrap(),
            route_version: Some(HeaderValue::from(5u64)),
        };
        let cache = Admission {
            mode: Mode::Cache,
            index: hot.intern("ns2").unwrap(),
            route_version: None,
        };
        assert_eq!(memo.admitted(7, &token, "acct", "ns1"), None);
        memo.admit(7, token, "acct", "ns1", full.clone());
        assert_eq!(memo.admitted(7, &token, "acct", "ns1"), Some(full));
        // Any one field different: not admitted.
        assert_eq!(memo.admitted(8, &token, "acct", "ns1"), None);
        assert_eq!(memo.admitted(7, &other, "acct", "ns1"), None);
        assert_eq!(memo.admitted(7, &token, "acct2", "ns1"), None);
        assert_eq!(memo.admitted(7, &token, "acct", "ns2"), None);
        // A new admission replaces the old one.
        memo.admit(8, token, "acct", "ns2", cache.clone());
        assert_eq!(memo.admitted(8, &token, "acct", "ns2"), Some(cache));
        assert_eq!(memo.admitted(8, &token, "acct", "ns1"), None);
        // A clone (a new connection) remembers nothing.
        assert_eq!(memo.clone().admitted(8, &token, "acct", "ns2"), None);
    }

    #[test]
    fn lookup_is_by_hash() {
        let token = generate();
        assert_eq!(token.len(), 32);
        let table = TokenTable::new(1, [(hash(&token), Grant::full("t", "acct"))]);
        assert_eq!(
            table.lookup(&token).map(|g| g.account.as_str()),
            Some("acct")
        );
        assert!(table.lookup("other").is_none());
        assert_ne!(generate(), token);
    }

    #[test]
    fn a_memo_hashes_as_the_table_does_whatever_the_order_of_tokens() {
        let memo = TokenMemo::default();
        for token in ["a", "a", "b", "a", "", "bb", "b"] {
            assert_eq!(memo.hash(token.as_bytes()), hash(token), "{token:?}");
        }
        assert!(memo.last.borrow().is_some());
        assert!(memo.clone().last.borrow().is_none(), "a clone kept a token");
    }

    #[test]
    fn scopes() {
        let mut grant = Grant::full("t", "a");
        assert!(grant.covers("any"));
        grant.namespaces = Some(vec!["n1".into()]);
        assert!(grant.covers("n1"));
        assert!(!grant.covers("n2"));
    }
}
