//! The REST client the venues share: one `reqwest` client with timeouts, and
//! rate-limit answers (HTTP 429, Binance's 418 ban) turned into a wait
//! instead of a retry storm.

use std::time::Duration;

/// A REST failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The venue asked us to slow down (HTTP 429 or 418); wait this long.
    #[error("rate limited by the venue (HTTP {status}); retry after {retry_after:?}")]
    RateLimited { status: u16, retry_after: Duration },
    /// Any other non-success answer.
    #[error("HTTP {status} from {url}: {body}")]
    Status {
        status: u16,
        url: String,
        body: String,
    },
    /// Connection, timeout, or a body that is not what the venue documents.
    #[error("{0}")]
    Transport(String),
}

/// The shared REST client.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl Http {
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tickmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with timeouts builds");
        Self { client }
    }

    /// GETs `url` with `query` and returns the body; rate-limit answers
    /// become [`HttpError::RateLimited`] with the venue's `Retry-After`.
    pub async fn get(&self, url: &str, query: &[(&str, String)]) -> Result<Vec<u8>, HttpError> {
        let response = self
            .client
            .get(url)
            .query(query)
            .send()
            .await
            .map_err(|e| HttpError::Transport(format!("GET {url}: {e}")))?;
        let status = response.status().as_u16();
        if status == 429 || status == 418 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(1));
            return Err(HttpError::RateLimited {
                status,
                retry_after,
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| HttpError::Transport(format!("GET {url}: reading the body: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(HttpError::Status {
                status,
                url: url.to_string(),
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        Ok(body.to_vec())
    }

    /// GETs and decodes JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<T, HttpError> {
        let body = self.get(url, query).await?;
        serde_json::from_slice(&body)
            .map_err(|e| HttpError::Transport(format!("GET {url}: unexpected body: {e}")))
    }
}
