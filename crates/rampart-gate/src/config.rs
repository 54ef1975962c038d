//! The gateway's TOML configuration: the schema, its embedded defaults, and the checks made once at load.
//!
//! Every table refuses unknown keys, so a misspelled security option stops the start instead of being ignored.
//! Paths in the file are relative to the file's directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration could not be used. Each message names the file and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid config `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and its line.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid config `{path}`: key `{key}`: {message}")]
    Invalid {
        /// The file (or `<embedded defaults>`).
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners and files.
    pub server: ServerConfig,
    /// Certificates.
    pub tls: TlsConfig,
    /// Who may call and how they prove it.
    pub auth: AuthConfig,
    /// Who may do what (Cedar).
    pub policy: PolicyConfig,
    /// Rate limits, quotas, connection caps, timeouts and size bounds.
    pub limits: LimitsConfig,
    /// Automatic temporary bans.
    pub bans: BanConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// The deployment gate every model passes before it is served (`crate::deploy`).
    pub deploy: crate::deploy::DeployConfig,
    /// The versions pushed into the registry and served by version (`crate::registry`).
    pub registry: crate::registry::RegistryConfig,
    /// The models served.
    pub models: Vec<ModelConfig>,
    /// The directory relative paths are resolved against (the config file's directory); not a key.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the configuration came from, for messages; not a key.
    #[serde(skip)]
    pub source: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            policy: PolicyConfig::default(),
            limits: LimitsConfig::default(),
            bans: BanConfig::default(),
            audit: AuditConfig::default(),
            deploy: crate::deploy::DeployConfig::default(),
            registry: crate::registry::RegistryConfig::default(),
            models: Vec::new(),
            base_dir: PathBuf::from("."),
            source: PathBuf::from("<embedded defaults>"),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The client listener's address.
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of TLS; refused unless `listen` is a loopback address.
    pub plain_http: bool,
    /// The admin listener (Prometheus metrics); plain HTTP, loopback only unless `admin_public` is set.
    pub admin_listen: Option<SocketAddr>,
    /// Allow the admin listener on a non-loopback address.
    pub admin_public: bool,
    /// Where certificates, keys and the audit trail live (default: see [`default_state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// Routes served without authentication (exact paths).
    pub public_routes: Vec<String>,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    pub shutdown_grace_secs: u64,
    /// Turn off authentication, policy and limits (for measuring their cost); refused unless `listen` is loopback.
    pub disable_security_stages: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            plain_http: false,
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            admin_public: false,
            state_dir: None,
            public_routes: vec!["/v2/health/live".into(), "/v2/health/ready".into()],
            shutdown_grace_secs: 30,
            disable_security_stages: false,
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`. Without both, a self-signed certificate is made in the state dir.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// How often the certificate files are checked for changes, in seconds.
    pub reload_secs: u64,
    /// PEM bundle of CAs whose client certificates are accepted (mTLS).
    pub client_ca: Option<PathBuf>,
    /// `optional` (a client may present a certificate) or `required`.
    pub client_auth: ClientAuth,
    /// Subject alternative names of the self-signed certificate.
    pub self_signed_names: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            reload_secs: 5,
            client_ca: None,
            client_auth: ClientAuth::Optional,
            self_signed_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// Whether client certificates are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Verified when presented; other credentials still work.
    Optional,
    /// Every connection must present a certificate signed by `client_ca`.
    Required,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept API keys (`Authorization: Bearer rmp_...` or `X-API-Key`), managed with `rampart keys` in the state dir.
    pub api_keys: bool,
    /// Create an API key (principal `admin`, role `admin`) and print it once when the state dir has none at start.
    pub create_first_key: bool,
    /// Accept the SPIFFE ID (URI SAN `spiffe://...`) of a client certificate verified against `tls.client_ca`.
    pub mtls: bool,
    /// SPIFFE trust domains accepted from client certificates; empty: any the client CA vouches for.
    pub mtls_trust_domains: Vec<String>,
    /// JWT bearer tokens: issuer, audiences, leeway, roles claim, algorithms (`[auth.jwt]`); off without it.
    pub jwt: Option<rampart_auth::JwtConfig>,
    /// The JWKS as a file (re-read on refresh); with `jwt`, exactly one of `jwks_file` and `jwks_url`.
    pub jwks_file: Option<PathBuf>,
    /// The JWKS as a URL (`https://`, or `http://` on a loopback address), fetched with a timeout and a size limit.
    pub jwks_url: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            api_keys: true,
            create_first_key: true,
            mtls: true,
            mtls_trust_domains: Vec::new(),
            jwt: None,
            jwks_file: None,
            jwks_url: None,
        }
    }
}

