//! The layering of ARCHITECTURE.md, checked:
//!
//! - invariant 1: protocol and core crates depend (transitively) on none of tokio, sqlx,
//!   axum/hyper, reqwest (`cargo tree`, normal dependencies, host platform);
//! - the internal crate graph: each workspace crate depends only on the internal crates its
//!   entry in [`CRATES`] allows, and no allowed edge points up a layer (`cargo metadata`);
//! - invariant 4: domain types (`ironscale-types`) have no serde dependency and no
//!   `Serialize`/`Deserialize` derive;
//! - protocol and core crates do no IO: their sources name none of `std::fs`, `std::env`,
//!   tokio, sockets, processes or the clock ([`IO_NAMES`]), apart from the few uses listed in
//!   [`IO_EXCEPTIONS`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Layers, bottom up (ARCHITECTURE.md's drawing). Dependencies point down, or sideways
/// within a layer where the table below says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Protocol,
    Core,
    State,
    Edge,
    Bin,
    /// Test support (the testkit): used as a dev-dependency only.
    Test,
}
use Layer::*;

/// Every workspace crate, its layer, and the internal crates it may depend on (normal and
/// build dependencies). A crate listed here that does not exist yet is skipped, so crates
/// being added in parallel (`ironscale-http`, `ironscale-derpmap`) are already placed.
const CRATES: &[(&str, Layer, &[&str])] = &[
    // protocol: sans-IO codecs; keys at the bottom.
    ("ironscale-keys", Protocol, &[]),
    ("ironscale-wire", Protocol, &["ironscale-keys"]),
    ("ironscale-noise", Protocol, &["ironscale-keys"]),
    ("ironscale-derp", Protocol, &["ironscale-keys"]),
    ("ironscale-stun", Protocol, &[]),
    // core: pure and deterministic. `policy` never sees the wire format (invariant 2).
    ("ironscale-types", Core, &["ironscale-keys"]),
    ("ironscale-ipam", Core, &["ironscale-types"]),
    (
        "ironscale-config",
        Core,
        &["ironscale-keys", "ironscale-types"],
    ),
    (
        "ironscale-policy",
        Core,
        &["ironscale-keys", "ironscale-types"],
    ),
    (
        "ironscale-mapper",
        Core,
        &[
            "ironscale-keys",
            "ironscale-types",
            "ironscale-wire",
            "ironscale-policy",
            "ironscale-ipam",
        ],
    ),
    // state: the snapshot owner, storage, and the DERP map assembly next to them.
    (
        "ironscale-store",
        State,
        &["ironscale-keys", "ironscale-types", "ironscale-config"],
    ),
    (
        "ironscale-derpmap",
        State,
        &["ironscale-keys", "ironscale-wire", "ironscale-config"],
    ),
    (
        "ironscale-state",
        State,
        &[
            "ironscale-keys",
            "ironscale-types",
            "ironscale-wire",
            "ironscale-mapper",
            "ironscale-policy",
            "ironscale-ipam",
            "ironscale-config",
            "ironscale-store",
            "ironscale-derpmap",
        ],
    ),
    // The server's lifecycle around the state (policy load at start-up, file watch,
    // SIGHUP): beside the state, not in it, so the state keeps one clock (no polling
    // loop, no process signals); shared by serve and a doctor.
    (
        "ironscale-runtime",
        State,
        &["ironscale-config", "ironscale-state"],
    ),
    // edges: what speaks to the network. `http` is generic serving (TCP/TLS/unix).
    (
        "ironscale-http",
        Edge,
        &["ironscale-keys", "ironscale-config"],
    ),
    (
        "ironscale-control",
        Edge,
        &[
            "ironscale-keys",
            "ironscale-noise",
            "ironscale-wire",
            "ironscale-types",
            "ironscale-mapper",
            "ironscale-policy",
            "ironscale-config",
            "ironscale-state",
            "ironscale-store",
            "ironscale-http",
        ],
    ),
    (
        "ironscale-relay",
        Edge,
        &[
            "ironscale-keys",
            "ironscale-derp",
            "ironscale-stun",
            "ironscale-config",
            "ironscale-http",
        ],
    ),
    (
        "ironscale-api",
        Edge,
        &[
            "ironscale-keys",
            "ironscale-types",
            "ironscale-mapper",
            "ironscale-policy",
            "ironscale-config",
            "ironscale-state",
            "ironscale-store",
            "ironscale-http",
        ],
    ),
    // OIDC login: the relying party (discovery, JWKS, code flow, ID token checks) and its
    // pages (`/register/<id>` sends the browser to the provider, `/oidc/callback`).
    (
        "ironscale-oidc",
        Edge,
        &[
            "ironscale-types",
            "ironscale-config",
            "ironscale-state",
            "ironscale-http",
        ],
    ),
    // bin: wires everything together.
    (
        "ironscale",
        Bin,
        &[
            "ironscale-keys",
            "ironscale-wire",
            "ironscale-noise",
            "ironscale-derp",
            "ironscale-stun",
            "ironscale-types",
            "ironscale-ipam",
            "ironscale-config",
            "ironscale-policy",
            "ironscale-mapper",
            "ironscale-store",
            "ironscale-derpmap",
            "ironscale-state",
            "ironscale-runtime",
            "ironscale-http",
            "ironscale-control",
            "ironscale-relay",
            "ironscale-api",
            "ironscale-oidc",
        ],
    ),
    ("ironscale-testkit", Test, &[]),
];

