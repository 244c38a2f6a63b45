//! Who a client is: JWT bearer tokens, from the `Authorization` header or the `access_token`
//! query parameter (how the SignalR clients send them on WebSockets, via `accessTokenFactory`).
//!
//! Without a configured key every connection is anonymous. With one, a valid token gives the
//! connection a user id (from a configurable claim, `sub` by default) and its claims; an invalid
//! or expired token is refused with 401; a missing token is anonymous. As with ASP.NET Core's
//! JwtBearer, a token must carry an expiry (`exp`) unless the host allows tokens without one,
//! and the `Bearer` scheme is matched whatever its case.

use std::collections::HashMap;

use axum::http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
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
    /// The token does not verify; `description` is ASP.NET's `error_description` for the
    /// cause, when it has one.
    #[error("invalid token: {source}")]
    Invalid {
        source: jsonwebtoken::errors::Error,
        description: Option<String>,
    },
    #[error("the hub requires a bearer token")]
    Missing,
}

impl AuthError {
    /// The `WWW-Authenticate` header of the 401 answer, as ASP.NET Core's JwtBearer writes it.
    pub fn challenge(&self) -> String {
        match self {
            Self::Invalid {
                description: Some(description),
                ..
            } => format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
            Self::Invalid { .. } => "Bearer error=\"invalid_token\"".to_owned(),
            Self::Missing => "Bearer".to_owned(),
        }
    }
}

/// Whether tokens must carry an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Tokens without `exp` are refused (ASP.NET Core's default).
    Required,
    /// Tokens without `exp` are accepted (and never expire).
    Optional,
}

/// Checks tokens.
pub struct Authenticator {
    key: Option<(DecodingKey, Validation)>,
    user_claim: String,
}

fn validation(algorithm: Algorithm, expiry: Expiry) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_aud = false;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.required_spec_claims.clear();
    if expiry == Expiry::Required {
        validation.required_spec_claims.insert("exp".to_owned());
    }
    validation
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
    pub fn hs256(secret: &[u8], user_claim: impl Into<String>, expiry: Expiry) -> Self {
        Self {
            key: Some((
                DecodingKey::from_secret(secret),
                validation(Algorithm::HS256, expiry),
            )),
            user_claim: user_claim.into(),
        }
    }

    /// RS256 or ES256 tokens verified with a PEM public key (RSA or EC P-256).
    pub fn public_key(
        pem: &[u8],
        user_claim: impl Into<String>,
        expiry: Expiry,
    ) -> Result<Self, String> {
        let (key, algorithm) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (key, Algorithm::ES256),
                Err(e) => return Err(format!("not an RSA or EC public key in PEM form ({e})")),
            },
        };
        Ok(Self {
            key: Some((key, validation(algorithm, expiry))),
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
        let Some(token) = request_token(headers, query) else {
            return Ok(Identity::default());
        };
        let data = jsonwebtoken::decode::<HashMap<String, Value>>(token, key, validation).map_err(
            |source| AuthError::Invalid {
                description: describe(&source, token),
                source,
            },
        )?;
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

/// The bearer token of a request: the `Authorization: Bearer` header, else the `access_token`
/// query parameter (how browsers send it where they cannot set headers).
pub fn request_token<'a>(
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
) -> Option<&'a str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or_else(|| query.get("access_token").map(String::as_str))
        .filter(|t| !t.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header, the scheme in any case.
fn bearer_token(header: &str) -> Option<&str> {
    let scheme = header.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| header[7..].trim())
}

/// ASP.NET Core's `error_description` for why a token was refused, where it has one.
fn describe(error: &jsonwebtoken::errors::Error, token: &str) -> Option<String> {
    let claim = |name: &str| {
        jsonwebtoken::dangerous::insecure_decode::<HashMap<String, Value>>(token)
            .ok()
            .and_then(|data| data.claims.get(name).and_then(Value::as_i64))
    };
    match error.kind() {
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => {
            Some("The token has no expiration".to_owned())
        }
        ErrorKind::ExpiredSignature => Some(match claim("exp") {
            Some(exp) => format!("The token expired at '{}'", invariant_date(exp)),
            None => "The token has expired".to_owned(),
        }),
        ErrorKind::ImmatureSignature => Some(match claim("nbf") {
            Some(nbf) => format!("The token is not valid before '{}'", invariant_date(nbf)),
            None => "The token is not valid yet".to_owned(),
        }),
        // With no key id in the token, ASP.NET tries its keys and reports none matching.
        ErrorKind::InvalidSignature => Some("The signature key was not found".to_owned()),
        _ => None,
    }
}

/// A Unix time as .NET's invariant culture prints a UTC `DateTime`: `MM/dd/yyyy HH:mm:ss`.
fn invariant_date(unix_seconds: i64) -> String {
    let t = crate::units::civil_time(unix_seconds);
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}:{:02}",
        t.month, t.day, t.year, t.hour, t.minute, t.second
    )
}