/// `[policy]`: Cedar files; each one not given is the embedded default (see `rampart-auth`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A Cedar schema (`.cedarschema`, or JSON when the name ends in `.json`).
    pub schema: Option<PathBuf>,
    /// A Cedar policy file.
    pub policies: Option<PathBuf>,
    /// A Cedar entities file (JSON): roles of SPIFFE principals, role hierarchies, model tags.
    pub entities: Option<PathBuf>,
    /// How often the policy files and the API key store are checked for changes, in seconds.
    pub reload_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            schema: None,
            policies: None,
            entities: None,
            reload_secs: 2,
        }
    }
}

/// A GCRA rate: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per authenticated principal.
    pub rate_per_principal: Option<Rate>,
    /// Per client IP address, checked before authentication.
    pub rate_per_ip: Option<Rate>,
    /// Requests per principal per UTC day.
    pub daily_quota: Option<u64>,
    /// Requests of one principal in flight at once.
    pub concurrency_per_principal: u32,
    /// Open connections, all clients together.
    pub max_connections: u32,
    /// Open connections from one IP address.
    pub max_connections_per_ip: u32,
    /// TLS handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Reading a request's headers, in milliseconds (slowloris): HTTP/1 heads, and HTTP/2 header blocks.
    pub header_timeout_ms: u64,
    /// Reading a request's body, in milliseconds (slow POST).
    pub body_timeout_ms: u64,
    /// A connection with no traffic is closed after this, in milliseconds.
    pub idle_timeout_ms: u64,
    /// From the request's arrival to its answer, in milliseconds; past it the model's work is dropped (503).
    pub request_timeout_ms: u64,
    /// Total size of a request's headers, in bytes (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Number of headers of a request (HTTP/1 and HTTP/2).
    pub max_headers: usize,
    /// Request body, in bytes, on Content-Length and counted on chunked bodies.
    pub max_body_bytes: usize,
    /// Nesting depth of a JSON body.
    pub max_json_depth: usize,
    /// Elements of one tensor.
    pub max_tensor_elements: usize,
    /// HTTP/2 streams open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the client before being served (rapid reset, CVE-2023-44487).
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2 streams the server may reset for protocol errors before closing the connection (CVE-2024-27316-like floods).
    pub h2_max_local_error_reset_streams: usize,
    /// Distinct clients the limiters remember; the oldest idle ones are forgotten first.
    pub max_tracked_clients: usize,
    /// An IPv6 client is this prefix of its address for the per-address limits, connection counts, bans and the
    /// extraction and anomaly monitors of unauthenticated clients: one subscriber holds a whole /64 (often a /56 or
    /// a /48) and could otherwise send from a new address for every request. 128 counts each address alone.
    pub ipv6_client_prefix: u8,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_per_principal: Some(Rate {
                per_second: 1000.0,
                burst: 2000,
            }),
            rate_per_ip: Some(Rate {
                per_second: 2000.0,
                burst: 4000,
            }),
            daily_quota: None,
            concurrency_per_principal: 64,
            max_connections: 4096,
            max_connections_per_ip: 256,
            handshake_timeout_ms: 5_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 5_000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 16,
            max_tensor_elements: 1 << 20,
            h2_max_concurrent_streams: 128,
            h2_max_pending_reset_streams: 32,
            h2_max_local_error_reset_streams: 64,
            max_tracked_clients: 100_000,
            ipv6_client_prefix: 64,
        }
    }
}

