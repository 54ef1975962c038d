//! One module per command. Each has `Args` (or a `Command` enum for command groups) and `run`.

pub mod audit;
pub mod data;
pub mod deploy;
pub mod diff;
pub mod eval;
pub mod export;
pub mod keygen;
pub mod keys;
pub mod mfa;
pub mod profile;
pub mod push;
pub mod scan;
pub mod seal;
pub mod serve;
pub mod sign;
pub mod unseal;
pub mod verify;
pub mod watermark;
