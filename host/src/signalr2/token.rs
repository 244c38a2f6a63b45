//! Connection tokens: what a SignalR 2 client carries on every request after negotiate.
//!
//! SignalR 2 protects `<connectionId>:<user>` with the machine key, so a client cannot forge
//! another's token and the server keeps nothing to check it. This does the same with an
//! HMAC-SHA256: `base64url(id:user).base64url(mac)`. Hosts that share the key
//! (`--signalr2-token-key`) accept each other's tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::types::ConnectionId;

type HmacSha256 = Hmac<Sha256>;

/// The key tokens are signed with.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub connection_id: ConnectionId,
    /// The user it was issued to; empty when anonymous, as in SignalR 2.
    pub user: String,
}

/// Why a token was refused: SignalR 2 says only that it is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The ConnectionId is in the incorrect format.")]
pub struct BadToken;

impl TokenKey {
    /// A key of this process only.
    pub fn random() -> Self {
        Self(rand::rng().random())
    }

    /// A key from a shared secret (any length).
    pub fn from_secret(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }

    /// `payload`, signed for `purpose` (so a token of one kind never passes for another).
    fn sign(&self, purpose: &str, payload: &str) -> String {
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The payload of a token signed for `purpose`.
    fn verify(&self, purpose: &str, token: &str) -> Result<String, BadToken> {
        let (payload, tag) = token.split_once('.').ok_or(BadToken)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| BadToken)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| BadToken)?;
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| BadToken)?;
        String::from_utf8(payload).map_err(|_| BadToken)
    }

    /// The token of a connection.
    pub fn protect(&self, connection_id: &ConnectionId, user: &str) -> String {
        self.sign(CONNECTION, &format!("{connection_id}:{user}"))
    }

    /// Checks a token and reads it.
    pub fn unprotect(&self, token: &str) -> Result<TokenClaims, BadToken> {
        let payload = self.verify(CONNECTION, token)?;
        let (id, user) = payload.split_once(':').ok_or(BadToken)?;
        if id.is_empty() {
            return Err(BadToken);
        }
        Ok(TokenClaims {
            connection_id: ConnectionId::new(id),
            user: user.to_owned(),
        })
    }
}

impl TokenKey {
    /// The groups token of a connection (SignalR 2's `G`): its groups as `Hub.group` names.
    pub fn protect_groups(&self, connection_id: &ConnectionId, groups: &[String]) -> String {
        let list = serde_json::to_string(groups).unwrap_or_else(|_| "[]".into());
        self.sign(GROUPS, &format!("{connection_id}:{list}"))
    }

    /// The groups a groups token names, if it is genuine and this connection's.
    pub fn unprotect_groups(
        &self,
        connection_id: &ConnectionId,
        token: &str,
    ) -> Option<Vec<String>> {
        let payload = self.verify(GROUPS, token).ok()?;
        let (id, list) = payload.split_once(':')?;
        if id != connection_id.as_str() {
            return None;
        }
        serde_json::from_str(list).ok()
    }
}

/// What a token is for (SignalR 2's purposes).
const CONNECTION: &str = "SignalR.ConnectionToken";
const GROUPS: &str = "SignalR.Groups.v1.1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_resists_tampering() {
        let key = TokenKey::random();
        let id = ConnectionId::new("abc");
        let token = key.protect(&id, "ana");
        assert_eq!(
            key.unprotect(&token),
            Ok(TokenClaims {
                connection_id: id.clone(),
                user: "ana".into()
            })
        );
        // Someone else's id with this token's signature.
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("other:ana"));
        assert_eq!(key.unprotect(&forged), Err(BadToken));
        assert_eq!(key.unprotect("garbage"), Err(BadToken));
        assert_eq!(key.unprotect(""), Err(BadToken));
        // Another key's token.
        assert_eq!(TokenKey::random().unprotect(&token), Err(BadToken));
        // A shared secret gives the same key on every host.
        let shared = TokenKey::from_secret("s3cret");
        let token = shared.protect(&id, "");
        assert_eq!(
            TokenKey::from_secret("s3cret")
                .unprotect(&token)
                .map(|c| c.user),
            Ok(String::new())
        );
    }
}
