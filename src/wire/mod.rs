//! What both ends agree on: the protocol (frames, messages, the connection
//! and its limits), zstd bodies, whole-file SHA-256, the identity file and
//! certificate names, the pairing code and its SPAKE2 exchange, and the TLS
//! both ends share. Nothing here imports the agent or the workstation.

pub mod codec;
pub(crate) mod digest;
pub mod identity;
pub mod pairing;
pub mod protocol;
pub mod tls;