const FORBIDDEN: &[&str] = &["tokio", "sqlx", "sqlx-core", "axum", "hyper", "reqwest"];

/// Names that mean IO, the environment or the clock in a pure crate's source.
const IO_NAMES: &[&str] = &[
    "std::fs",
    "fs::",
    "std::env",
    "env::",
    "tokio",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "std::process",
    "std::io::stdin",
    "std::thread::sleep",
    "SystemTime::now",
    "Instant::now",
    "Utc::now",
    "Local::now",
];

/// The IO a pure crate is allowed, by file: (crate, file under src/, name, most lines, why).
/// A new use, in these files or elsewhere, fails the test.
const IO_EXCEPTIONS: &[(&str, &str, &str, usize, &str)] = &[
    (
        "ironscale-config",
        "lib.rs",
        "std::env",
        1,
        "the loader takes the process environment for IRONSCALE_*/HEADSCALE_* overrides",
    ),
    (
        "ironscale-config",
        "lib.rs",
        "std::fs",
        1,
        "the loader reads the configuration file it is given (configtest, serve)",
    ),
    (
        "ironscale-config",
        "model.rs",
        "std::env",
        1,
        "the default data directory honours IRONSCALE_DATA_DIR",
    ),
    (
        "ironscale-config",
        "derpmap.rs",
        "std::fs",
        1,
        "derp.paths files are read where they are parsed, with file:line diagnostics",
    ),
    (
        "ironscale-config",
        "load.rs",
        "std::fs",
        1,
        "the dns.extra_records_path file is read where it is parsed, with file:line diagnostics",
    ),
    (
        "ironscale-policy",
        "conformance.rs",
        "std::fs",
        2,
        "the conformance runner reads a corpus directory (`policy conformance DIR`)",
    ),
];

fn layer_of(name: &str) -> Option<Layer> {
    CRATES.iter().find(|c| c.0 == name).map(|c| c.1)
}

fn pure_crates() -> Vec<&'static str> {
    CRATES
        .iter()
        .filter(|c| matches!(c.1, Protocol | Core))
        .map(|c| c.0)
        .collect()
}

/// A workspace package as `cargo metadata --no-deps` describes it.
#[derive(Clone, Debug)]
struct Package {
    dir: PathBuf,
    deps: Vec<Dep>,
}

#[derive(Clone, Debug)]
struct Dep {
    /// Package name (`foo-bar`).
    name: String,
    /// The name code uses (`foo_bar`, or the `package =` rename).
    code_name: String,
    /// "normal", "dev" or "build".
    kind: String,
    /// A path dependency inside the workspace.
    internal: bool,
}

impl Dep {
    fn new(name: &str, kind: &str, internal: bool) -> Dep {
        Dep {
            name: name.to_owned(),
            code_name: name.replace('-', "_"),
            kind: kind.to_owned(),
            internal,
        }
    }
}

