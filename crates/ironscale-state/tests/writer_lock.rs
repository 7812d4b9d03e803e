//! ARCHITECTURE.md invariant 6: every state mutation holds the one writer
//! lock while it writes the store (then swaps in the next snapshot).
//!
//! Checked on the sources: every function of this crate whose body writes
//! through the store (a store write operation, or `begin()` of a
//! transaction) either takes the writer lock itself (`write.lock()`) or is
//! named `*_locked` (its callers hold it), and every call of a `*_locked`
//! function is made from a function that holds the lock or is `*_locked`
//! itself. Test modules are skipped.

use std::path::{Path, PathBuf};

/// Store operations that write (or open a transaction that will).
const WRITES: &[&str] = &[
    "create_user",
    "rename_user",
    "update_user",
    "delete_user",
    "insert_node",
    "update_node",
    "update_node_fields",
    "update_node_presence",
    "delete_node",
    "create_preauth_key",
    "mark_preauth_key_used",
    "claim_preauth_key",
    "expire_preauth_key",
    "delete_preauth_key",
    "create_api_key",
    "expire_api_key",
    "delete_api_key",
    "touch_api_key",
    "kv_set",
    "kv_delete",
    "begin",
];

/// Store writes that are not state mutations and need not hold the lock,
/// with the reason. Every store operation is a read, in [`WRITES`], or here
/// (`every_store_write_is_classified`).
const UNLOCKED_WRITES: &[(&str, &str)] = &[(
    "append_audit",
    "the audit log is in no snapshot; a refused request is recorded without waiting for a change in progress",
)];

/// Store operations that only read (by name).
fn is_read(op: &str) -> bool {
    ["get_", "list_", "find_"].iter().any(|p| op.starts_with(p)) || op == "kv_get"
}

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

/// A function: its name, first line, and body text (comments removed).
struct Func {
    name: String,
    line: usize,
    body: String,
}

/// The functions of `text` outside `#[cfg(test)]` modules, by brace matching
/// on comment-stripped lines (string literals holding braces are rare here
/// and would only shift a body's end).
fn functions(text: &str) -> Vec<Func> {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect();
    // Cut test modules: from `#[cfg(test)]` followed by `mod` to the end of the file
    // (this crate keeps them last).
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    let lines = &lines[..end];
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let after_fn = t
            .find("fn ")
            .filter(|&p| {
                let head = &t[..p];
                head.split_whitespace()
                    .all(|w| matches!(w, "pub" | "pub(crate)" | "async" | "const" | "unsafe"))
            })
            .map(|p| &t[p + 3..]);
        let Some(rest) = after_fn else {
            i += 1;
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let start = i;
        let mut depth = 0i32;
        let mut body = String::new();
        let mut opened = false;
        while i < lines.len() {
            for c in lines[i].chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            body.push_str(lines[i]);
            body.push('\n');
            if (opened && depth <= 0) || (!opened && lines[i].trim_end().ends_with(';')) {
                break;
            }
            i += 1;
        }
        out.push(Func {
            name,
            line: start + 1,
            body,
        });
        i += 1;
    }
    out
}

/// Whether `body` calls `.op(` on something reached through the store: the
/// call chain before it (back to the statement start) names `store`.
fn writes_store(body: &str) -> Option<&'static str> {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let flat = flat.replace(" .", ".").replace(". ", ".");
    WRITES.iter().copied().find(|op| {
        let pat = format!(".{op}(");
        flat.match_indices(&pat).any(|(i, _)| {
            let before = &flat[..i];
            let stmt = before.rsplit([';', '{', '}']).next().unwrap_or(before);
            stmt.contains("store") || stmt.trim_start().starts_with("tx") || stmt.contains(" tx")
        })
    })
}

fn holds_lock(f: &Func) -> bool {
    f.body.contains("write.lock()") || f.name.ends_with("_locked")
}

fn problems_in(file: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in functions(text) {
        if let Some(op) = writes_store(&f.body) {
            if !holds_lock(&f) {
                out.push(format!(
                    "{file}:{}: fn {} writes the store (`{op}`) without the writer lock (take `self.inner.write.lock()` or name it `*_locked`)",
                    f.line, f.name
                ));
            }
        }
        // Calls in the body (after the signature's opening brace).
        let inner = f.body.split_once('{').map_or("", |(_, b)| b);
        let calls_locked = inner.contains("_locked(");
        if calls_locked && !holds_lock(&f) {
            out.push(format!(
                "{file}:{}: fn {} calls a `*_locked` function without holding the writer lock",
                f.line, f.name
            ));
        }
    }
    out
}

#[test]
fn store_writes_hold_the_writer_lock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "sources not found in {}", src.display());
    let mut problems = Vec::new();
    let mut writers = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        writers += functions(&text)
            .iter()
            .filter(|x| writes_store(&x.body).is_some())
            .count();
        problems.extend(problems_in(&f.display().to_string(), &text));
    }
    assert!(
        writers >= 8,
        "the scan found only {writers} store writers: is it still seeing them?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The store's `operations!` list, read from its source: each operation is
/// a read, a locked write or a listed exception, so a new write cannot slip
/// past the scan by being missing from [`WRITES`].
#[test]
fn every_store_write_is_classified() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ironscale-store/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    let (_, list) = text
        .split_once("\noperations! {")
        .expect("the store's operations! list");
    let list = list.split("\n}\n").next().unwrap_or(list);
    let ops: Vec<&str> = list
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("fn "))
        .filter_map(|l| l.split('(').next())
        .collect();
    assert!(ops.len() > 20, "operations not found: {ops:?}");
    let unclassified: Vec<&str> = ops
        .iter()
        .copied()
        .filter(|op| {
            !is_read(op) && !WRITES.contains(op) && !UNLOCKED_WRITES.iter().any(|(u, _)| u == op)
        })
        .collect();
    assert!(
        unclassified.is_empty(),
        "store operations neither reads nor in WRITES/UNLOCKED_WRITES: {unclassified:?}"
    );
    for (u, _) in UNLOCKED_WRITES {
        assert!(ops.contains(u), "{u} is no store operation");
    }
}

#[test]
fn the_scan_sees_unlocked_writes() {
    let bad = "impl State {\n    pub async fn rename(&self) -> Result<()> {\n        self.inner\n            .store\n            .update_node(&n)\n            .await?;\n        Ok(())\n    }\n}\n";
    assert_eq!(
        problems_in("x.rs", bad).len(),
        1,
        "{:?}",
        problems_in("x.rs", bad)
    );
    let tx = "    async fn f(&self) {\n        let mut tx = self.store().begin().await?;\n        tx.insert_node(&n).await?;\n    }\n";
    assert_eq!(problems_in("x.rs", tx).len(), 1);
    let locked = "    pub async fn rename(&self) {\n        let _w = self.inner.write.lock().await;\n        self.inner.store.update_node(&n).await?;\n    }\n";
    assert!(problems_in("x.rs", locked).is_empty());
    let named = "    pub(crate) async fn save_node_locked(&self, n: Node) {\n        self.inner.store.update_node(&n).await?;\n    }\n";
    assert!(problems_in("x.rs", named).is_empty());
    let caller =
        "    pub async fn expire(&self) {\n        self.save_node_locked(n).await\n    }\n";
    assert_eq!(problems_in("x.rs", caller).len(), 1);
    // Reads and in-memory updates are not store writes.
    let read = "    pub async fn list(&self) {\n        self.inner.store.list_preauth_keys(None).await?;\n        let mut ix = self.index.update(&a);\n    }\n";
    assert!(problems_in("x.rs", read).is_empty());
}
