//! Credentials: the secrets an environment's callers present, one per line in a
//! file. A build accepts any credential of its environment's file and reloads the
//! file when it changes, so a credential can be rotated without an outage (add the
//! new one, move callers over, remove the old one).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Reads the credentials of a file: one per line; blank lines and lines starting
/// with `#` are ignored.
pub fn read_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read credential file {}: {e}",
            path.display()
        ))
    })?;
    let list: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err(Error::Config(format!(
            "credential file {} holds no credential",
            path.display()
        )));
    }
    Ok(list)
}

/// The set of credentials a build accepts, held as SHA-256 hashes.
#[derive(Debug)]
pub struct Credentials {
    path: PathBuf,
    accepted: ArcSwap<HashSet<[u8; 32]>>,
    modified: parking_lot::Mutex<Option<SystemTime>>,
}

fn hash(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

impl Credentials {
    /// Loads the credentials of a file.
    pub fn load(path: &Path) -> Result<Arc<Self>> {
        let credentials = Credentials {
            path: path.to_path_buf(),
            accepted: ArcSwap::from_pointee(HashSet::new()),
            modified: parking_lot::Mutex::new(None),
        };
        credentials.reload()?;
        Ok(Arc::new(credentials))
    }

    /// Whether a presented credential is accepted.
    pub fn accepts(&self, presented: &str) -> bool {
        self.accepted.load().contains(&hash(presented))
    }

    /// Reads the file again if it changed; keeps the old set if it cannot be read.
    pub fn reload(&self) -> Result<bool> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut last = self.modified.lock();
        if modified.is_some() && *last == modified {
            return Ok(false);
        }
        let list = read_file(&self.path)?;
        self.accepted
            .store(Arc::new(list.iter().map(|c| hash(c)).collect()));
        *last = modified;
        Ok(true)
    }

    /// Polls the file every `every` and reloads it when it changes.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let credentials = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                match credentials.reload() {
                    Ok(true) => {
                        tracing::info!(path = %credentials.path.display(), "credentials reloaded")
                    }
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "keeping the previous credentials"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, "# production\nalpha\n\n").unwrap();
        let credentials = Credentials::load(&path).unwrap();
        assert!(credentials.accepts("alpha"));
        assert!(!credentials.accepts("beta"));
        // A rewrite with a new mtime is picked up.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "beta\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(later).unwrap();
        assert!(credentials.reload().unwrap());
        assert!(credentials.accepts("beta"));
        assert!(!credentials.accepts("alpha"));
        // An emptied file keeps the old set.
        std::fs::write(&path, "\n").unwrap();
        file.set_modified(later + Duration::from_secs(5)).unwrap();
        assert!(credentials.reload().is_err());
        assert!(credentials.accepts("beta"));
    }
}