/// Workspace packages by name.
type Workspace = BTreeMap<String, Package>;

/// The workspace from `cargo metadata --no-deps`.
fn workspace() -> Workspace {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let mut ws = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        if !p["id"].as_str().is_some_and(|id| members.contains(id)) {
            continue;
        }
        let name = p["name"].as_str().expect("package name").to_owned();
        let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest_path"));
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .map(|d| {
                let mut dep = Dep::new(
                    d["name"].as_str().expect("dependency name"),
                    d["kind"].as_str().unwrap_or("normal"),
                    d["path"].is_string(),
                );
                if let Some(r) = d["rename"].as_str() {
                    dep.code_name = r.replace('-', "_");
                }
                dep
            })
            .collect();
        let dir = manifest.parent().expect("manifest dir").to_path_buf();
        ws.insert(name, Package { dir, deps });
    }
    assert!(
        ws.contains_key("ironscale") && ws.contains_key("ironscale-keys"),
        "cargo metadata listed no ironscale crates: {:?}",
        ws.keys()
    );
    ws
}

fn tree(krate: &str, offline: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO"));
    c.args([
        "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if offline {
        c.arg("--offline");
    }
    c.output().expect("cargo tree runs")
}

#[test]
fn pure_crates_have_no_io_dependencies() {
    let mut failures = Vec::new();
    let ws = workspace();
    for krate in pure_crates() {
        if !ws.contains_key(krate) {
            continue;
        }
        let mut out = tree(krate, true);
        if !out.status.success() {
            out = tree(krate, false);
        }
        assert!(
            out.status.success(),
            "cargo tree -p {krate}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(krate),
            "cargo tree printed nothing useful for {krate}:\n{text}"
        );
        for line in text.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if FORBIDDEN.contains(&name) {
                failures.push(format!("{krate} depends (transitively) on {name}"));
            }
        }
    }
    failures.sort();
    failures.dedup();
    assert!(
        failures.is_empty(),
        "layering violations:\n{}",
        failures.join("\n")
    );
}

/// Problems of the internal crate graph `ws` against [`CRATES`].
fn graph_problems(ws: &Workspace) -> Vec<String> {
    let mut problems = Vec::new();
    // The table itself: no allowed edge points up a layer, or at test support.
    for (name, layer, allowed) in CRATES {
        for dep in *allowed {
            match layer_of(dep) {
                None => problems.push(format!("table: {name} allows {dep}, which has no entry")),
                Some(l) if l > *layer || l == Test => problems.push(format!(
                    "table: {name} ({layer:?}) allows {dep} ({l:?}), a layer above it"
                )),
                Some(_) => {}
            }
        }
    }
    for (name, pkg) in ws {
        let Some((_, layer, allowed)) = CRATES.iter().find(|c| c.0 == name) else {
            problems.push(format!(
                "crate {name} is not in the layering table: add it to CRATES in \
                 crates/ironscale/tests/layering.rs with its layer and the internal crates \
                 it may use (and to ARCHITECTURE.md)"
            ));
            continue;
        };
        for Dep {
            name: dep, kind, ..
        } in pkg.deps.iter().filter(|d| d.internal)
        {
            if dep == name {
                continue; // a crate's dev-dependency on itself (features for its tests)
            }
            if kind == "dev" {
                // Tests may use anything at or below their crate's layer, and the testkit.
                match layer_of(dep) {
                    Some(l) if l <= *layer || l == Test => {}
                    l => problems.push(format!(
                        "{name} ({layer:?}) has a dev-dependency on {dep} ({l:?}) above it"
                    )),
                }
            } else if !allowed.contains(&dep.as_str()) {
                problems.push(format!(
                    "{name} ({layer:?}) depends on {dep} ({:?}), which its layer does not \
                     allow (CRATES in crates/ironscale/tests/layering.rs)",
                    layer_of(dep)
                ));
            }
        }
    }
    problems
}

