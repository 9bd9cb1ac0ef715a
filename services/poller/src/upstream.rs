//! The upstream: a broker's current-price REST API in the shape of Korea Investment &
//! Securities' "KIS Developers" open API.
//!
//! * Access token: `POST /oauth2/tokenP` `{"grant_type":"client_credentials","appkey","appsecret"}`
//!   → `{"access_token":..,"expires_in":86400}`; kept until the upstream says it expired
//!   (`EGW00123`), and shared by the mesh's instances through Redis (see [`SharedToken`]).
//! * One code: `GET /uapi/domestic-stock/v1/quotations/inquire-price` with `appkey`,
//!   `appsecret`, `authorization: Bearer <token>`, `tr_id: FHKST01010100` and
//!   `FID_COND_MRKT_DIV_CODE=J&FID_INPUT_ISCD=<code>` → `{"rt_cd":"0","output":{"stck_prpr",
//!   "acml_vol",..}}`. It reports no trade time and no last-trade volume.
//! * Several codes: `GET /uapi/domestic-stock/v1/quotations/multi-price?codes=a,b,..` →
//!   `{"rt_cd":"0","output":[{"code",..the same fields..,"cntg_vol"?}]}`. This is the fake
//!   broker's generic batch endpoint, modelled on brokers that offer a multi-symbol quote; KIS
//!   itself is not known to offer this exact endpoint.
//!
//! A rate-limit answer (`msg_cd` `EGW00201`, which KIS sends with HTTP 500, or any HTTP 429)
//! becomes [`UpstreamError::RateLimited`]. Prices stay the exact text the upstream sent.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::shared_token::SharedToken;

pub const TOKEN_PATH: &str = "/oauth2/tokenP";
pub const INQUIRE_PRICE_PATH: &str = "/uapi/domestic-stock/v1/quotations/inquire-price";
pub const MULTI_PRICE_PATH: &str = "/uapi/domestic-stock/v1/quotations/multi-price";
pub const INQUIRE_PRICE_TR_ID: &str = "FHKST01010100";
/// The fake's batch endpoint takes any transaction id; this one names it in logs.
pub const MULTI_PRICE_TR_ID: &str = "MULTIPRICE";
/// "Requests per second exceeded".
pub const RATE_LIMITED: &str = "EGW00201";
/// "The token expired".
pub const TOKEN_EXPIRED: &str = "EGW00123";

/// One code's current price as the upstream reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamQuote {
    pub code: String,
    /// `stck_prpr`, exact decimal text.
    pub price: String,
    /// `acml_vol`: volume traded so far today.
    pub cumulative_volume: Option<String>,
    /// `cntg_vol`: the last trade's volume, where the upstream reports one.
    pub last_volume: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream refused the request for going over its rate limit.
    #[error("rate limited by the upstream ({code}): {message}")]
    RateLimited { code: String, message: String },
    /// The token was refused as expired; the next request fetches a new one.
    #[error("access token refused ({code}): {message}")]
    TokenExpired { code: String, message: String },
    /// Any other refusal (`rt_cd` not "0", or an HTTP error without a KIS body).
    #[error("upstream refused the request (HTTP {status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// Connection, timeout, or a body that is not what the API documents.
    #[error("{0}")]
    Transport(String),
}

/// The REST client of one app key.
pub struct Upstream {
    http: reqwest::Client,
    base_url: String,
    app_key: String,
    app_secret: String,
    token: Mutex<Option<String>>,
    /// The mesh's token in Redis, with this instance's name; None: this instance's own.
    shared: Option<(SharedToken, String)>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Seconds (KIS: 86400).
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Answer {
    rt_cd: String,
    #[serde(default)]
    msg_cd: String,
    #[serde(default)]
    msg1: String,
    #[serde(default)]
    output: Value,
}

impl Upstream {
    pub fn new(base_url: &str, app_key: &str, app_secret: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("tickmesh-poller/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with timeouts builds");
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            token: Mutex::new(None),
            shared: None,
        }
    }

    /// Shares one access token with every instance of the app key through Redis (see
    /// [`SharedToken`]) instead of issuing one per instance.
    pub fn with_shared_token(mut self, shared: SharedToken, instance: &str) -> Self {
        self.shared = Some((shared, instance.to_string()));
        self
    }