/// `[bans]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanConfig {
    /// Ban clients automatically.
    pub enabled: bool,
    /// Strikes (failed authentication, limits hit, malformed requests) within `window_secs` that earn a ban.
    pub strikes: u32,
    /// The window strikes are counted in, in seconds.
    pub window_secs: u64,
    /// The first ban's length, in seconds; each further ban of the same client doubles it.
    pub base_secs: u64,
    /// The longest ban, in seconds.
    pub max_secs: u64,
    /// Addresses or CIDR blocks (`10.0.0.0/8`) never banned.
    pub allow: Vec<String>,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            enabled: true,
            strikes: 50,
            window_secs: 60,
            base_secs: 60,
            max_secs: 24 * 3600,
            allow: Vec::new(),
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Write the audit trail.
    pub enabled: bool,
    /// `log`: the tamper-evident log (`rampart audit verify`); `jsonl`: a JSON-lines file.
    pub sink: AuditSinkKind,
    /// The tamper-evident log's directory (default: `audit` in the state dir).
    pub dir: Option<PathBuf>,
    /// The origin (and key name) of a log created at start (default: a random one).
    pub origin: Option<String>,
    /// The JSON-lines file (default: `audit.jsonl` in the state dir).
    pub path: Option<PathBuf>,
    /// Records written together at most.
    pub batch: usize,
    /// How long a record may wait before its batch is flushed, in milliseconds.
    pub flush_ms: u64,
    /// What the gateway does while the audit trail cannot be written (a full disk, a log it cannot append to).
    pub on_failure: AuditFailure,
}

/// `[audit] on_failure`: whether the gateway acts unaudited when its audit trail fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFailure {
    /// Refuse every request but the liveness check with 503 (readiness says not ready) until records go through
    /// again; the refusals are records too, so the first batch the trail takes ends it. Nothing is done unaudited:
    /// filling the disk is no way to act unseen.
    #[default]
    Refuse,
    /// Go on serving; the failures show in the log and in `rampart_audit_errors_total`.
    Serve,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            sink: AuditSinkKind::Log,
            dir: None,
            origin: None,
            path: None,
            batch: 512,
            flush_ms: 200,
            on_failure: AuditFailure::Refuse,
        }
    }
}

/// Where the audit trail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSinkKind {
    /// The tamper-evident log (`rampart-log`).
    Log,
    /// A JSON-lines file.
    Jsonl,
}

/// `[[models]]`: one served model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients use in `/v2/models/{name}`.
    pub name: String,
    /// An ONNX file run in process; its directory is the model that is signed and gated.
    pub onnx: Option<PathBuf>,
    /// Or an age-sealed model (`rampart seal` of the signed model directory), decrypted in memory only.
    pub sealed: Option<PathBuf>,
    /// The age identity file of a sealed model, mode 0600 (default: `$RAMPART_AGE_IDENTITY`).
    pub identity: Option<PathBuf>,
    /// The ONNX file inside a sealed model (default: its only `.onnx` file).
    pub entry: Option<PathBuf>,
    /// Or the base URL of an upstream KServe v2 HTTP server.
    pub upstream: Option<String>,
    /// The model's name upstream (default: `name`).
    pub upstream_model: Option<String>,
    /// Inference threads for this model.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Requests waiting for a thread; when full, new requests get 503.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// How requests run: `auto` (inline when the model answers within 100 µs, else threads), `inline`, `threads`.
    #[serde(default)]
    pub execution: crate::stages::infer::Execution,
    /// The most rows of concurrent requests one run of the model gathers (0, the default: each request runs alone).
    /// Only for models whose rows are independent, batch first on every input and output.
    #[serde(default)]
    pub max_batch: usize,
    /// `[models.defend]`: the inference-time defences of this model (see `stages::defend`); none without it.
    pub defend: Option<crate::stages::defend::DefendConfig>,
}

