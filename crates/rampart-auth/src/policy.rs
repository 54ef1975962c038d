//! Authorization with Cedar: may this principal perform this action on this model?
//!
//! The schema, the policies and the entities each come from a file or, when none is given, from the embedded defaults
//! ([`DEFAULT_SCHEMA`], [`DEFAULT_POLICY`], no entities). Policies are validated against the schema (strict mode) and
//! entities conform to it, at load and on every reload; a reload that fails keeps the policy in force and returns
//! the error. Each decision builds a handful of entities (the principal with its roles, the model, the actions) and
//! evaluates the policy set, once per generation: a decision depends only on the principal (id, roles, how it
//! authenticated), the action and the model, so it is kept until the next reload and a repeated request costs one
//! hash lookup.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::files::{self, FileStamp};
use crate::principal::Principal;

/// The embedded default schema (Cedar schema syntax): `src/default.cedarschema`.
pub const DEFAULT_SCHEMA: &str = include_str!("default.cedarschema");
/// The embedded default policy: `src/default.cedar`.
pub const DEFAULT_POLICY: &str = include_str!("default.cedar");
const MAX_POLICY_FILE_BYTES: u64 = 8 << 20;
/// Request entities kept per (principal, roles, model); the cache is emptied when it reaches this size.
const ENTITY_CACHE_LIMIT: usize = 4096;

/// The key of one cached request-entity set.
type CacheKey = (String, Vec<String>, String);
/// Decisions kept per generation; the cache is emptied when it reaches this size.
const DECISION_CACHE_LIMIT: usize = 16_384;

/// One cached decision with the exact request it answers (a hash collision is then a miss, never a wrong answer).
#[derive(Debug)]
struct CachedDecision {
    principal: String,
    roles: Vec<String>,
    source: crate::principal::Source,
    action: Action,
    model: String,
    decision: Decision,
}

impl CachedDecision {
    fn answers(&self, principal: &Principal, action: Action, model: &str) -> bool {
        self.action == action
            && self.source == principal.source
            && self.model == model
            && self.principal == principal.id
            && self.roles == principal.roles
    }
}

/// What a principal asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Run inference.
    Infer,
    /// Read a model's metadata or readiness.
    ReadMetadata,
    /// Administrative operations.
    Admin,
    /// Download a model (denied by the default policy).
    Export,
    /// Approve another principal's export.
    Approve,
    /// Upload a new version of a model into the registry (only the `publisher` role, by default).
    Push,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 6] = [
        Action::Infer,
        Action::ReadMetadata,
        Action::Admin,
        Action::Export,
        Action::Approve,
        Action::Push,
    ];

    /// The Cedar action id (`Rampart::Action::"<name>"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Infer => "infer",
            Action::ReadMetadata => "read_metadata",
            Action::Admin => "admin",
            Action::Export => "export",
            Action::Approve => "approve",
            Action::Push => "push",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The policies that decided it (their `@id` annotation, else Cedar's id): the permits that allowed it, or the
    /// forbids that denied it (empty when it was denied because nothing permitted it).
    pub policies: Vec<String>,
    /// Errors met while evaluating (a policy that errors is skipped; the request itself is never allowed by error).
    pub errors: Vec<String>,
}

/// Errors loading or reloading the schema, policies or entities. Messages name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The schema does not parse.
    #[error("schema `{origin}` is invalid: {message}")]
    Schema {
        /// The file, or `embedded default`.
        origin: String,
        /// Cedar's explanation.
        message: String,
    },
    /// The policies do not parse.
    #[error("policy `{origin}` does not parse: {message}")]
    Parse {
        /// The file, or `embedded default`.
        origin: String,
        /// Cedar's explanation.
        message: String,
    },
    /// The policies do not validate against the schema.
    #[error("policy `{origin}` does not validate against the schema: {message}")]
    Validation {
        /// The file, or `embedded default`.
        origin: String,
        /// Every validation error, joined.
        message: String,
    },
    /// The entities do not parse or conform to the schema.
    #[error("entities `{origin}` are invalid: {message}")]
    Entities {
        /// The file.
        origin: String,
        /// Cedar's explanation.
        message: String,
    },
}