    /// The current access token: this instance's copy, else the mesh's, else a new one
    /// (issued by one instance at a time; the others wait for it).
    async fn token(&self) -> Result<String, UpstreamError> {
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref() {
            return Ok(t.clone());
        }
        if let Some((shared, instance)) = &self.shared {
            let give_up = tokio::time::Instant::now() + SharedToken::issue_lock();
            loop {
                match shared.get().await {
                    Ok(Some(t)) => {
                        *token = Some(t.clone());
                        return Ok(t);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the mesh's access token; issuing one here");
                        break;
                    }
                }
                match shared.try_lead(instance).await {
                    Ok(true) => break,
                    Ok(false) if tokio::time::Instant::now() < give_up => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "taking the token lock; issuing one here");
                        break;
                    }
                }
            }
        }
        let (issued, lifetime) = self.issue_token().await?;
        if let Some((shared, _)) = &self.shared
            && let Err(e) = shared.put(&issued, lifetime).await
        {
            tracing::warn!(error = %e, "storing the access token for the mesh");
        }
        *token = Some(issued.clone());
        Ok(issued)
    }

    /// `POST /oauth2/tokenP`: a new token and its lifetime.
    async fn issue_token(&self) -> Result<(String, Option<Duration>), UpstreamError> {
        let url = format!("{}{TOKEN_PATH}", self.base_url);
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "appkey": self.app_key,
            "appsecret": self.app_secret,
        });
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| UpstreamError::Transport(format!("POST {url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| UpstreamError::Transport(format!("POST {url}: reading the body: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(UpstreamError::Refused {
                status,
                code: "token".into(),
                message: text.chars().take(300).collect(),
            });
        }
        let answer: TokenAnswer = serde_json::from_str(&text).map_err(|e| {
            UpstreamError::Transport(format!("POST {url}: unexpected token answer: {e}"))
        })?;
        Ok((
            answer.access_token,
            answer.expires_in.map(Duration::from_secs),
        ))
    }

    /// The upstream refused `refused` as expired: the next request gets another.
    async fn forget_token(&self, refused: &str) {
        let mut token = self.token.lock().await;
        if token.as_deref() == Some(refused) {
            *token = None;
        }
        if let Some((shared, _)) = &self.shared
            && let Err(e) = shared.forget(refused).await
        {
            tracing::warn!(error = %e, "dropping the expired access token of the mesh");
        }
    }

    /// Quotes of `codes`: one code through `inquire-price` when `single`, else the batch
    /// endpoint (which leaves out codes it does not know).
    pub async fn quotes(
        &self,
        codes: &[String],
        single: bool,
    ) -> Result<Vec<UpstreamQuote>, UpstreamError> {
        let token = self.token().await?;
        let (path, tr_id, query): (&str, &str, Vec<(&str, String)>) = if single {
            let code = codes.first().cloned().unwrap_or_default();
            (
                INQUIRE_PRICE_PATH,
                INQUIRE_PRICE_TR_ID,
                vec![
                    ("FID_COND_MRKT_DIV_CODE", "J".to_string()),
                    ("FID_INPUT_ISCD", code),
                ],
            )
        } else {
            (
                MULTI_PRICE_PATH,
                MULTI_PRICE_TR_ID,
                vec![("codes", codes.join(","))],
            )
        };
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .get(&url)
            .query(&query)
            .header("content-type", "application/json; charset=utf-8")
            .header("appkey", &self.app_key)
            .header("appsecret", &self.app_secret)
            .header("authorization", format!("Bearer {token}"))
            .header("tr_id", tr_id)
            .header("custtype", "P")
            .send()
            .await
            .map_err(|e| UpstreamError::Transport(format!("GET {url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| UpstreamError::Transport(format!("GET {url}: reading the body: {e}")))?;
        let result = parse_answer(status, &text, single, codes);
        if matches!(result, Err(UpstreamError::TokenExpired { .. })) {
            self.forget_token(&token).await;
        }
        result
    }
}

/// Turns one HTTP answer into quotes or the error it means.
pub fn parse_answer(
    status: u16,
    body: &str,
    single: bool,
    codes: &[String],
) -> Result<Vec<UpstreamQuote>, UpstreamError> {
    let answer: Option<Answer> = serde_json::from_str(body).ok();
    let Some(answer) = answer else {
        let message: String = body.chars().take(300).collect();
        if status == 429 {
            return Err(UpstreamError::RateLimited {
                code: "HTTP 429".into(),
                message,
            });
        }
        return Err(if (200..300).contains(&status) {
            UpstreamError::Transport(format!("unexpected answer: {message}"))
        } else {
            UpstreamError::Refused {
                status,
                code: String::new(),
                message,
            }
        });
    };
    if answer.msg_cd == RATE_LIMITED || status == 429 {
        return Err(UpstreamError::RateLimited {
            code: answer.msg_cd,
            message: answer.msg1,
        });
    }
    if answer.msg_cd == TOKEN_EXPIRED {
        return Err(UpstreamError::TokenExpired {
            code: answer.msg_cd,
            message: answer.msg1,
        });
    }
    if answer.rt_cd != "0" || !(200..300).contains(&status) {
        return Err(UpstreamError::Refused {
            status,
            code: answer.msg_cd,
            message: answer.msg1,
        });
    }
    if single {
        let code = codes.first().cloned().unwrap_or_default();
        return Ok(vec![quote_of(code, &answer.output)?]);
    }
    let Value::Array(items) = answer.output else {
        return Err(UpstreamError::Transport(
            "batch answer: `output` is not a list".into(),
        ));
    };
    items
        .iter()
        .map(|item| {
            let code = text(item, "code").ok_or_else(|| {
                UpstreamError::Transport("batch answer: an item has no code".into())
            })?;
            quote_of(code, item)
        })
        .collect()
}

fn text(item: &Value, field: &str) -> Option<String> {
    item.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn quote_of(code: String, output: &Value) -> Result<UpstreamQuote, UpstreamError> {
    let price = text(output, "stck_prpr").ok_or_else(|| {
        UpstreamError::Transport(format!("answer for {code:?} has no stck_prpr: {output}"))
    })?;
    Ok(UpstreamQuote {
        price,
        cumulative_volume: text(output, "acml_vol"),
        last_volume: text(output, "cntg_vol"),
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_the_documented_current_price_answer() {
        let body = r#"{"output":{"stck_prpr":"71500","prdy_vrss":"-500","acml_vol":"12345678","stck_sdpr":"72000"},"rt_cd":"0","msg_cd":"MCA00000","msg1":"정상처리 되었습니다."}"#;
        let q = parse_answer(200, body, true, &codes(&["005930"])).unwrap();
        assert_eq!(
            q,
            vec![UpstreamQuote {
                code: "005930".into(),
                price: "71500".into(),
                cumulative_volume: Some("12345678".into()),
                last_volume: None,
            }]
        );
    }

    #[test]
    fn reads_a_batch_answer() {
        let body = r#"{"rt_cd":"0","msg_cd":"MCA00000","msg1":"","output":[{"code":"005930","stck_prpr":"71500","acml_vol":"10","cntg_vol":"3"},{"code":"000660","stck_prpr":"182000.5"}]}"#;
        let q = parse_answer(200, body, false, &codes(&["005930", "000660"])).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].last_volume.as_deref(), Some("3"));
        assert_eq!(q[1].price, "182000.5");
        assert_eq!(q[1].cumulative_volume, None);
    }

    #[test]
    fn classifies_refusals() {
        let limited =
            r#"{"rt_cd":"1","msg_cd":"EGW00201","msg1":"초당 거래건수를 초과하였습니다."}"#;
        assert!(matches!(
            parse_answer(500, limited, true, &codes(&["005930"])),
            Err(UpstreamError::RateLimited { .. })
        ));
        assert!(matches!(
            parse_answer(429, "Too Many Requests", true, &codes(&["005930"])),
            Err(UpstreamError::RateLimited { .. })
        ));
        let expired = r#"{"rt_cd":"1","msg_cd":"EGW00123","msg1":"기간이 만료된 token 입니다."}"#;
        assert!(matches!(
            parse_answer(500, expired, true, &codes(&["005930"])),
            Err(UpstreamError::TokenExpired { .. })
        ));
        let other = r#"{"rt_cd":"1","msg_cd":"OPSQ0002","msg1":"없는 서비스 코드 입니다"}"#;
        let e = parse_answer(200, other, true, &codes(&["005930"])).unwrap_err();
        assert!(e.to_string().contains("OPSQ0002"), "{e}");
        assert!(matches!(
            parse_answer(
                200,
                r#"{"rt_cd":"0","output":{}}"#,
                true,
                &codes(&["005930"])
            ),
            Err(UpstreamError::Transport(_))
        ));
        assert!(matches!(
            parse_answer(502, "<html>bad gateway</html>", true, &codes(&["005930"])),
            Err(UpstreamError::Refused { status: 502, .. })
        ));
    }
}
