//! What an edge checks before it accepts a route table.

use crate::{RouteTable, WEIGHT_TOTAL};

/// Why a table is refused; the reason goes back to control in the NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nack {
    /// The table is for another environment or tenant than the edge's.
    #[error("table is for {table_environment}/{table_tenant}; this edge is {environment}/{tenant}")]
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
    /// An entry names a build of another environment or tenant.
    #[error(
        "entry {build_id} is a build of {environment}/{tenant}, not of this edge's environment"
    )]
    ForeignEntry {
        /// The build.
        build_id: String,
        /// Its environment.
        environment: String,
        /// Its tenant.
        tenant: String,
    },
    /// The weights do not sum to 10000 basis points.
    #[error("weights sum to {sum} basis points, not 10000")]
    Weights {
        /// Their sum.
        sum: u64,
    },
    /// An entry has no endpoint, or one that is not an http(s) URL.
    #[error("entry {build_id} has no usable endpoint")]
    Endpoints {
        /// The build.
        build_id: String,
    },
    /// A build appears twice.
    #[error("build {0} appears twice")]
    Duplicate(String),
    /// The known-good build is not an entry.
    #[error("known-good build {0:?} is not an entry of the table")]
    KnownGoodMissing(String),
    /// The table has no entry.
    #[error("the table has no entry")]
    Empty,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A newer table: install it and ACK.
    Install,
    /// The table already held: ACK again, change nothing.
    AckAgain,
}

/// Checks a table against the edge's environment and tenant and the table it holds
/// (its version and content hash).
pub fn validate(
    table: &RouteTable,
    environment: &str,
    tenant: &str,
    held: Option<(u64, &str)>,
) -> Result<Verdict, Nack> {
    if table.environment != environment || table.tenant != tenant {
        return Err(Nack::WrongScope {
            table_environment: table.environment.clone(),
            table_tenant: table.tenant.clone(),
            environment: environment.to_string(),
            tenant: tenant.to_string(),
        });
    }
    if table.entries.is_empty() {
        return Err(Nack::Empty);
    }
    let mut sum: u64 = 0;
    for (i, entry) in table.entries.iter().enumerate() {
        if entry.environment != environment || entry.tenant != tenant {
            return Err(Nack::ForeignEntry {
                build_id: entry.build_id.clone(),
                environment: entry.environment.clone(),
                tenant: entry.tenant.clone(),
            });
        }
        if table.entries[..i]
            .iter()
            .any(|e| e.build_id == entry.build_id)
        {
            return Err(Nack::Duplicate(entry.build_id.clone()));
        }
        let usable = |e: &String| e.starts_with("http://") || e.starts_with("https://");
        if entry.endpoints.is_empty() || !entry.endpoints.iter().all(usable) {
            return Err(Nack::Endpoints {
                build_id: entry.build_id.clone(),
            });
        }
        sum += u64::from(entry.weight_bp);
    }
    if sum != u64::from(WEIGHT_TOTAL) {
        return Err(Nack::Weights { sum });
    }
    if table.entry(&table.known_good_build).is_none() {
        return Err(Nack::KnownGoodMissing(table.known_good_build.clone()));
    }
    match held {
        None => Ok(Verdict::Install),
        Some((version, _)) if table.version > version => Ok(Verdict::Install),
        Some((version, hash)) if table.version == version => {
            if table.content_hash() == hash {
                Ok(Verdict::AckAgain)
            } else {
                Err(Nack::Conflict(version))
            }
        }
        Some((version, _)) => Err(Nack::Older {
            offered: table.version,
            held: version,
        }),
    }
}

#[cfg(test)]
mod tests;
