//! The stored forms a node reads back from its disk: records
//! (`edgekv_kv::Record`), change-log entries (`edgekv_store::codec`) and
//! remembered write ids (`edgekv_store::WrittenId`).
//!
//! Any bytes: decoding never panics, and whatever decodes re-encodes to bytes that
//! decode to the same value. The same input, read as a structured record and log
//! entry, must survive encode then decode exactly.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use edgekv_kv::{Mode, Namespace, Record};
use edgekv_store::{LogEntry, NamespaceOp, Write, WrittenId, codec};
use libfuzzer_sys::fuzz_target;

/// A revision for decoded log entries (it is the stored key, not in the bytes).
const REVISION: u64 = 7;

fuzz_target!(|data: &[u8]| {
    decoded_bytes_round_trip(data);
    structured_values_round_trip(data);
});

/// Arbitrary bytes as each stored form.
fn decoded_bytes_round_trip(data: &[u8]) {
    let raw = Bytes::copy_from_slice(data);

    if let Ok(record) = Record::decode(raw.clone()) {
        let again = record.encode();
        assert_eq!(Record::decode(again.into()), Ok(record));
    }

    if let Ok(entry) = codec::decode_entry(REVISION, raw) {
        let again = codec::encode_entry(&entry);
        let decoded = codec::decode_entry(REVISION, again.into());
        assert_eq!(decoded.ok(), Some(entry));
    }

    if let Ok(id) = WrittenId::decode(data) {
        // The form is canonical (8 or 40 bytes): it re-encodes to the same bytes.
        assert_eq!(WrittenId::encode(id.revision, id.digest.as_ref()), data);
    }
}

/// A record as arbitrary fields.
#[derive(Arbitrary, Debug)]
struct AnyRecord {
    value: Vec<u8>,
    metadata: Option<Vec<u8>>,
    expiration: Option<u64>,
    revision: u64,
    hlc: u64,
    tombstone: bool,
}

impl From<AnyRecord> for Record {
    fn from(r: AnyRecord) -> Record {
        Record {
            value: r.value.into(),
            metadata: r.metadata.map(Bytes::from),
            expiration: r.expiration,
            revision: r.revision,
            hlc: r.hlc,
            tombstone: r.tombstone,
        }
    }
}

/// A change-log entry as arbitrary fields.
#[derive(Arbitrary, Debug)]
struct AnyEntry {
    writes: Vec<(String, Vec<u8>, AnyRecord)>,
    namespaces: Vec<AnyNamespaceOp>,
    write_id: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
enum AnyNamespaceOp {
    Put {
        id: String,
        title: String,
        account: String,
        full: bool,
    },
    Delete(String),
}

impl From<AnyEntry> for LogEntry {
    fn from(e: AnyEntry) -> LogEntry {
        LogEntry {
            revision: REVISION,
            writes: e
                .writes
                .into_iter()
                .map(|(namespace, key, record)| Write {
                    namespace,
                    key: key.into(),
                    record: record.into(),
                })
                .collect(),
            namespaces: e
                .namespaces
                .into_iter()
                .map(|op| match op {
                    AnyNamespaceOp::Put {
                        id,
                        title,
                        account,
                        full,
                    } => NamespaceOp::Put(Namespace {
                        id,
                        title,
                        account,
                        mode: if full { Mode::Full } else { Mode::Cache },
                    }),
                    AnyNamespaceOp::Delete(id) => NamespaceOp::Delete(id),
                })
                .collect(),
            write_id: e.write_id,
        }
    }
}

/// The same input as structured values: encode then decode is the identity.
fn structured_values_round_trip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(record) = AnyRecord::arbitrary(&mut u) {
        let record = Record::from(record);
        assert_eq!(Record::decode(record.encode().into()), Ok(record));
    }
    if let Ok(entry) = AnyEntry::arbitrary(&mut u) {
        let entry = LogEntry::from(entry);
        let decoded = codec::decode_entry(REVISION, codec::encode_entry(&entry).into());
        assert_eq!(decoded.ok(), Some(entry));
    }
}