/// Where the schema, policies and entities come from; `None` is the embedded default (no entities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFiles {
    /// A Cedar schema file (`.cedarschema` syntax, or JSON when the name ends in `.json`).
    pub schema: Option<PathBuf>,
    /// A Cedar policy file.
    pub policies: Option<PathBuf>,
    /// A Cedar entities file (JSON): e.g. roles for SPIFFE principals, role hierarchies, model tags.
    pub entities: Option<PathBuf>,
}

/// One consistent generation of schema, policies and entities.
#[derive(Debug)]
struct Loaded {
    stamps: Vec<Option<FileStamp>>,
    policies: PolicySet,
    entities: Entities,
    /// The action entities of the schema, added to every request's entities.
    actions: Vec<Entity>,
    /// Request entities already built for this generation (a reload starts a new, empty cache).
    cache: Mutex<HashMap<CacheKey, Arc<Entities>>>,
    /// Decisions already taken in this generation, by a keyed hash of the request.
    decisions: RwLock<HashMap<u64, CachedDecision>>,
    /// The `@id` annotation of each policy that has one.
    ids: HashMap<cedar_policy::PolicyId, String>,
}

/// Entity type names, parsed once.
#[derive(Debug)]
struct Types {
    principal: EntityTypeName,
    role: EntityTypeName,
    model: EntityTypeName,
    action: EntityTypeName,
}

/// Decides requests with Cedar. Share it (`Arc<Authorizer>`); [`authorize`](Self::authorize) takes a read lock only.
#[derive(Debug)]
pub struct Authorizer {
    files: PolicyFiles,
    state: RwLock<Arc<Loaded>>,
    types: Types,
    cedar: cedar_policy::Authorizer,
    hasher: RandomState,
}

impl Authorizer {
    /// The embedded schema and policy, no entities.
    pub fn embedded() -> Result<Self, PolicyError> {
        Self::load(PolicyFiles::default())
    }

    /// Load and validate the given files (embedded defaults for those not given).
    pub fn load(files: PolicyFiles) -> Result<Self, PolicyError> {
        let loaded = load(&files)?;
        let name = |s: &str| {
            EntityTypeName::from_str(s).map_err(|e| PolicyError::Schema {
                origin: "embedded default".to_string(),
                message: e.to_string(),
            })
        };
        let types = Types {
            principal: name("Rampart::Principal")?,
            role: name("Rampart::Role")?,
            model: name("Rampart::Model")?,
            action: name("Rampart::Action")?,
        };
        Ok(Self {
            files,
            state: RwLock::new(Arc::new(loaded)),
            types,
            cedar: cedar_policy::Authorizer::new(),
            hasher: RandomState::new(),
        })
    }

    /// Reload when a file changed (a few `stat` calls when none did). Returns whether it reloaded; on error the
    /// policy in force stays and the error says which file is wrong.
    pub fn reload_if_changed(&self) -> Result<bool, PolicyError> {
        let stamps = stamps(&self.files)?;
        if stamps == self.current().stamps {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Reload every file now. On error the policy in force stays.
    pub fn reload(&self) -> Result<(), PolicyError> {
        match load(&self.files) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                match self.state.write() {
                    Ok(mut guard) => *guard = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                tracing::info!("reloaded the authorization policy");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "policy reload failed; keeping the policy in force");
                Err(e)
            }
        }
    }

    /// May `principal` perform `action` on `model`? Anything not permitted, and any failure to build the request,
    /// is denied.
    pub fn authorize(&self, principal: &Principal, action: Action, model: &str) -> Decision {
        self.with_decision(principal, action, model, Decision::clone)
    }

    /// Whether `principal` may perform `action` on `model`: [`authorize`](Self::authorize) without copying the
    /// decision, for the gateway's hot path.
    pub fn is_allowed(&self, principal: &Principal, action: Action, model: &str) -> bool {
        self.with_decision(principal, action, model, |d| d.allowed)
    }

