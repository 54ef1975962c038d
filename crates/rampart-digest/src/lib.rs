//! rampart-digest: built by the foundation issue.
