//! The stored form of change-log entries.
//!
//! An entry is a list of tagged items: `K` (a record: namespace, key, encoded
//! record), `N` (a namespace, JSON), `D` (a deleted namespace id) and `W` (the
//! write id). Lengths are big-endian `u32`.

use bytes::{Buf, BufMut, Bytes};
use edgekv_kv::Record;

use crate::{Error, LogEntry, NamespaceOp, Write, keys};

fn put_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

/// Encodes a log entry (its revision is the stored key, not part of the value).
pub fn encode_entry(entry: &LogEntry) -> Vec<u8> {
    let mut out = Vec::new();
    for write in &entry.writes {
        out.put_u8(b'K');
        put_chunk(&mut out, write.namespace.as_bytes());
        put_chunk(&mut out, &write.key);
        put_chunk(&mut out, &write.record.encode());
    }
    for op in &entry.namespaces {
        match op {
            NamespaceOp::Put(ns) => {
                out.put_u8(b'N');
                put_chunk(&mut out, &keys::encode_namespace(ns));
            }
            NamespaceOp::Delete(id) => {
                out.put_u8(b'D');
                put_chunk(&mut out, id.as_bytes());
            }
        }
    }
    if let Some(id) = &entry.write_id {
        out.put_u8(b'W');
        put_chunk(&mut out, id);
    }
    out
}

fn corrupt(what: &str) -> Error {
    Error::Engine(format!("change log entry is corrupt: {what}"))
}

fn take_chunk(raw: &mut Bytes) -> Result<Bytes, Error> {
    if raw.remaining() < 4 {
        return Err(corrupt("truncated length"));
    }
    let len = raw.get_u32() as usize;
    if raw.remaining() < len {
        return Err(corrupt("truncated item"));
    }
    Ok(raw.split_to(len))
}

fn text(chunk: Bytes) -> Result<String, Error> {
    String::from_utf8(chunk.to_vec()).map_err(|_| corrupt("id is not UTF-8"))
}

/// Decodes a stored log entry.
pub fn decode_entry(revision: u64, raw: Bytes) -> Result<LogEntry, Error> {
    let mut raw = raw;
    let mut entry = LogEntry {
        revision,
        writes: Vec::new(),
        namespaces: Vec::new(),
        write_id: None,
    };
    while raw.has_remaining() {
        match raw.get_u8() {
            b'K' => {
                let namespace = text(take_chunk(&mut raw)?)?;
                let key = take_chunk(&mut raw)?;
                let record = Record::decode(take_chunk(&mut raw)?)?;
                entry.writes.push(Write {
                    namespace,
                    key,
                    record,
                });
            }
            b'N' => {
                let ns = keys::decode_namespace(&take_chunk(&mut raw)?)
                    .map_err(Error::CorruptNamespace)?;
                entry.namespaces.push(NamespaceOp::Put(ns));
            }
            b'D' => entry
                .namespaces
                .push(NamespaceOp::Delete(text(take_chunk(&mut raw)?)?)),
            b'W' => entry.write_id = Some(take_chunk(&mut raw)?.to_vec()),
            _ => return Err(corrupt("unknown item tag")),
        }
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgekv_kv::{Mode, Namespace};

    #[test]
    fn round_trip() {
        let entry = LogEntry {
            revision: 9,
            writes: vec![Write {
                namespace: "0123456789abcdef0123456789abcdef".into(),
                key: Bytes::from_static(b"k\x00/\xff"),
                record: Record {
                    revision: 9,
                    hlc: 3,
                    ..Record::value(
                        Bytes::from_static(b"v"),
                        Some(Bytes::from_static(b"{}")),
                        Some(5),
                    )
                },
            }],
            namespaces: vec![
                NamespaceOp::Put(Namespace {
                    id: "n".into(),
                    title: "t".into(),
                    account: "a".into(),
                    mode: Mode::Full,
                }),
                NamespaceOp::Delete("d".into()),
            ],
            write_id: Some(b"node:1".to_vec()),
        };
        assert_eq!(decode_entry(9, encode_entry(&entry).into()).unwrap(), entry);
        assert!(decode_entry(1, Bytes::from_static(b"K\x00")).is_err());
        assert!(decode_entry(1, Bytes::from_static(b"?")).is_err());
    }
}
