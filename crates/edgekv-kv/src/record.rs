//! [`Record`], the stored form of one key, and its binary encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a store holds for one key: a live value or a tombstone.
///
/// Records are ordered by `revision` (the origin's commit order) and carry the
/// hybrid-logical-clock stamp of the edge that accepted the write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The value bytes; empty for a tombstone. Shared, never copied on a read.
    pub value: Bytes,
    /// Compact JSON metadata, at most 1024 bytes.
    pub metadata: Option<Bytes>,
    /// When the record stops being served, in Unix seconds. For a tombstone, when it
    /// may be purged.
    pub expiration: Option<u64>,
    /// The revision of the write that made this record.
    pub revision: u64,
    /// The hybrid-logical-clock stamp of that write.
    pub hlc: u64,
    /// Whether this record marks a deleted key.
    pub tombstone: bool,
}

/// The format version written as the first byte of every encoded record.
const FORMAT: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
const FLAG_METADATA: u8 = 2;
const FLAG_EXPIRATION: u8 = 4;
/// Bytes before the metadata: format, flags, revision, hlc, expiration, metadata length.
const HEADER: usize = 1 + 1 + 8 + 8 + 8 + 4;

/// Why stored bytes could not be read as a record: corruption or a newer format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored record is corrupt: {0}")]
pub struct DecodeError(&'static str);

/// Whether a record with this expiration has expired at `now_s` (Unix seconds):
/// the one rule for every copy of a record, stored or held in memory.
pub fn expired(expiration: Option<u64>, now_s: u64) -> bool {
    expiration.is_some_and(|at| at <= now_s)
}

/// Whether a record with these fields may be served at `now_s`.
pub fn live(tombstone: bool, expiration: Option<u64>, now_s: u64) -> bool {
    !tombstone && !expired(expiration, now_s)
}

impl Record {
    /// A live record.
    pub fn value(value: Bytes, metadata: Option<Bytes>, expiration: Option<u64>) -> Self {
        Record {
            value,
            metadata,
            expiration,
            ..Record::default()
        }
    }

    /// A tombstone, purged after `expiration`.
    pub fn tombstone(expiration: Option<u64>) -> Self {
        Record {
            tombstone: true,
            expiration,
            ..Record::default()
        }
    }

    /// Whether the record has expired at `now_s` (Unix seconds).
    pub fn is_expired(&self, now_s: u64) -> bool {
        expired(self.expiration, now_s)
    }

    /// Whether the record holds a value that may be served at `now_s`.
    pub fn is_live(&self, now_s: u64) -> bool {
        live(self.tombstone, self.expiration, now_s)
    }

    /// The bytes of memory the record holds (value and metadata), for cache budgets.
    pub fn weight(&self) -> usize {
        self.value.len() + self.metadata.as_ref().map_or(0, Bytes::len)
    }

    /// The record as a listing shows it: without its value, its metadata in a
    /// buffer of its own (not holding the stored record's alive).
    pub fn listed(self) -> Record {
        Record {
            value: Bytes::new(),
            metadata: self.metadata.as_deref().map(Bytes::copy_from_slice),
            ..self
        }
    }

    /// Encodes the record for storage.
    pub fn encode(&self) -> Vec<u8> {
        let meta = self.metadata.as_deref().unwrap_or_default();
        let mut out = BytesMut::with_capacity(HEADER + meta.len() + self.value.len());
        let mut flags = 0;
        if self.tombstone {
            flags |= FLAG_TOMBSTONE;
        }
        if self.metadata.is_some() {
            flags |= FLAG_METADATA;
        }
        if self.expiration.is_some() {
            flags |= FLAG_EXPIRATION;
        }
        out.put_u8(FORMAT);
        out.put_u8(flags);
        out.put_u64(self.revision);
        out.put_u64(self.hlc);
        out.put_u64(self.expiration.unwrap_or(0));
        // Metadata is at most 1024 bytes; the u32 leaves room for a later raise.
        out.put_u32(meta.len() as u32);
        out.put_slice(meta);
        out.put_slice(&self.value);
        out.to_vec()
    }

    /// The revision of an encoded record, read from its header alone (the
    /// rest is checked by [`Record::decode`]).
    pub fn revision_of(raw: &[u8]) -> Result<u64, DecodeError> {
        if raw.len() < HEADER {
            return Err(DecodeError("shorter than its header"));
        }
        let mut head = &raw[..HEADER];
        if head.get_u8() != FORMAT {
            return Err(DecodeError("unknown format version"));
        }
        head.advance(1);
        Ok(head.get_u64())
    }

    /// Decodes a stored record. The value and metadata share `raw`'s buffer.
    pub fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        if raw.len() < HEADER {
            return Err(DecodeError("shorter than its header"));
        }
        let mut head = &raw[..HEADER];
        if head.get_u8() != FORMAT {
            return Err(DecodeError("unknown format version"));
        }
        let flags = head.get_u8();
        let revision = head.get_u64();
        let hlc = head.get_u64();
        let expiration = head.get_u64();
        let meta_len = head.get_u32() as usize;
        if raw.len() < HEADER + meta_len {
            return Err(DecodeError("metadata runs past the end"));
        }
        let metadata = (flags & FLAG_METADATA != 0).then(|| raw.slice(HEADER..HEADER + meta_len));
        Ok(Record {
            value: raw.slice(HEADER + meta_len..),
            metadata,
            expiration: (flags & FLAG_EXPIRATION != 0).then_some(expiration),
            revision,
            hlc,
            tombstone: flags & FLAG_TOMBSTONE != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(
            value in proptest::collection::vec(any::<u8>(), 0..300),
            metadata in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
            expiration in proptest::option::of(any::<u64>()),
            revision: u64,
            hlc: u64,
            tombstone: bool,
        ) {
            let record = Record {
                value: value.into(),
                metadata: metadata.map(Bytes::from),
                expiration,
                revision,
                hlc,
                tombstone,
            };
            prop_assert_eq!(Record::revision_of(&record.encode()), Ok(revision));
            prop_assert_eq!(Record::decode(record.encode().into()), Ok(record));
        }

        #[test]
        fn garbage_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Record::revision_of(&raw);
            let _ = Record::decode(raw.into());
        }
    }

    #[test]
    fn expiry() {
        let r = Record::value(Bytes::from_static(b"v"), None, Some(100));
        assert!(r.is_live(99));
        assert!(!r.is_live(100));
        assert!(!Record::tombstone(None).is_live(0));
    }
}
