//! A build's stamp on error answers: the same four fields as [`v1::Stamp`], as
//! status metadata, so a caller can tell an error of the build it called (a client
//! fault it may report) from one of a build of another environment, tenant or
//! data set — or of something that is not a build at all (no stamp: a build
//! fault).

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::v1;

/// Metadata key of the answering build's id.
pub const BUILD: &str = "edgekv-build";
/// Metadata key of its environment.
pub const ENVIRONMENT: &str = "edgekv-environment";
/// Metadata key of its tenant.
pub const TENANT: &str = "edgekv-tenant";
/// Metadata key of its data set.
pub const DATA_SET: &str = "edgekv-data-set";

/// Writes a stamp into status (or response) metadata. A field that is not
/// header-safe text is left out, so the stamp then reads as absent.
pub fn write(stamp: &v1::Stamp, metadata: &mut MetadataMap) {
    for (key, value) in [
        (BUILD, &stamp.build_id),
        (ENVIRONMENT, &stamp.environment),
        (TENANT, &stamp.tenant),
        (DATA_SET, &stamp.data_set),
    ] {
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            metadata.insert(key, value);
        }
    }
}

/// Reads a stamp from status metadata: `None` unless all four fields are there.
pub fn read(metadata: &MetadataMap) -> Option<v1::Stamp> {
    let field = |key: &str| -> Option<String> {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Some(v1::Stamp {
        build_id: field(BUILD)?,
        environment: field(ENVIRONMENT)?,
        tenant: field(TENANT)?,
        data_set: field(DATA_SET)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_through_status_metadata() {
        let stamp = v1::Stamp {
            build_id: "kv-v2".into(),
            environment: "production".into(),
            tenant: "acme".into(),
            data_set: "0123456789abcdef0123456789abcdef".into(),
        };
        let mut status = tonic::Status::not_found("no such namespace");
        write(&stamp, status.metadata_mut());
        assert_eq!(read(status.metadata()), Some(stamp.clone()));
        let mut partial = tonic::Status::not_found("x");
        partial
            .metadata_mut()
            .insert(BUILD, MetadataValue::from_static("kv-v2"));
        assert_eq!(read(partial.metadata()), None, "all four or none");
        assert_eq!(read(tonic::Status::unavailable("x").metadata()), None);
    }
}
