//! A small error type: the harness reports failures as human-readable text (with log tails attached).

use std::fmt;

/// An error from the harness; the message carries everything needed to understand the failure.
#[derive(Debug)]
pub struct Error {
    msg: String,
    fatal: bool,
}

impl Error {
    /// Creates an error from a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error {
            msg: message.into(),
            fatal: false,
        }
    }

    /// An error that makes [`crate::wait_until`] stop polling at once (e.g. the process died).
    pub fn fatal(message: impl Into<String>) -> Self {
        Error {
            msg: message.into(),
            fatal: true,
        }
    }

    /// True for [`Error::fatal`] errors.
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }

    /// The full message.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::msg(format!("i/o error: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::msg(format!("json error: {e}"))
    }
}

/// Result alias used throughout the harness.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds context to errors.
pub trait Context<T> {
    /// Prefixes the error message with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// Like [`Context::context`], computing the prefix lazily.
    fn with_context<D: fmt::Display, F: FnOnce() -> D>(self, f: F) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::msg(format!("{what}: {e}")))
    }
    fn with_context<D: fmt::Display, F: FnOnce() -> D>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::msg(format!("{}: {e}", f())))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::msg(what.to_string()))
    }
    fn with_context<D: fmt::Display, F: FnOnce() -> D>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::msg(f().to_string()))
    }
}

/// Returns early with an [`Error`] built by `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::msg(format!($($arg)*)))
    };
}

/// Returns early with a fatal [`Error`] (stops [`crate::wait_until`] at once).
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::Error::fatal(format!($($arg)*)))
    };
}
