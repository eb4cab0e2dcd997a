//! The messages of the protocol: the JSON headers of requests and replies,
//! the body encodings, and the error codes a refusal carries. How they are
//! framed and sent is in the parent module; `docs/protocol.md` describes
//! both.

use serde::{Deserialize, Serialize};

/// A request from a workstation to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answered with [`Reply::Pong`].
    Ping,
    /// Store a file. The agent answers [`Reply::Continue`] (then the body
    /// follows), [`Reply::Stored`] with `unchanged` (identical file already
    /// there, no body is sent) or [`Reply::Error`].
    Send {
        /// File name in the spool (a plain name, no path).
        name: String,
        /// Exact body length in bytes.
        size: u64,
        /// Lower-case hex SHA-256 of the whole file. Absent: the client is
        /// still hashing and sends the digest inside the body, in a digest
        /// frame (see [`Connection::write_digest`](super::Connection::write_digest)); the upload is resumable
        /// from then on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// Replace an existing file with different content.
        #[serde(default)]
        overwrite: bool,
        /// The body compression the client offers; the agent accepts it in
        /// [`Reply::Continue`]. `size` and `sha256` stay those of the file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<Encoding>,
        /// The client can continue an interrupted upload of this file from
        /// the offset [`Reply::Continue`] gives.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resume: bool,
        /// The client gives its final word: after the body the agent
        /// verifies it and answers [`Reply::Verified`], and stores the file
        /// only on [`Request::Commit`]. A client interrupted before that
        /// (Ctrl-C) never gets a file stored, whatever the network still
        /// delivers of its body.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        confirm: bool,
        /// The client reads [`Reply::Progress`] during the body: how much
        /// of the file the agent has received.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        progress: bool,
        /// The sender's print choice: `true` "upload and print", `false`
        /// "upload only"; absent, the agent's `auto_print` decides. The
        /// agent honours it within its own rules (the bed, the order of
        /// files, `remote_start`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        print: Option<bool>,
    },
    /// The client's final word on a body the agent answered with
    /// [`Reply::Verified`]: store it. Answered with [`Reply::Stored`].
    Commit,
    /// Start a print of a file the agent forwarded (a person's act: the bed
    /// is clear); answered with [`Reply::Printing`].
    Print {
        /// File name; absent: the oldest file waiting to be started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// List the spool's files with their forwarding state; answered with
    /// [`Reply::Files`].
    List,
    /// Fetch a file: [`Reply::Body`], the body, then [`Reply::Complete`].
    Get {
        /// File name in the spool.
        name: String,
    },
    /// Remove a file from the spool; answered with [`Reply::Deleted`].
    Delete {
        /// File name in the spool.
        name: String,
    },
    /// Agent health and spool figures; answered with [`Reply::Status`].
    Status,
    /// Follow the printer (and one file): answered with [`Reply::Watching`]
    /// at once, then again on every change and at least every
    /// [`WATCH_HEARTBEAT`](super::WATCH_HEARTBEAT), until the client closes the
    /// connection (anything it sends ends the watch and the connection).
    Watch {
        /// A file to follow too: its row as `list` shows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// First pairing message, only on a [`PAIR_ALPN`](super::PAIR_ALPN) connection: answered
    /// with [`Reply::PairChallenge`].
    Pair {
        /// The code's first group, which names the agent's pairing ticket.
        ticket: String,
        /// The client name the workstation asks for.
        name: String,
        /// The workstation's SPAKE2 message (hex).
        spake: String,
    },
    /// Second pairing message: the workstation's key confirmation and its
    /// certificate request; answered with [`Reply::Paired`].
    PairConfirm {
        /// PKCS#10 certificate signing request (PEM).
        csr: String,
        /// HMAC proving the workstation derived the same key (hex).
        confirm: String,
    },
    /// A new certificate for the connection's own client name, for a new
    /// key: answered with [`Reply::Renewed`].
    Renew {
        /// PKCS#10 certificate signing request (PEM).
        csr: String,
    },
}

/// One file in the spool as listed by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: u64,
    /// Forwarding state (`received`, `uploading`, `uploaded`, `printing`,
    /// `printed`, `failed`, `skipped`); absent when not forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why it failed or was skipped, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Figures reported by [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Agent version (Cargo package version).
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Uploads being received right now.
    pub incoming: u64,
    /// Files ready in the spool.
    pub ready: u64,
    /// Total bytes of the ready files.
    pub ready_bytes: u64,
    /// Bytes free for the agent on the spool's file system.
    pub free_bytes: u64,
    /// Largest file the agent accepts.
    pub max_file_size: u64,
    /// Common name of the certificate this connection authenticated with.
    pub client: String,
    /// Printer state from OctoPrint, or why forwarding is off or failing.
    #[serde(default)]
    pub printer: String,
    /// Files waiting to be uploaded or printed.
    #[serde(default)]
    pub queued: u64,
    /// Why files wait for a person, when they do (the bed may hold the
    /// last print).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<String>,
}

