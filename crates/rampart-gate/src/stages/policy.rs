//! Authorization: may this principal do this action on this model? Cedar decides, through `rampart-auth`'s
//! [`Authorizer`] (schema, policies and entities from files or the embedded defaults, validated at start and on
//! reload). Anything not permitted is denied with 403.

use rampart_auth::{Action, Authorizer, Principal};

/// Whether `principal` may perform `action` on `model`; a denial is logged with the principal and the action (never a
/// credential).
pub fn allows(authorizer: &Authorizer, principal: &Principal, action: Action, model: &str) -> bool {
    let allowed = authorizer.is_allowed(principal, action, model);
    if !allowed {
        tracing::info!(
            principal = %principal.id,
            action = action.as_str(),
            model,
            "denied by policy"
        );
    }
    allowed
}
