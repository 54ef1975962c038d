use std::fs;

use super::*;
use crate::principal::Source;

fn who(id: &str, roles: &[&str]) -> Principal {
    Principal::new(id, roles.iter().map(|r| r.to_string()), Source::ApiKey)
}

#[test]
fn default_policy() {
    let authz = Authorizer::embedded().unwrap();
    let admin = who("root", &["admin"]);
    let user = who("alice", &["user"]);
    let nobody = who("eve", &[]);
    for action in Action::ALL {
        let expect_admin = !matches!(action, Action::Export | Action::Push);
        assert_eq!(
            authz.authorize(&admin, action, "digits").allowed,
            expect_admin,
            "admin {action}"
        );
        let expect_user = matches!(action, Action::Infer | Action::ReadMetadata);
        assert_eq!(
            authz.authorize(&user, action, "digits").allowed,
            expect_user,
            "user {action}"
        );
        assert!(
            !authz.authorize(&nobody, action, "digits").allowed,
            "no role {action}"
        );
    }
    let allowed = authz.authorize(&user, Action::Infer, "digits");
    assert_eq!(allowed.policies, ["user-may-infer-and-read-metadata"]);
    let denied = authz.authorize(&admin, Action::Export, "digits");
    assert_eq!(denied.policies, ["nobody-may-export"]);
    assert!(denied.errors.is_empty());
    // Pushing a version takes the `publisher` role, whatever else the principal holds.
    let publisher = who("ci", &["publisher"]);
    assert!(authz.authorize(&publisher, Action::Push, "digits").allowed);
    assert!(!authz.authorize(&publisher, Action::Infer, "digits").allowed);
    let denied = authz.authorize(&admin, Action::Push, "digits");
    assert_eq!(denied.policies, ["only-publishers-push"]);
}

#[test]
fn decision_cost_printout() {
    let authz = Authorizer::embedded().unwrap();
    let user = who("alice", &["user", "analyst"]);
    let rounds = 2000;
    let start = std::time::Instant::now();
    for i in 0..rounds {
        let action = if i % 2 == 0 {
            Action::Infer
        } else {
            Action::Export
        };
        let _ = authz.authorize(&user, action, "digits");
    }
    // No timing assertion (never assert a timing); printed for the report.
    println!(
        "cedar authorize: {:.1} µs per decision",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    );
}

const TAGGED_POLICY: &str = r#"
@id("analysts-on-public-models")
permit (principal in Rampart::Role::"analyst", action == Rampart::Action::"infer", resource)
when { resource has tags && resource.tags.contains("public") };
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Rampart::Role", "id": "analyst"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Rampart::Role", "id": "senior"}, "attrs": {}, "parents": [{"type": "Rampart::Role", "id": "analyst"}]},
  {"uid": {"type": "Rampart::Principal", "id": "spiffe://example.org/ns/prod/sa/web"}, "attrs": {},
   "parents": [{"type": "Rampart::Role", "id": "senior"}]},
  {"uid": {"type": "Rampart::Model", "id": "digits"}, "attrs": {"tags": ["public"]}, "parents": []},
  {"uid": {"type": "Rampart::Model", "id": "secret"}, "attrs": {"tags": []}, "parents": []}
]"#;

#[test]
fn policies_and_entities_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policy.cedar");
    let entities = dir.path().join("entities.json");
    fs::write(&policies, TAGGED_POLICY).unwrap();
    fs::write(&entities, ENTITIES).unwrap();
    let authz = Authorizer::load(PolicyFiles {
        schema: None,
        policies: Some(policies),
        entities: Some(entities),
    })
    .unwrap();
    // An mTLS principal with no roles of its own gets `senior`, hence `analyst`, from the entities file.
    let web = Principal::new(
        "spiffe://example.org/ns/prod/sa/web",
        Vec::new(),
        Source::Mtls,
    );
    assert!(authz.authorize(&web, Action::Infer, "digits").allowed);
    assert!(
        !authz.authorize(&web, Action::Infer, "secret").allowed,
        "model not tagged public"
    );
    assert!(
        !authz.authorize(&web, Action::Infer, "unknown").allowed,
        "model without tags"
    );
    assert!(
        !authz
            .authorize(&web, Action::ReadMetadata, "digits")
            .allowed
    );
    // A role given by a token inherits its parents from the file too.
    let token_user = Principal::new("bob", vec!["senior".to_string()], Source::Jwt);
    assert!(
        authz
            .authorize(&token_user, Action::Infer, "digits")
            .allowed
    );
    let other = who("carol", &["user"]);
    assert!(
        !authz.authorize(&other, Action::Infer, "digits").allowed,
        "the file replaced the default policy"
    );
}

#[test]
fn invalid_files_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.cedar");
    let cases = [
        ("permit (principal, action, resource", "does not parse"),
        // Validates only against a schema that has a `Rampart::User` type.
        (
            r#"permit (principal == Rampart::User::"a", action, resource);"#,
            "does not validate",
        ),
        (
            r#"permit (principal, action == Rampart::Action::"infer", resource) when { resource.owner == "x" };"#,
            "does not validate",
        ),
        (
            r#"permit (principal, action == Rampart::Action::"delete", resource);"#,
            "does not validate",
        ),
    ];
    for (policy, expected) in cases {
        fs::write(&path, policy).unwrap();
        let err = Authorizer::load(PolicyFiles {
            policies: Some(path.clone()),
            ..PolicyFiles::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains(expected), "{policy}: {err}");
        assert!(
            err.to_string().contains("p.cedar"),
            "the message names the file: {err}"
        );
    }
    let entities = dir.path().join("e.json");
    fs::write(&entities, r#"[{"uid": {"type": "Rampart::Model", "id": "m"}, "attrs": {"owner": "x"}, "parents": []}]"#)
        .unwrap();
    let err = Authorizer::load(PolicyFiles {
        entities: Some(entities),
        ..PolicyFiles::default()
    })
    .unwrap_err();
    assert!(matches!(err, PolicyError::Entities { .. }), "{err}");
}

#[test]
fn a_reload_that_fails_keeps_the_policy_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.cedar");
    fs::write(&path, DEFAULT_POLICY).unwrap();
    let authz = Authorizer::load(PolicyFiles {
        policies: Some(path.clone()),
        ..PolicyFiles::default()
    })
    .unwrap();
    let user = who("alice", &["user"]);
    assert!(!authz.reload_if_changed().unwrap(), "nothing changed");
    assert!(authz.authorize(&user, Action::Infer, "digits").allowed);

    // A policy that does not validate: refused, the previous one stays.
    fs::write(
        &path,
        r#"permit (principal in Rampart::Group::"x", action, resource);"#,
    )
    .unwrap();
    let err = authz.reload_if_changed().unwrap_err();
    assert!(matches!(err, PolicyError::Validation { .. }), "{err}");
    assert!(authz.authorize(&user, Action::Infer, "digits").allowed);

    // A valid policy that denies everything to users: picked up.
    fs::write(
        &path,
        r#"permit (principal in Rampart::Role::"admin", action, resource);"#,
    )
    .unwrap();
    assert!(authz.reload_if_changed().unwrap());
    let denied = authz.authorize(&user, Action::Infer, "digits");
    assert!(!denied.allowed);
    assert!(denied.policies.is_empty(), "denied because nothing permits");
}

#[test]
fn embedded_files_parse() {
    assert!(Schema::from_cedarschema_str(DEFAULT_SCHEMA).is_ok());
    assert!(PolicySet::from_str(DEFAULT_POLICY).is_ok());
}
