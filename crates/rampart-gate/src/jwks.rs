//! The JWKS fetched from a URL for `rampart-auth`'s JWT verifier: one GET with a timeout, no redirects and a size
//! limit, run on the blocking pool. The verifier decides when to fetch (at start, on an unknown `kid` at most once
//! per its refresh interval, and when its cache expires) and keeps its cached keys when a fetch fails.

use std::time::Duration;

use rampart_auth::{BoxFuture, JwksFetcher, MAX_JWKS_BYTES};

/// How long one JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A JWKS at an `https://` URL (or `http://` on loopback; the config checks which).
#[derive(Debug, Clone)]
pub struct JwksUrl {
    url: String,
    agent: ureq::Agent,
}

impl JwksUrl {
    /// A fetcher for `url`.
    pub fn new(url: &str) -> JwksUrl {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        JwksUrl {
            url: url.to_owned(),
            agent,
        }
    }

    fn fetch_blocking(&self) -> Result<Vec<u8>, String> {
        let url = &self.url;
        let mut response = self
            .agent
            .get(url)
            .call()
            .map_err(|err| format!("cannot fetch `{url}`: {err}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("`{url}` answered {status}"));
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_JWKS_BYTES as u64)
            .read_to_vec()
            .map_err(|err| format!("cannot read `{url}`: {err}"))
    }
}

impl JwksFetcher for JwksUrl {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.fetch_blocking())
                .await
                .map_err(|err| format!("the JWKS fetch failed: {err}"))?
        })
    }
}