#[test]
fn internal_crate_graph_follows_the_layers() {
    let ws = workspace();
    let problems = graph_problems(&ws);
    assert!(
        problems.is_empty(),
        "internal crate graph:\n{}",
        problems.join("\n")
    );

    // The check itself catches the two ways to break it.
    let mut bad = ws.clone();
    if let Some(p) = bad.get_mut("ironscale-policy") {
        p.deps.push(Dep::new("ironscale-wire", "normal", true));
    }
    bad.insert(
        "ironscale-newcomer".into(),
        Package {
            dir: PathBuf::new(),
            deps: Vec::new(),
        },
    );
    let found = graph_problems(&bad).join("\n");
    assert!(
        found.contains("ironscale-policy (Core) depends on ironscale-wire"),
        "{found}"
    );
    assert!(
        found.contains("crate ironscale-newcomer is not in the layering table: add it"),
        "{found}"
    );
}

/// The `.rs` files under `dir`, recursively.
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

/// A source line without its `//` comment (doc comments included). Naive about `//` in
/// string literals, which only makes the scan see less.
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// Whether `name` occurs in `code` as a whole path (not inside a longer identifier).
fn names(code: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(name).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + name.len()..].chars().next();
        // `fs::` after `std::` is reported as `std::fs`; a name ending in `::` needs no check
        // after it.
        let starts = !before.is_some_and(|c| ident(c) || c == ':');
        let ends = name.ends_with("::") || !after.is_some_and(ident);
        starts && ends
    })
}

/// (file relative to src/, name, line number, line) for every IO name in a crate's sources.
fn io_uses(src: &Path) -> Vec<(String, &'static str, usize, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut uses = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let rel = f
            .strip_prefix(src)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        for (i, line) in text.lines().enumerate() {
            let code = code_of(line);
            // The first (most specific) name that matches names the use.
            if let Some(n) = IO_NAMES.iter().find(|n| names(code, n)) {
                let n = match *n {
                    "fs::" => "std::fs",
                    "env::" => "std::env",
                    "TcpStream" | "TcpListener" | "UdpSocket" => "std::net sockets",
                    other => other,
                };
                uses.push((rel.clone(), n, i + 1, line.trim().to_owned()));
            }
        }
    }
    uses
}

