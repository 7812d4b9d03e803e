//! Diagnostics: every problem found in a configuration, with file, line and key.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Works, but probably not as intended (unknown or deprecated key, unsupported range).
    Warning,
    /// Worth knowing (a key accepted for Headscale compatibility but ignored, a default chosen).
    Info,
}

/// One problem in a configuration (or in a file it names, such as a DERP map).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file the problem is in; `None` when it comes from the environment or defaults.
    pub file: Option<PathBuf>,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// Dotted key, e.g. `prefixes.v4` (may be empty for syntax errors).
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `config.yaml:12: prefixes.v4: "100.64.0.0/33" is not a valid IPv4 prefix`;
    /// warnings and notes say so after the location.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(p), Some(l)) => write!(f, "{}:{l}: ", p.display())?,
            (Some(p), None) => write!(f, "{}: ", p.display())?,
            (None, _) => {}
        }
        match self.severity {
            Severity::Error => {}
            Severity::Warning => f.write_str("warning: ")?,
            Severity::Info => f.write_str("note: ")?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Render diagnostics one per line, errors first, then by file and line.
pub fn render(diags: &[Diagnostic]) -> String {
    let mut v: Vec<&Diagnostic> = diags.iter().collect();
    v.sort_by(|a, b| (a.severity, &a.file, a.line).cmp(&(b.severity, &b.file, b.line)));
    let mut out = String::new();
    for d in v {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out
}