/// The printer as the agent last saw it, for [`Reply::Watching`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrinterReport {
    /// OctoPrint's state text ("Operational", "Printing", ...), or why
    /// forwarding is off or failing.
    pub text: String,
    /// The agent reaches OctoPrint and OctoPrint reaches the printer.
    #[serde(default)]
    pub connected: bool,
    /// OctoPrint's state flags as it reports them (`operational`,
    /// `printing`, `paused`, `error`, `ready`, ...).
    #[serde(default)]
    pub flags: std::collections::BTreeMap<String, bool>,
    /// The selected job's file (its path in OctoPrint's storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// How far the job has come, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<f64>,
    /// Seconds the job has been printing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub print_time: Option<u64>,
    /// OctoPrint's estimate of the seconds left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub print_time_left: Option<u64>,
    /// Heaters by OctoPrint's names (`tool0`, `bed`, ...), in °C.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub temperatures: std::collections::BTreeMap<String, Temperature>,
}

/// One heater's temperatures, in °C.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// What it measures.
    pub actual: Option<f64>,
    /// What it is set to.
    pub target: Option<f64>,
}

/// OctoPrint's state flags that mean a job is running: printing, paused,
/// or on its way to or from either. The agent reads a busy printer by them;
/// `watch` clients do too.
pub const BUSY_FLAGS: &[&str] = &[
    "printing",
    "paused",
    "pausing",
    "cancelling",
    "finishing",
    "resuming",
];

impl PrinterReport {
    /// Whether a job is running (any of [`BUSY_FLAGS`]).
    pub fn busy(&self) -> bool {
        BUSY_FLAGS
            .iter()
            .any(|f| self.flags.get(*f).copied().unwrap_or(false))
    }
}

/// What a [`Request::Watch`] reports, each time something changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Watched {
    /// The printer.
    pub printer: PrinterReport,
    /// Files waiting to be uploaded or printed.
    #[serde(default)]
    pub queued: u64,
    /// Why files wait for a person, when they do (as in `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<String>,
    /// The watched file's row as `list` shows it; absent when no file was
    /// named or the agent does not know it (yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileEntry>,
}

