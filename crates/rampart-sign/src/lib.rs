//! rampart-sign: built by the foundation issue.
