//! One HTTP client for every destination: timeouts, TLS verification (rustls
//! with the platform's roots), no redirects (a redirect would carry the
//! credentials elsewhere), and retries with exponential backoff and jitter
//! that honour `Retry-After`. Every message it produces has the secrets
//! taken out.

use crate::config::RetryPolicy;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Longest part of a response body quoted in an error.
const BODY_EXCERPT: usize = 300;

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// Whether trying again later may work (a server error, a timeout, a
    /// refused connection, a rate limit), as opposed to a request the
    /// destination rejects (bad field, bad credentials) or a missing secret.
    pub transient: bool,
    /// What happened, naming the destination; secrets removed.
    pub message: String,
}

/// A successful (2xx) response.
#[derive(Debug)]
pub struct Reply {
    pub body: String,
}

/// Replaces secret values in any text that may leave the process.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Registers a secret and the forms it can take in a server's reply:
    /// the value, its parts (split at spaces and colons, as in
    /// `Bearer <token>` or `user:token`), its base64 and percent-encoded
    /// forms, and for a URL its path, query and long path segments (a
    /// Slack webhook's secret is its path).
    pub fn add(&mut self, secret: &str) {
        self.add_one(secret);
        self.add_one(&base64(secret.as_bytes()));
        self.add_one(&percent_encode(secret));
        for part in secret.split([' ', ':']) {
            if part.len() >= 8 {
                self.add_one(part);
            }
        }
        if let Some((_, rest)) = secret.split_once("://") {
            if let Some(slash) = rest.find('/') {
                let path = &rest[slash..];
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                self.add_one(path);
                self.add_one(query);
                for segment in path.split('/').filter(|s| s.len() >= 8) {
                    self.add_one(segment);
                }
            }
        }
    }

    /// Registers HTTP basic credentials: `base64(user:token)` as the
    /// `Authorization` header carries them, besides the token itself.
    pub fn add_basic(&mut self, user: &str, token: &str) {
        self.add(token);
        let pair = base64(format!("{user}:{token}").as_bytes());
        self.add_one(pair.trim_end_matches('='));
        self.add_one(&pair);
    }

    fn add_one(&mut self, secret: &str) {
        // Very short values would redact ordinary words; they are not
        // credentials anyone uses.
        if secret.len() >= 6 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        out
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encoding of everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub struct Http {
    client: Client,
    policy: RetryPolicy,
    pub redactor: Redactor,
}

impl Http {
    /// # Errors
    /// The TLS backend cannot start (no usable root certificates).
    pub fn new(policy: RetryPolicy, timeout: Duration) -> Result<Self, String> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ravenwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {}", e.without_url()))?;
        Ok(Self {
            client,
            policy,
            redactor: Redactor::default(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends the request `build` makes (once per attempt), retrying what
    /// may succeed later. `what` names the call in messages
    /// (`jira_main: create issue`).
    ///
    /// # Errors
    /// A [`SendError`] after the last attempt, or at once for a 4xx other
    /// than 408/429.
    pub fn send(&self, what: &str, build: &dyn Fn() -> RequestBuilder) -> Result<Reply, SendError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.max_attempts;
            let wait = match build().send() {
                Ok(response) => match self.classify(what, response) {
                    Ok(reply) => return Ok(reply),
                    Err((error, retry_after)) => {
                        if !error.transient || last {
                            return Err(self.finish(error, attempt));
                        }
                        match retry_after {
                            Some(wait) if wait > self.policy.max_retry_after => {
                                return Err(SendError {
                                    transient: true,
                                    message: format!(
                                        "{}; the server asked to retry after {}s, longer than delivery.max_retry_after_seconds",
                                        error.message,
                                        wait.as_secs()
                                    ),
                                })
                            }
                            Some(wait) => wait,
                            None => self.backoff(attempt),
                        }
                    }
                },
                Err(e) => {
                    let error = SendError {
                        transient: true,
                        message: self.redactor.redact(&format!("{what}: {}", describe(&e))),
                    };
                    if last {
                        return Err(self.finish(error, attempt));
                    }
                    self.backoff(attempt)
                }
            };
            std::thread::sleep(wait);
        }
    }

    fn finish(&self, mut error: SendError, attempts: u32) -> SendError {
        if error.transient && attempts > 1 {
            error
                .message
                .push_str(&format!(" (after {attempts} attempts)"));
        }
        error
    }

    /// Delay before attempt `attempt + 1`: the backoff doubled per attempt,
    /// capped, with "equal jitter" (half fixed, half random) so clients
    /// that failed together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .policy
            .backoff
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.policy.max_backoff);
        let half = base / 2;
        half + half.mul_f64(random_unit())
    }

    /// A 2xx reply, or the error and the server's `Retry-After`.
    fn classify(
        &self,
        what: &str,
        response: Response,
    ) -> Result<Reply, (SendError, Option<Duration>)> {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.text().unwrap_or_default();
        if status.is_success() {
            return Ok(Reply { body });
        }
        let transient = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        let excerpt = excerpt(&body);
        let mut message = format!("{what}: HTTP {status}");
        if !excerpt.is_empty() {
            message.push_str(&format!(": {excerpt}"));
        }
        if status.is_redirection() {
            message.push_str(" (redirects are not followed: check the destination's URL)");
        }
        Err((
            SendError {
                transient,
                message: self.redactor.redact(&message),
            },
            retry_after.filter(|_| transient),
        ))
    }
}