/// A reply from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Ping`].
    Pong,
    /// The agent accepts the announced body: send it now, compressed with
    /// `encoding` if it is set (it is only set when the client offered it).
    Continue {
        /// The body compression to use, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<Encoding>,
        /// Bytes of the file the agent already holds from an interrupted
        /// upload (only when the client offered `resume`): the body is the
        /// file from this offset on, `size - offset` bytes before compression.
        #[serde(default, skip_serializing_if = "is_zero")]
        offset: u64,
        /// The agent keeps what arrives of this body if the upload is
        /// interrupted, so that sending the file again resumes: from now
        /// on, or (for a `send` without `sha256`) once the digest arrives.
        /// False when the client did not offer `resume` or the agent keeps
        /// no partial uploads (`keep_partial_uploads = "0s"`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keeps: bool,
    },
    /// During a body sent with `progress`: bytes of the file the agent
    /// holds so far (the resume offset included), sent at most every
    /// `PROGRESS_INTERVAL`.
    Progress {
        /// Bytes of the file received and handed to the disk.
        received: u64,
    },
    /// After a body sent with `confirm`: it arrived whole, its size and
    /// digest match and it is on the disk, not yet stored. The agent waits
    /// for [`Request::Commit`]; without it the file is not stored (it stays
    /// as a resumable partial upload where the agent keeps those).
    Verified {
        /// SHA-256 the agent computed over the body.
        sha256: String,
    },
    /// Answer to [`Request::Print`]: OctoPrint started the file.
    Printing {
        /// File name.
        name: String,
    },
    /// The file is durably in the spool (fsynced and renamed into place).
    Stored {
        /// File name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// SHA-256 the agent computed over what it stored.
        sha256: String,
        /// The identical file was already there; no body was transferred.
        #[serde(default)]
        unchanged: bool,
        /// A different file of that name was replaced (`overwrite`).
        #[serde(default)]
        replaced: bool,
    },
    /// Answer to [`Request::List`], sorted by name.
    Files {
        /// The ready files.
        files: Vec<FileEntry>,
    },
    /// Start of a [`Request::Get`] body of `size` bytes.
    Body {
        /// File name.
        name: String,
        /// Size in bytes.
        size: u64,
    },
    /// End of a [`Request::Get`] body, with the digest of what was sent.
    Complete {
        /// Lower-case hex SHA-256 of the body.
        sha256: String,
    },
    /// Answer to [`Request::Delete`].
    Deleted {
        /// File name.
        name: String,
        /// It had been forwarded to OctoPrint: the agent's copy is gone,
        /// OctoPrint keeps its own.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forwarded: bool,
    },
    /// Answer to [`Request::Status`].
    Status(AgentStatus),
    /// Answer to [`Request::Watch`], sent again on every change.
    Watching(Watched),
    /// Answer to [`Request::Pair`]: the agent's SPAKE2 message and its key
    /// confirmation.
    PairChallenge {
        /// The agent's SPAKE2 message (hex).
        spake: String,
        /// HMAC proving the agent derived the same key (hex).
        confirm: String,
        /// Attempts this code has left after this one.
        attempts_left: u32,
    },
    /// Answer to [`Request::PairConfirm`]: the issued certificate.
    Paired(Issued),
    /// Answer to [`Request::Renew`]: the new certificate.
    Renewed(Issued),
    /// The request failed; the connection stays usable unless the code says
    /// otherwise (see `docs/protocol.md`).
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable explanation with what to do next.
        message: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A compression of a file body on the wire (see [`crate::wire::codec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// zstd frames, window at most 1 MiB.
    Zstd,
}

impl Encoding {
    /// The encoding's name on the wire (and in logs).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
        }
    }
}

/// A client certificate the agent issued (pairing or renewal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// Client name (the certificate's CN).
    pub name: String,
    /// Serial number (hex).
    pub serial: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// The client certificate (PEM).
    pub certificate: String,
    /// The agent's CA certificate (PEM).
    pub ca: String,
}

/// Why the agent refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The header was not a valid request (bad JSON, unknown op, bad field).
    BadRequest,
    /// The header exceeded [`MAX_REQUEST_HEADER_LEN`](super::MAX_REQUEST_HEADER_LEN); the connection closes.
    HeaderTooLarge,
    /// The file name is not a plain, safe name.
    BadName,
    /// The declared size is over the agent's `max_file_size`.
    TooLarge,
    /// Storing the file would leave less than `min_free_space` free.
    NoSpace,
    /// A different file of that name exists and `overwrite` was not set.
    Exists,
    /// No file of that name is in the spool.
    NotFound,
    /// The body was shorter or longer than the declared size.
    SizeMismatch,
    /// The body's SHA-256 differs from the declared one.
    DigestMismatch,
    /// The client stopped sending within the agent's timeout.
    Timeout,
    /// Anything else on the agent's side (an I/O error); see its log.
    Internal,
    /// The request is not allowed on this connection (anything but pairing
    /// on a pairing connection, pairing on an authenticated one).
    Forbidden,
    /// The pairing code is unknown, expired, used or void.
    PairingRefused,
    /// The pairing exchange failed: the code was wrong.
    WrongCode,
    /// Too many pairing attempts from this address; wait and retry.
    RateLimited,
    /// The file is in use (being printed) or the agent is busy with it;
    /// try again later.
    Busy,
    /// The printer cannot start a print now (not connected, printing, or
    /// forwarding is off).
    NotReady,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::HeaderTooLarge => "header_too_large",
            ErrorCode::BadName => "bad_name",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Exists => "exists",
            ErrorCode::NotFound => "not_found",
            ErrorCode::SizeMismatch => "size_mismatch",
            ErrorCode::DigestMismatch => "digest_mismatch",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PairingRefused => "pairing_refused",
            ErrorCode::WrongCode => "wrong_code",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Busy => "busy",
            ErrorCode::NotReady => "not_ready",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
