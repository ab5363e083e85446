//! Who may call the API. Every route but the health check passes through [`check`]:
//!
//! - **`Host`**: only loopback names (`localhost`, `127.0.0.0/8`, `[::1]`, any port), the
//!   listener's own IP, and names configured with `PROFILING_ALLOWED_HOSTS` /
//!   [`ConfigBuilder::allow_host`](crate::ConfigBuilder::allow_host) (`*`: any). A web page the
//!   operator visits cannot read the API through DNS rebinding: its requests carry the
//!   page's own host name. A request without `Host` (HTTP/1.0, in-process tests) is accepted.
//! - **`Origin`** on state-changing requests (every method but GET, HEAD, OPTIONS): when
//!   present it must name an accepted host, so a cross-site form cannot `POST /reset`.
//! - **Bearer token**, when configured: compared in constant time, as SHA-256 digests (the
//!   configured one computed once), so neither its bytes nor its length show in the timing.
//!
//! Refusals are 403 (host, origin) or 401 (token), with a JSON body.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::ApiError;
use crate::routes::HEALTH_PATH;

/// The access rules of one router, prepared once from its [`Config`].
#[derive(Clone, Debug)]
pub(crate) struct Guard(Arc<Rules>);

#[derive(Debug)]
struct Rules {
    token: Option<TokenCheck>,
    hosts: Vec<String>,
    any_host: bool,
    bind_ip: Option<IpAddr>,
}

impl Guard {
    pub(crate) fn new(config: &Config) -> Self {
        let bind = config.bind().ip();
        Self(Arc::new(Rules {
            token: config.auth_token.as_deref().map(TokenCheck::new),
            hosts: config.allowed_hosts.clone(),
            any_host: config.allowed_hosts.iter().any(|h| h == "*"),
            bind_ip: (!bind.is_unspecified()).then_some(bind),
        }))
    }
}

/// The configured token's digest; compares a given token without revealing where or whether
/// their lengths differ.
#[derive(Debug)]
struct TokenCheck([u8; 32]);

impl TokenCheck {
    fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        given.ct_eq(&self.0).into()
    }
}

/// The host name of an authority (`name`, `name:port`, `[v6]`, `[v6]:port`), lowercased,
/// without a trailing dot; `None` if malformed.
fn host_name(authority: &str) -> Option<String> {
    let name = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        &authority[..v6.len() + 2]
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => authority,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

impl Rules {
    fn host_allowed(&self, authority: &str) -> bool {
        let Some(name) = host_name(authority) else {
            return false;
        };
        if self.any_host || name == "localhost" || self.hosts.contains(&name) {
            return true;
        }
        let ip = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
        ip.is_ok_and(|ip| ip.is_loopback() || Some(ip) == self.bind_ip)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        origin
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .is_some_and(|(_, authority)| self.host_allowed(authority))
    }

    /// Why `req` is refused, if it is.
    fn refusal(&self, req: &Request) -> Option<ApiError> {
        let headers = req.headers();
        let host = match headers.get(HOST) {
            Some(h) => h.to_str().ok(),
            None => Some(req.uri().authority().map_or("", |a| a.as_str())),
        };
        if !host.is_some_and(|h| h.is_empty() || self.host_allowed(h)) {
            return Some(ApiError::Forbidden(
                "Host is not an accepted name for this API (loopback, or PROFILING_ALLOWED_HOSTS)".to_owned(),
            ));
        }
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            if let Some(origin) = headers.get(ORIGIN) {
                if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
                    return Some(ApiError::Forbidden(
                        "cross-origin state-changing request refused (Origin is not an accepted host)".to_owned(),
                    ));
                }
            }
        }
        let token = self.token.as_ref()?;
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        match given {
            Some(t) if token.matches(t.as_bytes()) => None,
            _ => Some(ApiError::Unauthorized),
        }
    }
}

/// The middleware: the health check passes, anything else must satisfy the rules.
pub(crate) async fn check(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if req.uri().path() == HEALTH_PATH {
        return next.run(req).await;
    }
    match guard.0.refusal(&req) {
        None => next.run(req).await,
        Some(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn rules(hosts: &[&str]) -> Rules {
        let mut b = Config::builder()
            .bind("0.0.0.0:8080".parse().unwrap())
            .allow_remote_without_token(true);
        for h in hosts {
            b = b.allow_host(*h);
        }
        let c = b.build().unwrap();
        Arc::try_unwrap(Guard::new(&c).0).unwrap()
    }

    #[test]
    fn compares_tokens() {
        let t = TokenCheck::new("abc");
        assert!(t.matches(b"abc"));
        assert!(!t.matches(b"abd"));
        assert!(!t.matches(b"abcd"));
        assert!(!t.matches(b""));
    }

    /// The time of a comparison depends on the given token only, not on the configured one:
    /// a configured token of the given's length and a 5-byte one take the same time (the
    /// old early return on a length mismatch made them differ 10,000-fold). Measurements are
    /// interleaved and the fastest of each kept, so load on the machine hits both alike.
    #[test]
    fn token_compare_time_does_not_reveal_the_configured_length() {
        let given = vec![b'a'; 64 * 1024];
        let mut same_len = given.clone();
        *same_len.last_mut().unwrap() = b'b';
        let same_len = TokenCheck::new(std::str::from_utf8(&same_len).unwrap());
        let short = TokenCheck::new("short");
        let time = |t: &TokenCheck| {
            let start = Instant::now();
            assert!(!t.matches(std::hint::black_box(&given)));
            start.elapsed()
        };
        let (mut a, mut b) = (Duration::MAX, Duration::MAX);
        for _ in 0..31 {
            a = a.min(time(&same_len));
            b = b.min(time(&short));
        }
        let ratio = a.max(b).as_secs_f64() / a.min(b).max(Duration::from_nanos(1)).as_secs_f64();
        assert!(ratio < 10.0, "same length {a:?}, other length {b:?}");
    }

    #[test]
    fn host_names() {
        for (authority, name) in [
            ("localhost", Some("localhost")),
            ("LocalHost:8080", Some("localhost")),
            ("localhost.:80", Some("localhost")),
            ("127.0.0.1:3000", Some("127.0.0.1")),
            ("[::1]:8080", Some("[::1]")),
            ("[::1]", Some("[::1]")),
            ("[::1]x", None),
            ("[nope]:80", None),
            ("a:b:c", None),
            (":80", None),
            ("host:999999", None),
        ] {
            assert_eq!(host_name(authority).as_deref(), name, "{authority}");
        }
    }

    #[test]
    fn loopback_bind_and_configured_hosts_are_accepted() {
        let r = rules(&["Profiling.Example"]);
        for ok in [
            "localhost",
            "localhost:1",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:9",
            "profiling.example:443",
        ] {
            assert!(r.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "0.0.0.0:8080",
            "[::2]",
        ] {
            assert!(!r.host_allowed(bad), "{bad}");
        }
        assert!(rules(&["*"]).host_allowed("anything.example"));
        assert!(r.origin_allowed("http://localhost:3000"));
        assert!(!r.origin_allowed("null"));
        assert!(!r.origin_allowed("https://evil.example"));
        assert!(!r.origin_allowed("file://localhost"));
    }
}
