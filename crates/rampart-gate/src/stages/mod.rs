//! One module per stage, named for what it decides. The order they run in is in `pipeline.rs`.

pub mod authn;
pub mod ban;
pub mod defend;
pub mod infer;
pub mod policy;
pub mod rate;
