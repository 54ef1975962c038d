//! Authorization: may this principal do this action on this model? A [`Policy`] decides; a denial is a 403.
//!
//! The built-in [`RolePolicy`] maps roles to actions. The Cedar engine plugs in behind the same trait.

use std::fmt::Debug;

use crate::stages::authn::Principal;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Run inference.
    Infer,
    /// Read health, readiness and metadata.
    ReadMetadata,
    /// Administer the gateway.
    Admin,
}

impl Action {
    /// The action's name in policies and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Infer => "infer",
            Action::ReadMetadata => "read_metadata",
            Action::Admin => "admin",
        }
    }
}

/// Decides whether a principal may act on a model (`None`: the server itself).
pub trait Policy: Send + Sync + Debug {
    /// `true` to allow.
    fn allows(&self, principal: &Principal, action: Action, model: Option<&str>) -> bool;
}

/// Roles to actions: `admin` may do everything, `infer` may infer and read metadata, `read` may read metadata.
#[derive(Debug, Default)]
pub struct RolePolicy;

impl Policy for RolePolicy {
    fn allows(&self, principal: &Principal, action: Action, _model: Option<&str>) -> bool {
        principal.roles.iter().any(|role| match role.as_str() {
            "admin" => true,
            "infer" => matches!(action, Action::Infer | Action::ReadMetadata),
            "read" => action == Action::ReadMetadata,
            _ => false,
        })
    }
}