/// A reqwest error without its URL (a Slack webhook URL is a secret).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    if !last.is_empty() {
        text.push_str(&format!(": {last}"));
    }
    text
}

/// The first characters of a response body, on one line.
pub fn excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= BODY_EXCERPT {
        one_line
    } else {
        let cut: String = one_line.chars().take(BODY_EXCERPT).collect();
        format!("{cut}…")
    }
}

/// `Retry-After: 30` or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// A number in [0, 1) from the standard library's randomly seeded hasher.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_as_seconds_or_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let http = Http::new(
            RetryPolicy {
                max_attempts: 5,
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(300),
                max_retry_after: Duration::from_secs(1),
            },
            Duration::from_secs(1),
        )
        .unwrap();
        for _ in 0..20 {
            let first = http.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = http.backoff(2);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = http.backoff(6);
            assert!(capped >= Duration::from_millis(150) && capped <= Duration::from_millis(300));
        }
    }

    #[test]
    fn redacts_secrets_and_keeps_short_words() {
        let mut r = Redactor::default();
        r.add("xoxb-123456-abcdef");
        r.add("abc");
        assert_eq!(
            r.redact("token xoxb-123456-abcdef rejected, abc"),
            "token [redacted] rejected, abc"
        );
    }

    #[test]
    fn redacts_the_forms_a_secret_takes() {
        assert_eq!(
            base64(b"user@example.com:tok3n-secret"),
            "dXNlckBleGFtcGxlLmNvbTp0b2szbi1zZWNyZXQ="
        );
        let mut r = Redactor::default();
        r.add_basic("user@example.com", "tok3n-secret");
        r.add("Bearer abcdef123456");
        r.add("https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/XXXXXXXXXXXXXXXXXXXXXXXX?x=1");
        let echoed = "Authorization: Basic dXNlckBleGFtcGxlLmNvbTp0b2szbi1zZWNyZXQ= \
            token=tok3n-secret bare abcdef123456 \
            404 no such path /services/T0AAAAAAA/B0BBBBBBB/XXXXXXXXXXXXXXXXXXXXXXXX \
            or XXXXXXXXXXXXXXXXXXXXXXXX alone, url-encoded tok3n%2Dsecret";
        let out = r.redact(echoed);
        for leak in [
            "dXNlckBleGFtcGxlLmNvbTp0b2szbi1zZWNyZXQ",
            "tok3n-secret",
            "abcdef123456",
            "XXXXXXXXXXXXXXXXXXXXXXXX",
            "B0BBBBBBB",
        ] {
            assert!(!out.contains(leak), "{leak} in {out}");
        }
        assert!(out.contains("Authorization: Basic [redacted]"), "{out}");
    }

    #[test]
    fn excerpts_are_one_line_and_bounded() {
        assert_eq!(excerpt("{\n  \"a\": 1\n}"), "{ \"a\": 1 }");
        let long = "x".repeat(1000);
        assert_eq!(excerpt(&long).chars().count(), BODY_EXCERPT + 1);
    }
}