/// 401 for a token that does not verify (or a missing one), with ASP.NET's challenge.
pub fn unauthorized(error: &AuthError) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    tracing::debug!("refused a token: {error}");
    let challenge = HeaderValue::from_str(&error.challenge())
        .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        "Unauthorized",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const LATER: u64 = 4_000_000_000;

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

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", value.parse().expect("header"));
        headers
    }

    fn refusal(auth: &Authenticator, token: &str) -> String {
        auth.identify(&HeaderMap::new(), &query(token))
            .expect_err("refused")
            .challenge()
    }

    #[test]
    fn reads_the_user_from_the_configured_claim() {
        let auth = Authenticator::hs256(b"secret", "sub", Expiry::Required);
        let t = token(
            json!({"sub": "ana", "role": "admin", "exp": LATER}),
            b"secret",
        );
        let id = auth.identify(&HeaderMap::new(), &query(&t)).expect("valid");
        assert_eq!(id.user_id.as_deref(), Some("ana"));
        assert!(id.claims.contains(&("role".into(), "admin".into())));
        let id = auth
            .identify(&header(&format!("Bearer {t}")), &HashMap::new())
            .expect("valid");
        assert_eq!(id.user_id.as_deref(), Some("ana"));
    }

    #[test]
    fn matches_the_bearer_scheme_in_any_case() {
        let auth = Authenticator::hs256(b"secret", "sub", Expiry::Required);
        let t = token(json!({"sub": "ana", "exp": LATER}), b"secret");
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            let id = auth
                .identify(&header(&format!("{scheme} {t}")), &HashMap::new())
                .expect("valid");
            assert_eq!(id.user_id.as_deref(), Some("ana"), "{scheme}");
        }
        // Another scheme is no bearer token: anonymous, as with ASP.NET.
        let id = auth
            .identify(&header(&format!("Basic {t}")), &HashMap::new())
            .expect("anonymous");
        assert_eq!(id, Identity::default());
    }

    #[test]
    fn refuses_tokens_without_expiry_unless_allowed() {
        let t = token(json!({"sub": "ana"}), b"secret");
        let strict = Authenticator::hs256(b"secret", "sub", Expiry::Required);
        assert_eq!(
            refusal(&strict, &t),
            "Bearer error=\"invalid_token\", error_description=\"The token has no expiration\""
        );
        let lenient = Authenticator::hs256(b"secret", "sub", Expiry::Optional);
        let id = lenient
            .identify(&HeaderMap::new(), &query(&t))
            .expect("valid");
        assert_eq!(id.user_id.as_deref(), Some("ana"));
    }

    #[test]
    fn refuses_bad_signatures_and_expired_tokens_with_aspnet_descriptions() {
        let auth = Authenticator::hs256(b"secret", "sub", Expiry::Required);
        let forged = token(json!({"sub": "ana", "exp": LATER}), b"other");
        assert_eq!(
            refusal(&auth, &forged),
            "Bearer error=\"invalid_token\", error_description=\"The signature key was not found\""
        );
        let expired = token(json!({"sub": "ana", "exp": 1_736_946_309}), b"secret");
        assert_eq!(
            refusal(&auth, &expired),
            "Bearer error=\"invalid_token\", error_description=\"The token expired at '01/15/2025 13:05:09'\""
        );
        assert_eq!(
            refusal(&auth, "not.a.token"),
            "Bearer error=\"invalid_token\""
        );
    }

    #[test]
    fn prints_dates_as_dotnet_invariant_culture() {
        assert_eq!(invariant_date(0), "01/01/1970 00:00:00");
        assert_eq!(invariant_date(951_782_400), "02/29/2000 00:00:00");
        assert_eq!(invariant_date(4_102_444_799), "12/31/2099 23:59:59");
    }

    #[test]
    fn verifies_rs256_and_es256_with_public_keys() {
        // Keys generated once for this test (openssl genpkey); never used elsewhere.
        let rsa_private = include_str!("../tests/keys/rsa-private.pem");
        let rsa_public = include_str!("../tests/keys/rsa-public.pem");
        let ec_private = include_str!("../tests/keys/ec-private.pem");
        let ec_public = include_str!("../tests/keys/ec-public.pem");
        for (public, alg, encoding) in [
            (
                rsa_public,
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(rsa_private.as_bytes()),
            ),
            (
                ec_public,
                Algorithm::ES256,
                EncodingKey::from_ec_pem(ec_private.as_bytes()),
            ),
        ] {
            let auth =
                Authenticator::public_key(public.as_bytes(), "sub", Expiry::Required).expect("key");
            let t = jsonwebtoken::encode(
                &Header::new(alg),
                &json!({"sub": "ana", "exp": LATER}),
                &encoding.expect("private key"),
            )
            .expect("token");
            let id = auth.identify(&HeaderMap::new(), &query(&t)).expect("valid");
            assert_eq!(id.user_id.as_deref(), Some("ana"));
            let hs = token(json!({"sub": "ana", "exp": LATER}), b"secret");
            assert!(
                auth.identify(&HeaderMap::new(), &query(&hs)).is_err(),
                "no algorithm confusion"
            );
        }
        assert!(Authenticator::public_key(b"not a key", "sub", Expiry::Required).is_err());
    }

    #[test]
    fn no_token_is_anonymous() {
        let auth = Authenticator::hs256(b"secret", "sub", Expiry::Required);
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
