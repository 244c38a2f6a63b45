//! Who a client is: JWT bearer tokens, from the `Authorization` header or the `access_token`
//! query parameter (how the SignalR clients send them on WebSockets, via `accessTokenFactory`).
//!
//! Without a configured key every connection is anonymous. With one, a valid token gives the
//! connection a user id (from a configurable claim, `sub` by default) and its claims; an invalid
//! or expired token is refused with 401; a missing token is anonymous.

use std::collections::HashMap;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Who a connection belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub claims: Vec<(String, String)>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the hub requires a bearer token")]
    Missing,
}

/// Checks tokens.
pub struct Authenticator {
    key: Option<(DecodingKey, Validation)>,
    user_claim: String,
}

impl Authenticator {
    /// No authentication: everyone is anonymous.
    pub fn anonymous() -> Self {
        Self {
            key: None,
            user_claim: "sub".into(),
        }
    }

    /// HS256 tokens signed with `secret`; the user id is read from `user_claim`.
    pub fn hs256(secret: &[u8], user_claim: impl Into<String>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        Self {
            key: Some((DecodingKey::from_secret(secret), validation)),
            user_claim: user_claim.into(),
        }
    }

    /// RS256 or ES256 tokens verified with a PEM public key (RSA or EC P-256).
    pub fn public_key(pem: &[u8], user_claim: impl Into<String>) -> Result<Self, String> {
        let (key, algorithm) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (key, Algorithm::ES256),
                Err(e) => return Err(format!("not an RSA or EC public key in PEM form ({e})")),
            },
        };
        let mut validation = Validation::new(algorithm);
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        Ok(Self {
            key: Some((key, validation)),
            user_claim: user_claim.into(),
        })
    }

    /// The identity of a request: anonymous without a token (or without a key), the token's
    /// user with a valid one.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<Identity, AuthError> {
        let Some((key, validation)) = &self.key else {
            return Ok(Identity::default());
        };
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .or_else(|| query.get("access_token").map(String::as_str));
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(Identity::default());
        };
        let data = jsonwebtoken::decode::<HashMap<String, Value>>(token, key, validation)?;
        let claims: Vec<(String, String)> = data
            .claims
            .iter()
            .filter_map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((k.clone(), text))
            })
            .collect();
        let user_id = claims
            .iter()
            .find(|(k, _)| k == &self.user_claim)
            .map(|(_, v)| v.clone());
        Ok(Identity { user_id, claims })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    fn token(claims: Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("token")
    }

    fn query(token: &str) -> HashMap<String, String> {
        HashMap::from([("access_token".to_owned(), token.to_owned())])
    }

    #[test]
    fn reads_the_user_from_the_configured_claim() {
        let auth = Authenticator::hs256(b"secret", "sub");
        let t = token(
            json!({"sub": "ana", "role": "admin", "exp": 4_000_000_000u64}),
            b"secret",
        );
        let id = auth.identify(&HeaderMap::new(), &query(&t)).expect("valid");
        assert_eq!(id.user_id.as_deref(), Some("ana"));
        assert!(id.claims.contains(&("role".into(), "admin".into())));

        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
        let id = auth.identify(&headers, &HashMap::new()).expect("valid");
        assert_eq!(id.user_id.as_deref(), Some("ana"));
    }

    #[test]
    fn refuses_bad_signatures_and_expired_tokens() {
        let auth = Authenticator::hs256(b"secret", "sub");
        let forged = token(json!({"sub": "ana"}), b"other");
        assert!(auth.identify(&HeaderMap::new(), &query(&forged)).is_err());
        let expired = token(json!({"sub": "ana", "exp": 1_000_000}), b"secret");
        assert!(auth.identify(&HeaderMap::new(), &query(&expired)).is_err());
    }

    #[test]
    fn verifies_rs256_and_es256_with_public_keys() {
        // Keys generated once for this test (openssl genpkey); never used elsewhere.
        let rsa_private = include_str!("../tests/keys/rsa-private.pem");
        let rsa_public = include_str!("../tests/keys/rsa-public.pem");
        let ec_private = include_str!("../tests/keys/ec-private.pem");
        let ec_public = include_str!("../tests/keys/ec-public.pem");
        for (private, public, alg, encoding) in [
            (
                rsa_private,
                rsa_public,
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(rsa_private.as_bytes()),
            ),
            (
                ec_private,
                ec_public,
                Algorithm::ES256,
                EncodingKey::from_ec_pem(ec_private.as_bytes()),
            ),
        ] {
            let _ = private;
            let auth = Authenticator::public_key(public.as_bytes(), "sub").expect("key");
            let t = jsonwebtoken::encode(
                &Header::new(alg),
                &json!({"sub": "ana"}),
                &encoding.expect("private key"),
            )
            .expect("token");
            let id = auth.identify(&HeaderMap::new(), &query(&t)).expect("valid");
            assert_eq!(id.user_id.as_deref(), Some("ana"));
            let hs = token(json!({"sub": "ana"}), b"secret");
            assert!(
                auth.identify(&HeaderMap::new(), &query(&hs)).is_err(),
                "no algorithm confusion"
            );
        }
        assert!(Authenticator::public_key(b"not a key", "sub").is_err());
    }

    #[test]
    fn no_token_is_anonymous() {
        let auth = Authenticator::hs256(b"secret", "sub");
        assert_eq!(
            auth.identify(&HeaderMap::new(), &HashMap::new())
                .expect("ok"),
            Identity::default()
        );
        assert_eq!(
            Authenticator::anonymous()
                .identify(&HeaderMap::new(), &query("junk"))
                .expect("ok"),
            Identity::default()
        );
    }
}
