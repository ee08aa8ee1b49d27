//! Break-glass keys: generation, key files, signing, and nonces.
//!
//! A key file is one line of hex — the 32-byte seed for a private key, the 32-byte
//! point for a public one — optionally preceded by one `#` comment line; trailing
//! whitespace and blank lines are tolerated.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::Signer;
use rand::RngCore;

use crate::{KeyError, Order, SignedOrder};

/// The first line of a private key file.
const PRIVATE_HEADER: &str = "# edgekv break-glass private key (Ed25519 seed): keep it offline";
/// The first line of a public key file.
const PUBLIC_HEADER: &str = "# edgekv break-glass public key (Ed25519)";

/// The private key an operator signs orders with.
///
/// Its `Debug` shows only the public half, so the key cannot leak through a log line.
pub struct SigningKey(pub(crate) ed25519_dalek::SigningKey);

/// The public key an edge checks orders against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(pub(crate) ed25519_dalek::VerifyingKey);

/// Generates a key pair and writes it: the private key file with mode 0600 (refusing
/// to overwrite an existing file), the public key file beside it. Returns the public
/// key hex.
///
/// The public file is overwritten if it exists: it belongs to the new private key.
/// If it cannot be written, the private file just created is removed again, so a
/// retry does not trip over a half-made pair.
pub fn generate_key_files(private: &Path, public: &Path) -> Result<String, KeyError> {
    if private == public {
        return Err(KeyError::Format {
            origin: private.display().to_string(),
            reason: "the private and public key files must be different paths".into(),
        });
    }
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed));

    write_private(
        private,
        &format!("{PRIVATE_HEADER}\n{}\n", hex::encode(key.0.to_bytes())),
    )?;
    let public_hex = key.verifying_key().to_hex();
    if let Err(source) = std::fs::write(public, format!("{PUBLIC_HEADER}\n{public_hex}\n")) {
        // Best effort: the write error is the one worth reporting.
        let _ = std::fs::remove_file(private);
        return Err(KeyError::Io {
            path: public.to_path_buf(),
            source,
        });
    }
    Ok(public_hex)
}

/// Creates `path` (never overwriting it), readable by its owner only, and writes
/// `text` to it.
fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io(source)
        }
    })?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a key file and returns its 32 bytes.
fn read_key_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_key_text(&text, &path.display().to_string())
}

/// Parses the text of a key file: an optional first `#` line, then one line of hex.
fn parse_key_text(text: &str, origin: &str) -> Result<[u8; 32], KeyError> {
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.starts_with('#')) {
        lines.next();
    }
    let mut key_lines = lines.map(str::trim).filter(|l| !l.is_empty());
    let format = |reason: &str| KeyError::Format {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    };
    let line = key_lines
        .next()
        .ok_or_else(|| format("no key line (expected 64 hex characters)"))?;
    if key_lines.next().is_some() {
        return Err(format(
            "more than one line after the key (expected one optional '#' line, then the key)",
        ));
    }
    decode_key_hex(line, origin)
}

/// Decodes 64 hex characters into 32 bytes.
fn decode_key_hex(hex_text: &str, origin: &str) -> Result<[u8; 32], KeyError> {
    let bytes = hex::decode(hex_text).map_err(|source| KeyError::BadHex {
        origin: origin.to_owned(),
        source,
    })?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::WrongLength {
        origin: origin.to_owned(),
        len,
    })
}

impl SigningKey {
    /// Loads a private key file written by [`generate_key_files`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let seed = read_key_file(path)?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Returns the public half, which edges are configured with.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs an order: serialises it to JSON and signs exactly that text.
    pub fn sign(&self, order: &Order) -> SignedOrder {
        self.sign_text(order_json(order))
    }

    /// Signs arbitrary text as an order; tests use it to sign malformed orders.
    pub(crate) fn sign_text(&self, order: String) -> SignedOrder {
        let signature = hex::encode(self.0.sign(order.as_bytes()).to_bytes());
        SignedOrder { order, signature }
    }
}

/// Serialises an order to JSON.
#[allow(clippy::expect_used)] // Cannot fail: plain strings, integers and a unit enum.
fn order_json(order: &Order) -> String {
    serde_json::to_string(order).expect("an Order always serialises to JSON")
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.verifying_key().to_hex())
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Loads a public key file written by [`generate_key_files`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::from_bytes(read_key_file(path)?, &path.display().to_string())
    }

    /// Parses a public key from 64 hex characters (surrounding whitespace tolerated),
    /// as it appears in a config file.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let origin = "the given hex";
        Self::from_bytes(decode_key_hex(s.trim(), origin)?, origin)
    }

    /// Returns the key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// Checks that 32 bytes are a point on the curve.
    fn from_bytes(bytes: [u8; 32], origin: &str) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| KeyError::NotAPublicKey {
                origin: origin.to_owned(),
            })
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VerifyingKey").field(&self.to_hex()).finish()
    }
}

/// Returns a fresh nonce: 128 random bits as 32 lowercase hex characters.
pub fn nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests;