    /// Looks the decision up in this generation's cache, or takes it and keeps it; errors are never cached.
    fn with_decision<T>(
        &self,
        principal: &Principal,
        action: Action,
        model: &str,
        read: impl FnOnce(&Decision) -> T,
    ) -> T {
        let loaded = self.current();
        let key = self.hasher.hash_one((
            &principal.id,
            &principal.roles,
            principal.source,
            action,
            model,
        ));
        {
            let decisions = match loaded.decisions.read() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(hit) = decisions.get(&key) {
                if hit.answers(principal, action, model) {
                    return read(&hit.decision);
                }
            }
        }
        let decision = match self.decide(&loaded, principal, action, model) {
            Ok(decision) => decision,
            Err(error) => {
                tracing::warn!(%error, action = action.as_str(), "authorization request failed; denied");
                Decision {
                    allowed: false,
                    policies: Vec::new(),
                    errors: vec![error],
                }
            }
        };
        let answer = read(&decision);
        if decision.errors.is_empty() {
            let mut decisions = match loaded.decisions.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if decisions.len() >= DECISION_CACHE_LIMIT {
                decisions.clear();
            }
            decisions.insert(
                key,
                CachedDecision {
                    principal: principal.id.clone(),
                    roles: principal.roles.clone(),
                    source: principal.source,
                    action,
                    model: model.to_string(),
                    decision,
                },
            );
        }
        answer
    }