/// The most rows `max_batch` may gather.
const MAX_BATCH: usize = 1024;

/// Why a `max_batch` (a model's or the registry's) is out of range, if it is.
pub(crate) fn max_batch_error(max_batch: usize) -> Option<String> {
    (max_batch > MAX_BATCH).then(|| format!("must be between 0 (off) and {MAX_BATCH} rows"))
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8))
}

fn default_queue() -> usize {
    256
}

/// The state directory when the config names none: `$RAMPART_STATE_DIR` when set and not empty, else `./.rampart`
/// (shared with `rampart keys`, so keys made there are the ones the gateway accepts).
pub fn default_state_dir() -> PathBuf {
    rampart_auth::default_state_dir()
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses and validates TOML text; `source` names it in messages, `base_dir` anchors relative paths.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: source.to_owned(),
            message: err.to_string().trim_end().replace('\n', " "),
        })?;
        config.source = source.to_owned();
        config.base_dir = base_dir.to_owned();
        config.validate()?;
        Ok(config)
    }

    /// The embedded defaults serving the example layout of `dir`: `dir/model/model.onnx` named after `dir`.
    pub fn for_model_dir(dir: &Path) -> Result<Config, ConfigError> {
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".to_owned());
        let mut config = Config {
            base_dir: dir.to_owned(),
            source: dir.join("<embedded defaults>"),
            ..Config::default()
        };
        // The signer's key shipped beside the model is trusted: the directory and its key travel together. A
        // config file naming keys kept apart from the models is the stronger set-up (see `crate::deploy`).
        if dir.join("release.pub").is_file() {
            config.deploy.trusted_keys = vec![PathBuf::from("release.pub")];
        }
        config.models.push(ModelConfig {
            name,
            onnx: Some(PathBuf::from("model/model.onnx")),
            sealed: None,
            identity: None,
            entry: None,
            upstream: None,
            upstream_model: None,
            workers: default_workers(),
            queue: default_queue(),
            execution: crate::stages::infer::Execution::Auto,
            max_batch: 0,
            defend: None,
        });
        config.validate()?;
        Ok(config)
    }

    /// Resolves a configured path against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The state directory in use.
    pub fn state_dir(&self) -> PathBuf {
        match &self.server.state_dir {
            Some(dir) => self.resolve(dir),
            None => default_state_dir(),
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The checks serde cannot make: relations between keys and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.plain_http && !is_loopback(self.server.listen.ip()) {
            return Err(self.invalid(
                "server.plain_http",
                "plain HTTP is allowed only on a loopback address; use TLS or listen on 127.0.0.1",
            ));
        }
        if self.server.disable_security_stages && !is_loopback(self.server.listen.ip()) {
            return Err(self.invalid(
                "server.disable_security_stages",
                "allowed only on a loopback address: it turns off authentication, policy and limits",
            ));
        }
        if let Some(admin) = self.server.admin_listen {
            if !is_loopback(admin.ip()) && !self.server.admin_public {
                return Err(self.invalid(
                    "server.admin_listen",
                    "the admin listener is plain HTTP; put it on a loopback address or set `server.admin_public = true`",
                ));
            }
        }
        for route in &self.server.public_routes {
            if !route.starts_with('/') {
                return Err(self.invalid(
                    "server.public_routes",
                    format!("`{route}` must start with `/`"),
                ));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(self.invalid(
                "tls.cert",
                "set both `tls.cert` and `tls.key`, or neither for a self-signed certificate",
            ));
        }
        if self.tls.client_auth == ClientAuth::Required && self.tls.client_ca.is_none() {
            return Err(self.invalid("tls.client_auth", "`required` needs `tls.client_ca`"));
        }
        if self.tls.reload_secs == 0 {
            return Err(self.invalid("tls.reload_secs", "must be at least 1"));
        }
        self.validate_auth()?;
        self.validate_limits()?;
        if self.bans.enabled
            && (self.bans.strikes == 0 || self.bans.window_secs == 0 || self.bans.base_secs == 0)
        {
            return Err(self.invalid(
                "bans",
                "`strikes`, `window_secs` and `base_secs` must be at least 1",
            ));
        }
        if self.bans.max_secs < self.bans.base_secs {
            return Err(self.invalid("bans.max_secs", "must be at least `base_secs`"));
        }
        for entry in &self.bans.allow {
            if crate::stages::ban::IpBlock::parse(entry).is_none() {
                return Err(self.invalid(
                    "bans.allow",
                    format!("`{entry}` is not an address or a CIDR block"),
                ));
            }
        }
        if self.audit.batch == 0 {
            return Err(self.invalid("audit.batch", "must be at least 1"));
        }
        if self.models.is_empty() {
            return Err(self.invalid(
                "models",
                "serve at least one model: add a `[[models]]` table",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, model) in self.models.iter().enumerate() {
            let key = |k: &str| format!("models[{i}].{k}");
            if model.name.is_empty()
                || !model
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(self.invalid(
                    &key("name"),
                    format!("`{}` must be letters, digits, `-`, `_` or `.`", model.name),
                ));
            }
            if !names.insert(model.name.as_str()) {
                return Err(self.invalid(&key("name"), format!("`{}` is served twice", model.name)));
            }
            let runtimes = [&model.onnx, &model.sealed]
                .iter()
                .filter(|p| p.is_some())
                .count()
                + usize::from(model.upstream.is_some());
            if runtimes != 1 {
                return Err(self.invalid(
                    &key("onnx"),
                    "set exactly one of `onnx`, `sealed` and `upstream`",
                ));
            }
            if model.sealed.is_none() && (model.identity.is_some() || model.entry.is_some()) {
                return Err(
                    self.invalid(&key("identity"), "`identity` and `entry` go with `sealed`")
                );
            }
            if let Some(url) = &model.upstream {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(self.invalid(
                        &key("upstream"),
                        format!("`{url}` must be an http:// or https:// URL"),
                    ));
                }
            }
            if model.workers == 0 || model.workers > 256 {
                return Err(self.invalid(&key("workers"), "must be between 1 and 256"));
            }
            if model.queue == 0 {
                return Err(self.invalid(&key("queue"), "must be at least 1"));
            }
            if let Some(message) = max_batch_error(model.max_batch) {
                return Err(self.invalid(&key("max_batch"), message));
            }
        }
        self.deploy.validate(self)?;
        self.registry.validate(self)?;
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        match (&auth.jwt, &auth.jwks_file, &auth.jwks_url) {
            (Some(_), None, None) => {
                return Err(self.invalid(
                    "auth.jwt",
                    "JWTs need their keys: set `auth.jwks_file` or `auth.jwks_url`",
                ))
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(self.invalid(
                    "auth.jwks_url",
                    "set one of `auth.jwks_file` and `auth.jwks_url`, not both",
                ))
            }
            (None, Some(_), _) | (None, _, Some(_)) => {
                return Err(self.invalid(
                    "auth.jwt",
                    "a JWKS is set but `[auth.jwt]` (issuer, audiences) is missing",
                ))
            }
            _ => {}
        }
        if let Some(url) = &auth.jwks_url {
            let loopback_http = url
                .strip_prefix("http://")
                .and_then(|rest| rest.split(['/', '?']).next())
                .is_some_and(|host| {
                    host.starts_with("127.")
                        || host.starts_with("localhost")
                        || host.starts_with("[::1]")
                });
            if !url.starts_with("https://") && !loopback_http {
                return Err(self.invalid(
                    "auth.jwks_url",
                    format!("`{url}` must be an https:// URL (http:// only on a loopback address)"),
                ));
            }
        }
        if let Some(jwt) = &auth.jwt {
            if jwt.issuer.is_empty() || jwt.audiences.is_empty() {
                return Err(self.invalid(
                    "auth.jwt",
                    "`issuer` must not be empty and `audiences` must name at least one audience",
                ));
            }
            if jwt.algorithms.is_empty() {
                return Err(self.invalid("auth.jwt.algorithms", "name at least one algorithm"));
            }
        }
        if auth
            .mtls_trust_domains
            .iter()
            .any(|d| d.is_empty() || d.contains('/'))
        {
            return Err(self.invalid(
                "auth.mtls_trust_domains",
                "a trust domain is a host name such as `example.org`",
            ));
        }
        if !auth.api_keys && auth.jwt.is_none() && !(auth.mtls && self.tls.client_ca.is_some()) {
            return Err(self.invalid(
                "auth",
                "no authentication method is on: enable `api_keys`, set `[auth.jwt]`, or `mtls` with `tls.client_ca`",
            ));
        }
        if self.policy.reload_secs == 0 {
            return Err(self.invalid("policy.reload_secs", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(16..=128).contains(&l.ipv6_client_prefix) {
            return Err(self.invalid(
                "limits.ipv6_client_prefix",
                "must be between 16 and 128 (64: a subscriber's subnet; 128: each address)",
            ));
        }
        for (key, rate) in [
            ("limits.rate_per_principal", l.rate_per_principal),
            ("limits.rate_per_ip", l.rate_per_ip),
        ] {
            if let Some(rate) = rate {
                if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
                    return Err(
                        self.invalid(key, "`per_second` must be positive and `burst` at least 1")
                    );
                }
            }
        }
        let positive: [(&str, u64); 11] = [
            (
                "limits.concurrency_per_principal",
                l.concurrency_per_principal.into(),
            ),
            ("limits.max_connections", l.max_connections.into()),
            (
                "limits.max_connections_per_ip",
                l.max_connections_per_ip.into(),
            ),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            ("limits.header_timeout_ms", l.header_timeout_ms),
            ("limits.body_timeout_ms", l.body_timeout_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.request_timeout_ms", l.request_timeout_ms),
            ("limits.max_json_depth", l.max_json_depth as u64),
            ("limits.max_tensor_elements", l.max_tensor_elements as u64),
            (
                "limits.h2_max_concurrent_streams",
                l.h2_max_concurrent_streams.into(),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        if l.max_header_bytes < 8192 {
            return Err(self.invalid(
                "limits.max_header_bytes",
                "must be at least 8192 (HTTP/1 needs that much buffer)",
            ));
        }
        if l.max_headers == 0 {
            return Err(self.invalid("limits.max_headers", "must be at least 1"));
        }
        if l.max_body_bytes == 0 {
            return Err(self.invalid("limits.max_body_bytes", "must be at least 1"));
        }
        Ok(())
    }

    /// A millisecond setting as a duration.
    pub fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }
}

/// Whether an address is a loopback one (v4, v6, or v4-mapped v6).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("rampart.toml"), Path::new("."))
    }

    const MODEL: &str =
        "[deploy]\nverify = false\n[[models]]\nname = \"digits\"\nonnx = \"m.onnx\"\n";

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let config = parse(MODEL).unwrap();
        assert!(!config.server.plain_http);
        assert_eq!(config.models[0].name, "digits");
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file() {
        let err = parse(&format!("[limits]\nmax_body_byte = 10\n{MODEL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rampart.toml"), "{err}");
        assert!(err.contains("max_body_byte"), "{err}");
    }

    #[test]
    fn plain_http_off_loopback_is_refused() {
        let err = parse(&format!(
            "[server]\nlisten = \"0.0.0.0:80\"\nplain_http = true\n{MODEL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.plain_http"), "{err}");
    }

    #[test]
    fn an_ipv6_client_prefix_out_of_range_names_its_key() {
        for prefix in [0, 8, 129] {
            let err = parse(&format!("[limits]\nipv6_client_prefix = {prefix}\n{MODEL}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("limits.ipv6_client_prefix"), "{err}");
        }
        let config = parse(&format!("[limits]\nipv6_client_prefix = 48\n{MODEL}")).unwrap();
        assert_eq!(config.limits.ipv6_client_prefix, 48);
    }

    #[test]
    fn a_bad_allow_entry_names_its_key() {
        let err = parse(&format!("[bans]\nallow = [\"10.0.0.0/99\"]\n{MODEL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bans.allow"), "{err}");
    }

    #[test]
    fn jwt_needs_a_jwks_and_a_remote_one_needs_https() {
        let jwt = "[auth.jwt]\nissuer = \"https://id.example\"\naudiences = [\"rampart\"]\n";
        let err = parse(&format!("{jwt}{MODEL}")).unwrap_err().to_string();
        assert!(err.contains("auth.jwt"), "{err}");
        let err = parse(&format!(
            "[auth]\njwks_url = \"http://id.example/jwks\"\n{jwt}{MODEL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.jwks_url"), "{err}");
        let config = parse(&format!(
            "[auth]\njwks_url = \"http://127.0.0.1:9/jwks\"\n{jwt}{MODEL}"
        ))
        .unwrap();
        assert!(config.auth.jwt.is_some());
        let err = parse(&format!("{jwt}wat = 1\n{MODEL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("wat"), "{err}");
    }

    #[test]
    fn the_embedded_defaults_are_safe() {
        let config = parse(MODEL).unwrap();
        assert!(!config.server.plain_http);
        assert!(is_loopback(config.server.listen.ip()));
        assert!(config.auth.api_keys);
        assert!(!config.server.disable_security_stages);
        assert!(config.audit.enabled);
        assert!(config
            .server
            .public_routes
            .iter()
            .all(|r| r.starts_with("/v2/health/")));
    }

    #[test]
    fn models_are_verified_unless_the_config_says_not() {
        let model = "[[models]]\nname = \"digits\"\nonnx = \"m.onnx\"\n";
        let err = parse(model).unwrap_err().to_string();
        assert!(err.contains("deploy.trusted_keys"), "{err}");
        let config = parse(&format!("[deploy]\ntrusted_keys = [\"k.pub\"]\n{model}")).unwrap();
        assert!(config.deploy.verify);
        assert_eq!(config.audit.sink, AuditSinkKind::Log);
        let err = parse(&format!(
            "[deploy]\nverify = false\nfail_on = \"bad\"\n{model}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("deploy.fail_on"), "{err}");
    }

    #[test]
    fn a_sealed_model_takes_an_identity_and_nothing_else() {
        let ok = parse("[deploy]\nverify = false\n[[models]]\nname = \"m\"\nsealed = \"m.age\"\nidentity = \"k.txt\"\n");
        assert!(ok.is_ok(), "{ok:?}");
        let err = parse("[deploy]\nverify = false\n[[models]]\nname = \"m\"\nsealed = \"m.age\"\nonnx = \"m.onnx\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one"), "{err}");
        let err = parse("[deploy]\nverify = false\n[[models]]\nname = \"m\"\nonnx = \"m.onnx\"\nidentity = \"k.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("models[0].identity"), "{err}");
    }

    #[test]
    fn max_batch_is_off_by_default_and_bounded() {
        assert_eq!(parse(MODEL).unwrap().models[0].max_batch, 0);
        let config = parse(&format!("{MODEL}max_batch = 32\n")).unwrap();
        assert_eq!(config.models[0].max_batch, 32);
        let err = parse(&format!("{MODEL}max_batch = 1025\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("models[0].max_batch"), "{err}");
        assert_eq!(parse(MODEL).unwrap().registry.max_batch, 0);
        let err = parse(&format!("[registry]\nmax_batch = 1025\n{MODEL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry.max_batch"), "{err}");
    }

    #[test]
    fn a_model_needs_exactly_one_runtime() {
        let err = parse("[[models]]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("models[0].onnx"), "{err}");
    }
}
