//! Conversions between wire types and the KV rules' types.

use edgekv_kv::{Mode, Namespace, Record};

use crate::v1;

/// A record for the wire.
pub fn record_to_wire(record: &Record) -> v1::Record {
    v1::Record {
        value: record.value.clone(),
        metadata: record.metadata.clone(),
        expiration: record.expiration,
        revision: record.revision,
        hlc: record.hlc,
        tombstone: record.tombstone,
    }
}

/// A record from the wire.
pub fn record_from_wire(record: v1::Record) -> Record {
    Record {
        value: record.value,
        metadata: record.metadata,
        expiration: record.expiration,
        revision: record.revision,
        hlc: record.hlc,
        tombstone: record.tombstone,
    }
}

/// A namespace for the wire.
pub fn namespace_to_wire(namespace: &Namespace) -> v1::Namespace {
    v1::Namespace {
        id: namespace.id.clone(),
        title: namespace.title.clone(),
        account: namespace.account.clone(),
        mode: match namespace.mode {
            Mode::Cache => v1::NamespaceMode::Cache,
            Mode::Full => v1::NamespaceMode::Full,
        } as i32,
    }
}

/// A namespace from the wire; an unknown mode reads as `cache`.
pub fn namespace_from_wire(namespace: v1::Namespace) -> Namespace {
    let mode = match v1::NamespaceMode::try_from(namespace.mode) {
        Ok(v1::NamespaceMode::Full) => Mode::Full,
        _ => Mode::Cache,
    };
    Namespace {
        id: namespace.id,
        title: namespace.title,
        account: namespace.account,
        mode,
    }
}

/// A mode for the wire.
pub fn mode_to_wire(mode: Mode) -> i32 {
    match mode {
        Mode::Cache => v1::NamespaceMode::Cache as i32,
        Mode::Full => v1::NamespaceMode::Full as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn round_trips() {
        let record = Record {
            revision: 4,
            hlc: 9,
            ..Record::value(
                Bytes::from_static(b"v"),
                Some(Bytes::from_static(b"{}")),
                Some(7),
            )
        };
        assert_eq!(record_from_wire(record_to_wire(&record)), record);
        let ns = Namespace {
            id: "i".into(),
            title: "t".into(),
            account: "a".into(),
            mode: Mode::Full,
        };
        assert_eq!(namespace_from_wire(namespace_to_wire(&ns)), ns);
    }
}