    fn decide(
        &self,
        loaded: &Loaded,
        principal: &Principal,
        action: Action,
        model: &str,
    ) -> Result<Decision, String> {
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let principal_uid = uid(&self.types.principal, &principal.id);
        let model_uid = uid(&self.types.model, model);
        let action_uid = uid(&self.types.action, action.as_str());
        let entities =
            self.request_entities(loaded, principal, &principal_uid, model, &model_uid)?;

        let context = Context::from_pairs([(
            "source".to_string(),
            RestrictedExpression::new_string(principal.source.as_str().to_string()),
        )])
        .map_err(|e| e.to_string())?;
        // Not validated against the schema per request: Rampart builds it from the schema's own names, and the
        // policies were validated against the schema at load.
        let request = Request::new(principal_uid, action_uid, model_uid, context, None)
            .map_err(|e| e.to_string())?;
        let response = self
            .cedar
            .is_authorized(&request, &loaded.policies, &entities);
        let diagnostics = response.diagnostics();
        let policies = diagnostics
            .reason()
            .map(|id| {
                loaded
                    .ids
                    .get(id)
                    .map_or_else(|| id.to_string(), String::clone)
            })
            .collect();
        let errors = diagnostics.errors().map(|e| e.to_string()).collect();
        Ok(Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            policies,
            errors,
        })
    }

    /// The entities of a request, from the cache or built once: the actions, the principal with its roles and all
    /// their ancestors, those roles as the file defines them, and the model as the file defines it (or bare).
    fn request_entities(
        &self,
        loaded: &Loaded,
        principal: &Principal,
        principal_uid: &EntityUid,
        model: &str,
        model_uid: &EntityUid,
    ) -> Result<Arc<Entities>, String> {
        let key: CacheKey = (
            principal.id.clone(),
            principal.roles.clone(),
            model.to_string(),
        );
        fn lock(
            cache: &Mutex<HashMap<CacheKey, Arc<Entities>>>,
        ) -> MutexGuard<'_, HashMap<CacheKey, Arc<Entities>>> {
            match cache.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            }
        }
        if let Some(hit) = lock(&loaded.cache).get(&key) {
            return Ok(Arc::clone(hit));
        }
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let principal_uid = principal_uid.clone();
        let model_uid = model_uid.clone();

        let mut entities: HashMap<EntityUid, Entity> =
            HashMap::with_capacity(loaded.actions.len() + 8);
        for action in &loaded.actions {
            entities.insert(action.uid(), action.clone());
        }
        let mut parents: HashSet<EntityUid> = HashSet::new();
        for role in &principal.roles {
            let role_uid = uid(&self.types.role, role);
            if let Some(ancestors) = loaded.entities.ancestors(&role_uid) {
                parents.extend(ancestors.cloned());
            }
            parents.insert(role_uid);
        }
        let mut attrs = HashMap::new();
        if let Some(known) = loaded.entities.get(&principal_uid) {
            let (_, known_attrs, known_parents) = known.clone().into_inner();
            attrs = known_attrs;
            parents.extend(known_parents);
        }
        for parent in &parents {
            if let Some(entity) = loaded.entities.get(parent) {
                entities.insert(parent.clone(), entity.clone());
            }
        }
        let principal_entity =
            Entity::new(principal_uid.clone(), attrs, parents).map_err(|e| e.to_string())?;
        entities.insert(principal_uid.clone(), principal_entity);
        let model_entity = loaded
            .entities
            .get(&model_uid)
            .cloned()
            .unwrap_or_else(|| Entity::new_no_attrs(model_uid.clone(), HashSet::new()));
        entities.insert(model_uid.clone(), model_entity);
        let entities = Arc::new(
            Entities::from_entities(entities.into_values(), None).map_err(|e| e.to_string())?,
        );
        let mut cache = lock(&loaded.cache);
        if cache.len() >= ENTITY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&entities));
        Ok(entities)
    }

    fn current(&self) -> Arc<Loaded> {
        match self.state.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

fn stamps(files: &PolicyFiles) -> Result<Vec<Option<FileStamp>>, PolicyError> {
    [&files.schema, &files.policies, &files.entities]
        .into_iter()
        .map(|path| match path {
            Some(path) => FileStamp::of(path).map_err(|source| PolicyError::Io {
                path: path.clone(),
                source,
            }),
            None => Ok(None),
        })
        .collect()
}

fn read(path: &Path) -> Result<String, PolicyError> {
    let io = |source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = files::read_bounded(path, MAX_POLICY_FILE_BYTES).map_err(io)?;
    String::from_utf8(bytes).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

fn origin(path: Option<&PathBuf>) -> String {
    path.map_or_else(
        || "embedded default".to_string(),
        |p| p.display().to_string(),
    )
}

fn load(files: &PolicyFiles) -> Result<Loaded, PolicyError> {
    // Stamps first: a file changed while loading is then loaded again on the next check.
    let stamps = stamps(files)?;

    let schema_origin = origin(files.schema.as_ref());
    let schema_text = match &files.schema {
        Some(path) => read(path)?,
        None => DEFAULT_SCHEMA.to_string(),
    };
    let schema_err = |message: String| PolicyError::Schema {
        origin: schema_origin.clone(),
        message,
    };
    let is_json = files
        .schema
        .as_ref()
        .is_some_and(|p| p.extension().is_some_and(|e| e == "json"));
    let schema = if is_json {
        Schema::from_json_str(&schema_text).map_err(|e| schema_err(e.to_string()))?
    } else {
        Schema::from_cedarschema_str(&schema_text)
            .map_err(|e| schema_err(e.to_string()))?
            .0
    };

    let policy_origin = origin(files.policies.as_ref());
    let policy_text = match &files.policies {
        Some(path) => read(path)?,
        None => DEFAULT_POLICY.to_string(),
    };
    let policies = PolicySet::from_str(&policy_text).map_err(|e| PolicyError::Parse {
        origin: policy_origin.clone(),
        message: e.to_string(),
    })?;
    let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
    if !result.validation_passed() {
        let message = result
            .validation_errors()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(PolicyError::Validation {
            origin: policy_origin,
            message,
        });
    }

    let entities_err = |message: String| PolicyError::Entities {
        origin: origin(files.entities.as_ref()),
        message,
    };
    let entities = match &files.entities {
        Some(path) => Entities::from_json_str(&read(path)?, Some(&schema))
            .map_err(|e| entities_err(e.to_string()))?,
        None => Entities::empty(),
    };
    let actions = schema
        .action_entities()
        .map_err(|e| schema_err(e.to_string()))?
        .iter()
        .cloned()
        .collect();
    let ids = policies
        .policies()
        .filter_map(|p| Some((p.id().clone(), p.annotation("id")?.to_string())))
        .collect();
    Ok(Loaded {
        stamps,
        policies,
        entities,
        actions,
        cache: Mutex::new(HashMap::new()),
        decisions: RwLock::new(HashMap::new()),
        ids,
    })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