#[test]
fn pure_crates_do_no_io_in_their_sources() {
    let ws = workspace();
    let mut problems = Vec::new();
    for krate in pure_crates() {
        let Some(Package { dir, .. }) = ws.get(krate) else {
            continue;
        };
        let mut counts: BTreeMap<(String, &str), Vec<String>> = BTreeMap::new();
        for (file, name, line, text) in io_uses(&dir.join("src")) {
            counts
                .entry((file.clone(), name))
                .or_default()
                .push(format!("{krate}/src/{file}:{line}: {name}: {text}"));
        }
        for ((file, name), lines) in counts {
            let allowed = IO_EXCEPTIONS
                .iter()
                .find(|e| e.0 == krate && e.1 == file && e.2 == name)
                .map_or(0, |e| e.3);
            if lines.len() > allowed {
                problems.push(format!(
                    "{} use(s) of {name} in {krate}/src/{file} (allowed: {allowed}):\n  {}",
                    lines.len(),
                    lines.join("\n  ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "IO in pure crates (protocol and core take data, time and randomness as \
         parameters; see IO_EXCEPTIONS in crates/ironscale/tests/layering.rs):\n{}",
        problems.join("\n")
    );

    // The scan sees the forms IO takes in source, and not what only looks like it.
    assert!(names("let t = std::fs::read(p)?;", "std::fs"));
    assert!(names("use std::{env, fs};  fs::read(p)", "fs::"));
    assert!(names("let now = Instant::now();", "Instant::now"));
    assert!(names("tokio::spawn(f);", "tokio"));
    assert!(!names("let d = DerpMapFile::default();", "File::"));
    assert!(!names("let x = my_fs::read();", "fs::"));
    assert!(!names("let _ = ironscale_tokio_free;", "tokio"));
    assert_eq!(code_of("let a = 1; // std::fs is fine here"), "let a = 1; ");
}

#[test]
fn domain_types_are_not_serialisable() {
    let ws = workspace();
    let dir = &ws
        .get("ironscale-types")
        .expect("ironscale-types exists")
        .dir;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("types manifest");
    let mut problems = Vec::new();
    // No serde (or serde_derive, serde_with, ...) among its dependencies.
    let mut section = String::new();
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_owned();
            continue;
        }
        let key = t.split(['=', '.', ' ']).next().unwrap_or("");
        if section.contains("dependencies") && !section.contains("dev-") && key.contains("serde") {
            problems.push(format!("Cargo.toml {section}: {t}"));
        }
    }
    // No derive or impl of Serialize/Deserialize, no serde path in the sources.
    let mut files = Vec::new();
    rust_files(&dir.join("src"), &mut files);
    assert!(!files.is_empty(), "no sources in {}", dir.display());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, line) in text.lines().enumerate() {
            let code = code_of(line);
            if ["serde", "Serialize", "Deserialize"]
                .iter()
                .any(|n| names(code, n))
            {
                problems.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "ironscale-types must not be serialisable (invariant 4; each boundary converts \
         explicitly):\n{}",
        problems.join("\n")
    );
    assert!(names("#[derive(Clone, Serialize)]", "Serialize"));
    assert!(!names("struct SerializeLater;", "Serialize"));
}

/// Dependencies allowed to go unnamed in the code (a feature switch, a `links` crate, or one
/// kept for work landing in parallel): (crate, dependency, why).
const UNNAMED_DEPS: &[(&str, &str, &str)] = &[];

/// Whether `name` occurs in `text` as a whole identifier.
fn mentions(text: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(ident)
            && !text[i + name.len()..].chars().next().is_some_and(ident)
    })
}

/// Unused dependencies of one package: a normal or build dependency must be named in `src/`
/// or `build.rs`, a dev-dependency anywhere (`src/` tests, `tests/`, `benches/`,
/// `examples/`). A normal dependency named only by tests belongs in `[dev-dependencies]`.
fn unused_deps(krate: &str, pkg: &Package) -> Vec<String> {
    let read_all = |sub: &str| -> String {
        let p = pkg.dir.join(sub);
        let mut files = Vec::new();
        if p.is_file() {
            files.push(p);
        } else if p.is_dir() {
            rust_files(&p, &mut files);
        }
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let lib = read_all("src") + &read_all("build.rs");
    let tests = ["tests", "benches", "examples"].map(read_all).join("\n");
    let mut problems = Vec::new();
    for d in &pkg.deps {
        if d.name == krate || UNNAMED_DEPS.iter().any(|u| u.0 == krate && u.1 == d.name) {
            continue;
        }
        let in_lib = mentions(&lib, &d.code_name);
        let in_tests = mentions(&tests, &d.code_name);
        match d.kind.as_str() {
            "dev" if !in_lib && !in_tests => {
                problems.push(format!("{krate}: dev-dependency {} is unused", d.name));
            }
            "dev" => {}
            _ if in_lib => {}
            _ if in_tests => problems.push(format!(
                "{krate}: {} is used only by tests: move it to [dev-dependencies]",
                d.name
            )),
            kind => problems.push(format!("{krate}: {kind} dependency {} is unused", d.name)),
        }
    }
    problems
}

#[test]
fn no_unused_dependencies() {
    let ws = workspace();
    let problems: Vec<String> = ws
        .iter()
        .flat_map(|(name, pkg)| unused_deps(name, pkg))
        .collect();
    assert!(
        problems.is_empty(),
        "unused dependencies (remove them, or list them in UNNAMED_DEPS in \
         crates/ironscale/tests/layering.rs with the reason):\n{}",
        problems.join("\n")
    );
    // The check sees an unused dependency, and one used only by tests.
    let mut pkg = ws
        .get("ironscale-control")
        .expect("ironscale-control")
        .clone();
    pkg.deps
        .push(Dep::new("not-a-crate-anyone-uses", "normal", false));
    // Its server tests make their databases in temporary directories; its code does not.
    pkg.deps.push(Dep::new("tempfile", "normal", false));
    let found = unused_deps("ironscale-control", &pkg).join("\n");
    assert!(
        found.contains("normal dependency not-a-crate-anyone-uses is unused"),
        "{found}"
    );
    assert!(
        found.contains("tempfile is used only by tests: move it to [dev-dependencies]"),
        "{found}"
    );
    assert!(mentions("use a::b; tokio::spawn(x)", "tokio"));
    assert!(!mentions("tokio_util::codec", "tokio"));
}

/// Names that draw randomness from the environment (ARCHITECTURE.md invariant 5).
const RNG_NAMES: &[&str] = &[
    "rand::rng",
    "thread_rng",
    "OsRng",
    "getrandom",
    "rand::random",
];

/// Invariant 5: core crates take the clock and the RNG as parameters (the clock names are in
/// [`IO_NAMES`], checked for every pure crate above). Protocol crates may draw from the OS RNG
/// for what must be secret: key generation (`ironscale-keys`) and box nonces (`ironscale-derp`).
#[test]
fn core_crates_take_randomness_as_a_parameter() {
    let ws = workspace();
    let mut problems = Vec::new();
    for krate in CRATES.iter().filter(|c| c.1 == Core).map(|c| c.0) {
        let Some(Package { dir, .. }) = ws.get(krate) else {
            continue;
        };
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source readable");
            for (n, line) in text.lines().enumerate() {
                let code = code_of(line);
                for name in RNG_NAMES {
                    if names(code, name) {
                        problems.push(format!(
                            "{}:{}: {name}: {}",
                            f.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "core crates draw randomness themselves (take an `impl Rng` parameter):\n{}",
        problems.join("\n")
    );
    assert!(names("let mut r = rand::rng();", "rand::rng"));
}

/// Invariant 3: each format has one owner. Direct dependencies on the format's crates, by
/// workspace crate (normal and build dependencies; tests may use anything).
const FORMAT_OWNERS: &[(&str, &[&str], &[&str])] = &[
    // SQL: only the store.
    ("sqlx", &["sqlx", "sqlx-core"], &["ironscale-store"]),
    // YAML: the config loader, and the CLI's `-o yaml` output in the binary.
    (
        "YAML",
        &[
            "saphyr",
            "saphyr-parser",
            "serde-saphyr",
            "serde_yaml",
            "yaml_serde",
            "serde_yml",
        ],
        &["ironscale-config", "ironscale"],
    ),
    // HuJSON/JSON with comments: the policy parser only.
    ("HuJSON", &["jsonc-parser", "json5"], &["ironscale-policy"]),
];

#[test]
fn formats_have_one_owner() {
    let ws = workspace();
    let mut problems = Vec::new();
    for (format, crates, owners) in FORMAT_OWNERS {
        for (name, pkg) in &ws {
            for d in &pkg.deps {
                if d.kind != "dev"
                    && crates.contains(&d.name.as_str())
                    && !owners.contains(&name.as_str())
                {
                    problems.push(format!(
                        "{name} depends on {} ({format} belongs to {owners:?})",
                        d.name
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scan sees the owners' own dependencies.
    for (owner, dep) in [
        ("ironscale-store", "sqlx"),
        ("ironscale-config", "saphyr-parser"),
    ] {
        assert!(
            ws.get(owner)
                .is_some_and(|p| p.deps.iter().any(|d| d.name == dep)),
            "{owner} should depend on {dep}: is the scan reading dependencies?"
        );
    }
    // Invariant 2: the crates that may see both domain and wire types (the CRATES table lets
    // them depend on both) are the mapper, and state/control for register responses (and the
    // binary, which wires everything together); policy never sees the wire format.
    let both: BTreeSet<&str> = CRATES
        .iter()
        .filter(|c| c.2.contains(&"ironscale-wire") && c.2.contains(&"ironscale-types"))
        .map(|c| c.0)
        .collect();
    let allowed: BTreeSet<&str> = [
        "ironscale-mapper",
        "ironscale-state",
        "ironscale-control",
        "ironscale",
    ]
    .into();
    assert!(
        both.is_subset(&allowed),
        "invariant 2: only {allowed:?} see both wire and domain types; the table lets {:?}",
        both.difference(&allowed).collect::<Vec<_>>()
    );
    let policy = CRATES
        .iter()
        .find(|c| c.0 == "ironscale-policy")
        .expect("policy row");
    assert!(
        !policy.2.contains(&"ironscale-wire"),
        "invariant 2: policy never sees the wire format"
    );
}
