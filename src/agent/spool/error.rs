//! Why a spool operation failed ([`SpoolError`]), in words that say what to
//! do, and the protocol error code each failure is reported with.

use std::io;

use crate::wire::protocol::ErrorCode;

/// Why a spool operation failed; [`SpoolError::code`] maps it onto the wire.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The announced SHA-256 is not 64 hex digits.
    #[error("sha256 must be the file's SHA-256 as 64 hex digits, got {0:?}")]
    BadDigest(String),
    /// A body whose `send` came without a digest ended without one.
    #[error(
        "the body ended without the file's digest (a send without sha256 must send a digest frame); nothing was stored: send the file again"
    )]
    MissingDigest,
    /// A compressed body could not be decompressed (malformed, a window
    /// over the limit, or cut off mid-frame); nothing is stored.
    #[error("the compressed body is not valid zstd: {0}; nothing was stored, send it again")]
    BadEncoding(String),
    /// The name is not a plain, safe file name.
    #[error("invalid file name {name:?}: {reason}")]
    BadName {
        /// The name as received.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file is larger than `max_file_size`.
    #[error("{size} bytes is over this agent's max_file_size of {max} bytes")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Not enough space would be left.
    #[error(
        "not enough space: {size} bytes would leave less than the {min_free} bytes that must stay free ({free} bytes free)"
    )]
    NoSpace {
        /// Declared size.
        size: u64,
        /// Space free for this file now.
        free: u64,
        /// `min_free_space`.
        min_free: u64,
    },
    /// The disk filled up before the body's blocks could be reserved, or
    /// while writing where they cannot be.
    #[error("the spool's disk is full")]
    DiskFull,
    /// A different file of that name exists.
    #[error("{name:?} already exists with different content")]
    Exists {
        /// The name.
        name: String,
    },
    /// A file of that name exists, and the `send` had no digest to tell
    /// whether it is the same file.
    #[error(
        "{name:?} already exists; send again with the file's sha256 to find out whether it is the same file"
    )]
    ExistsUnchecked {
        /// The name.
        name: String,
    },
    /// No such file.
    #[error("no file named {name:?} in the spool")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The body length differs from the declared one.
    #[error("body is {got}{more} bytes but {declared} were declared", more = if *.over { "+" } else { "" })]
    SizeMismatch {
        /// Declared size.
        declared: u64,
        /// Bytes received (at least, when `over`).
        got: u64,
        /// More than `got` bytes were on the way.
        over: bool,
    },
    /// The body's digest differs from the declared one.
    #[error("SHA-256 of the body is {computed} but {declared} was declared")]
    DigestMismatch {
        /// Declared digest.
        declared: String,
        /// Digest of what arrived.
        computed: String,
    },
    /// Any other I/O failure.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error (in the message, so not its `source()`).
        error: io::Error,
    },
}

impl SpoolError {
    /// The protocol error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            SpoolError::BadName { .. } => ErrorCode::BadName,
            SpoolError::TooLarge { .. } => ErrorCode::TooLarge,
            SpoolError::NoSpace { .. } | SpoolError::DiskFull => ErrorCode::NoSpace,
            SpoolError::Exists { .. } | SpoolError::ExistsUnchecked { .. } => ErrorCode::Exists,
            SpoolError::NotFound { .. } => ErrorCode::NotFound,
            SpoolError::SizeMismatch { .. } => ErrorCode::SizeMismatch,
            SpoolError::DigestMismatch { .. } => ErrorCode::DigestMismatch,
            SpoolError::Io { .. } => ErrorCode::Internal,
            SpoolError::BadEncoding(_) | SpoolError::BadDigest(_) | SpoolError::MissingDigest => {
                ErrorCode::BadRequest
            }
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> SpoolError {
        let what = what.into();
        move |error| {
            if error.kind() == io::ErrorKind::StorageFull {
                SpoolError::DiskFull
            } else {
                SpoolError::Io { what, error }
            }
        }
    }
}
