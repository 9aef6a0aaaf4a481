//! The shape a newcomer relies on, checked on the source itself: each layer
//! talks only to the ones below it, and the repository points to nothing
//! outside itself (the contract and the design live in `docs/`).

use std::path::{Path, PathBuf};

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (file relative to the root, line number, line) of every line of `.rs`
/// files under `dir` that contains `needle`, leaving out `allowed` files.
fn uses(dir: &str, needle: &str, allowed: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    files_under(&root().join(dir), "rs", &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        if allowed.iter().any(|a| rel.starts_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains(needle) {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn enrichment_is_pure_and_only_the_store_knows_sled() {
    assert_eq!(
        uses("src/enrich", "crate::store", &[]),
        Vec::<String>::new()
    );
    assert_eq!(uses("src/enrich", "crate::http", &[]), Vec::<String>::new());
    assert_eq!(uses("src", "sled::", &["src/store/"]), Vec::<String>::new());
}

#[test]
fn only_the_http_layer_and_the_app_know_http() {
    let allowed = ["src/http/", "src/app.rs", "src/main.rs"];
    assert_eq!(uses("src", "crate::http", &allowed), Vec::<String>::new());
    assert_eq!(uses("src", "actix_web::", &allowed), Vec::<String>::new());
}

#[test]
fn nothing_points_outside_the_repository() {
    let mut files = vec![root().join("README.md")];
    files_under(&root().join("docs"), "md", &mut files);
    files_under(&root().join("src"), "rs", &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in ["shared/", "../shared"] {
            assert!(
                !text.contains(needle),
                "{} mentions `{needle}`, which a clone of this repository does not have",
                file.display()
            );
        }
    }
    for doc in ["docs/API.md", "docs/DESIGN.md"] {
        assert!(root().join(doc).is_file(), "{doc} is missing");
    }
}
