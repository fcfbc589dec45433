//! Who may use the dashboard and its HTTP API: whoever presents the cluster
//! token, the same token every gRPC call to the head carries.
//!
//! Scripts send it as `Authorization: Bearer TOKEN`; a browser is asked for
//! it once on `/login` and then carries it in an `HttpOnly`, `SameSite=Strict`
//! cookie, so pages and their live updates need nothing more. The comparison
//! is the core's constant-time one.

use axum::http::{header, HeaderMap};

/// The cookie a browser keeps the token in.
pub const COOKIE: &str = "oxray_token";

/// Checks presented tokens against the cluster's.
#[derive(Clone)]
pub struct TokenCheck {
    token: String,
}

impl TokenCheck {
    pub fn new(token: &str) -> Self {
        TokenCheck {
            token: token.to_string(),
        }
    }

    pub fn matches(&self, presented: &str) -> bool {
        oxray_core::constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }

    /// Whether the request carries the token as a bearer token or a cookie.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.matches(t.trim()));
        bearer || cookie_tokens(headers).any(|t| self.matches(t))
    }

    /// The `Set-Cookie` value a successful login answers with.
    pub fn login_cookie(&self) -> String {
        format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", self.token)
    }
}

/// The values of every `oxray_token` cookie the request carries.
fn cookie_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that forgets the token.
pub fn logout_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_and_cookie_carry_the_token_and_nothing_else_does() {
        let check = TokenCheck::new("abc123");
        assert!(check.accepts(&headers(&[(header::AUTHORIZATION, "Bearer abc123")])));
        assert!(check.accepts(&headers(&[(header::COOKIE, "x=1; oxray_token=abc123")])));
        assert!(!check.accepts(&headers(&[(header::AUTHORIZATION, "Bearer abc12")])));
        assert!(!check.accepts(&headers(&[(header::COOKIE, "oxray_token=wrong")])));
        assert!(!check.accepts(&headers(&[(header::COOKIE, "other=abc123")])));
        assert!(!check.accepts(&HeaderMap::new()));
    }
}
