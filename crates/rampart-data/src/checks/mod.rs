//! The checks, one module each.

pub mod dedup;
pub mod labels;
pub mod leaks;
pub mod logreg;
pub mod outliers;
pub mod poison;
