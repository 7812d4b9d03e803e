//! Errors and warnings with the file, line and column they refer to.

use std::fmt;

/// A 1-based line and column (column counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// What kind of problem a [`PolicyError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not HuJSON at all (bad comment, missing comma, bad string, ...).
    Syntax,
    /// Valid HuJSON, but a key is unknown or a value has the wrong type.
    Schema,
    /// The policy is well formed but makes no sense (undefined group, bad
    /// CIDR, tag without owner, misplaced autogroup, ...).
    Invalid,
    /// The policy's own `tests` or `sshTests` failed.
    TestFailed,
    /// The policy is valid but cannot be used with this tailnet (for
    /// example a domain that does not belong to it).
    Tailnet,
}

/// Why a policy was rejected. `Display` gives `file:line:col: message`
/// (or `file: message` when no position applies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    pub pos: Option<Pos>,
    pub kind: ErrorKind,
    /// The message alone, worded like Tailscale's where one exists.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: {}", self.file, p.line, p.col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl PolicyError {
    pub fn new(file: &str, pos: Option<Pos>, kind: ErrorKind, message: impl Into<String>) -> Self {
        PolicyError {
            file: file.to_string(),
            pos,
            kind,
            message: message.into(),
        }
    }
}

/// Something accepted, but probably not what the author meant (for example
/// a bare user name such as `"admin"` instead of `"admin@"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWarning {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}
