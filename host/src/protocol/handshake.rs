//! The handshake: the client's first record names the protocol and version; the server answers
//! `{}` or `{"error": "..."}` (then closes).

use serde::Deserialize;

/// The JSON hub protocol accepts versions 1 and 2 (2 only adds stateful reconnect, which is
/// negotiated separately), as ASP.NET Core does.
const JSON_MAX_VERSION: u64 = 2;

/// The success answer, record separator included.
pub const HANDSHAKE_OK: &str = "{}\u{1e}";

/// The protocol a client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `json`, version 1 or 2.
    Json,
}

/// Why a handshake failed; the `Display` text is ASP.NET Core's, sent to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion { protocol: String, version: u64 },
    #[error("An unexpected error occurred during connection handshake. InvalidDataException: {0}")]
    Invalid(String),
    #[error("Handshake was canceled.")]
    TimedOut,
}

#[derive(Deserialize)]
struct Request {
    protocol: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Reads the client's handshake record (without its separator).
pub fn parse_request(record: &[u8]) -> Result<Protocol, HandshakeError> {
    let request: Request = serde_json::from_slice(record)
        .map_err(|e| HandshakeError::Invalid(format!("Error reading JSON: {e}")))?;
    let protocol = match request.protocol {
        Some(serde_json::Value::String(p)) => p,
        Some(_) => {
            return Err(HandshakeError::Invalid(
                "Expected 'protocol' to be of type String.".into(),
            ));
        }
        None => {
            return Err(HandshakeError::Invalid(
                "Missing required property 'protocol'.".into(),
            ));
        }
    };
    let version = match request.version {
        Some(v) => v.as_u64().ok_or_else(|| {
            HandshakeError::Invalid("Expected 'version' to be of type Integer.".into())
        })?,
        None => {
            return Err(HandshakeError::Invalid(
                "Missing required property 'version'.".into(),
            ));
        }
    };
    if protocol != "json" {
        return Err(HandshakeError::UnsupportedProtocol(protocol));
    }
    if version == 0 || version > JSON_MAX_VERSION {
        return Err(HandshakeError::UnsupportedVersion { protocol, version });
    }
    Ok(Protocol::Json)
}

/// The error answer for a failed handshake, record separator included.
pub fn error_response(error: &HandshakeError) -> String {
    let mut out = serde_json::json!({ "error": error.to_string() }).to_string();
    out.push('\u{1e}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json_versions_1_and_2() {
        assert_eq!(
            parse_request(br#"{"protocol":"json","version":1}"#),
            Ok(Protocol::Json)
        );
        assert_eq!(
            parse_request(br#"{"protocol":"json","version":2}"#),
            Ok(Protocol::Json)
        );
    }

    #[test]
    fn rejects_other_protocols_with_aspnet_text() {
        let err = parse_request(br#"{"protocol":"messagepack","version":1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The protocol 'messagepack' is not supported."
        );
    }

    #[test]
    fn rejects_unknown_versions_with_aspnet_text() {
        let err = parse_request(br#"{"protocol":"json","version":3}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The server does not support version 3 of the 'json' protocol."
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse_request(b"hello"),
            Err(HandshakeError::Invalid(_))
        ));
        assert!(matches!(
            parse_request(br#"{"version":1}"#),
            Err(HandshakeError::Invalid(m)) if m == "Missing required property 'protocol'."
        ));
    }

    #[test]
    fn error_response_is_a_json_record() {
        assert_eq!(
            error_response(&HandshakeError::TimedOut),
            "{\"error\":\"Handshake was canceled.\"}\u{1e}"
        );
    }
}
