//! ARCHITECTURE.md's "no public store": `State` does not hand out its
//! [`ironscale_store::Store`] (or a transaction on it). Everything outside this
//! crate asks `State` for what it needs, so every write goes through the
//! writer lock and the snapshot never falls behind the database.
//!
//! Checked on the sources: no public function of this crate returns a `Store`
//! or a `Tx` or is called `store`, and no public re-export names the store
//! crate.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `name` occurs in `code` as a whole identifier.
fn names(code: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(name).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The public items of `text` (signatures of `pub fn`, and `pub use` lines)
/// that expose the store, with their line numbers.
fn store_exposures(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let is_pub_fn = [
            "pub fn ",
            "pub async fn ",
            "pub const fn ",
            "pub unsafe fn ",
        ]
        .iter()
        .any(|p| t.starts_with(p));
        if is_pub_fn {
            // The signature runs up to the body or the `;`.
            let start = i;
            let mut sig = String::new();
            loop {
                sig.push_str(lines[i]);
                sig.push(' ');
                if lines[i].contains('{') || lines[i].trim_end().ends_with(';') {
                    break;
                }
                i += 1;
                if i == lines.len() {
                    break;
                }
            }
            let sig = sig.split('{').next().unwrap_or("").to_owned();
            // What it returns (taking a store, as `State::load` does, is fine).
            let ret = sig.split_once("->").map_or("", |(_, r)| r);
            if names(ret, "Store") || names(ret, "Tx") || sig.contains(" fn store(") {
                out.push((start + 1, sig.trim().to_owned()));
            }
        } else if t.starts_with("pub use ") && t.contains("ironscale_store") {
            out.push((i + 1, t.trim().to_owned()));
        }
        i += 1;
    }
    out
}

#[test]
fn state_does_not_hand_out_its_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "sources not found in {}", src.display());
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (line, sig) in store_exposures(&text) {
            problems.push(format!("{}:{line}: {sig}", f.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "ironscale-state exposes its store (add a purposeful State method instead):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scan_sees_what_exposes_the_store() {
    assert_eq!(
        store_exposures("    pub fn store(&self) -> &Store {\n")
            .first()
            .map(|e| e.0),
        Some(1)
    );
    assert_eq!(
        store_exposures("  pub async fn begin(\n    &self,\n  ) -> Result<Tx> {\n").len(),
        1
    );
    assert_eq!(
        store_exposures("pub use ironscale_store::Store;\n").len(),
        1
    );
    // Taking a store, crate-private accessors, error types and comments are fine.
    assert!(store_exposures(
        "    pub async fn load(store: Store, settings: Settings) -> Result<State> {\n"
    )
    .is_empty());
    assert!(store_exposures("    pub(crate) fn store(&self) -> &Store {\n").is_empty());
    assert!(store_exposures(
        "    pub async fn stored_policy(&self) -> Result<Option<String>, ironscale_store::StoreError> {\n"
    )
    .is_empty());
    assert!(store_exposures("    // pub fn store(&self) -> &Store {\n").is_empty());
}
