//! `rampart-deploy`: what stands between a model file and production.
//!
//! - [`gate`]: the deployment gate. A model passes only if its signature verifies with one of the trusted keys
//!   and matches every file, `rampart-scan` finds nothing at or above the configured severity, and the policy
//!   (size, file count, extensions) holds. [`check`] for a directory on disk (CI), [`check_files`] for a model
//!   held in memory.
//! - [`slot`]: [`ModelSlot`], the holder the gateway serves from: a new version is swapped in only if it passed
//!   the gate; on refusal the previous version keeps serving.
//! - [`registry`]: versions stored signed and sealed (age) under a state directory, loaded by unsealing in memory
//!   and gating the plaintext before use.
//! - [`upload`]: the wire format of a registry upload (a tar stream of the signed model directory), packed and
//!   unpacked safely.
//! - [`export`]: export refused by default; a request, an approval by another principal with the `approver` role
//!   and a fresh TOTP code ([`totp`], RFC 6238), then exactly one export within a limited time.
//!
//! Every decision is appended to the tamper-evident audit log (`rampart-log`); when the log cannot record it,
//! the action does not happen.

pub mod config;
mod error;
pub mod export;
pub mod gate;
pub mod registry;
pub mod slot;
mod state;
pub mod totp;
pub mod upload;

pub use config::{GateConfig, Policy, TrustedKey};
pub use error::{Error, Result};
pub use export::{ExportControl, ExportRequest, RequestStatus};
pub use gate::{check, check_files, Check, GateReport};
pub use registry::{Registry, VersionInfo};
pub use slot::{Loaded, ModelSlot};
pub use state::check_name;
