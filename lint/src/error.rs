//! The one error type of the lint. Every variant ends the run with exit code 2: a gate that
//! cannot read its input must say so loudly instead of passing.

use std::fmt;
use std::path::PathBuf;

/// Why the analysis could not produce a verdict.
#[derive(Debug)]
pub enum Error {
    /// Bad command line (also produced by clap itself).
    Usage(String),
    /// A malformed `hotpath.toml`, or a root/sink/allow entry that matches nothing.
    Config(String),
    /// A file that cannot be read, or a manifest that cannot be understood.
    Io { path: PathBuf, message: String },
    /// A `.rs` file of a member that syn cannot parse, or a broken suppression comment.
    Source {
        file: String,
        line: usize,
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "usage error: {m}"),
            Error::Config(m) => write!(f, "configuration error: {m}"),
            Error::Io { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Source {
                file,
                line,
                message,
            } => write!(f, "{file}:{line}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
