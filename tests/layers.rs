//! The layers point one way: the stores and the authorization policy know
//! nothing of the request flow, and the policy nothing of how it is configured.

use std::fs;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Files under `src/<layer>` that name `crate::<forbidden>` outside comments.
fn offenders(layer: &str, forbidden: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(layer);
    let mut files = Vec::new();
    sources(&root, &mut files);
    let needle = format!("crate::{forbidden}");
    files
        .into_iter()
        .filter(|file| {
            fs::read_to_string(file)
                .expect("source file")
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .any(|line| {
                    line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                        .any(|word| word == needle || word.starts_with(&format!("{needle}::")))
                })
        })
        .map(|file| file.display().to_string())
        .collect()
}

#[test]
fn sessions_know_nothing_of_the_flow() {
    assert_eq!(offenders("session", "flow"), Vec::<String>::new());
}

#[test]
fn authorization_knows_nothing_of_the_flow_or_the_configuration() {
    assert_eq!(offenders("authz", "flow"), Vec::<String>::new());
    assert_eq!(offenders("authz", "config"), Vec::<String>::new());
}
