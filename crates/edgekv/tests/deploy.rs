//! Every example config under `deploy/` parses and validates.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn configs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            configs(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn example_configs_parse() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut found = Vec::new();
    configs(&deploy, &mut found);
    assert!(
        found.len() >= 2,
        "no example configs found under {}",
        deploy.display()
    );
    for path in found {
        edgekv::config::File::load(Some(&path))
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
}
