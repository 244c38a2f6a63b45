//! The handshake: the client's first record (always JSON, ended by `0x1E`) names the protocol
//! and version; the server answers `{}` or `{"error": "..."}` (then closes).

use bytes::BytesMut;
use serde::Deserialize;

use super::json::{JSON, next_record};
use super::messagepack::MESSAGEPACK;
use super::{Frame, HubProtocol, ProtocolError, TransferFormat};

/// The version of both hub protocols (2 adds stateful reconnect, negotiated separately). As in
/// ASP.NET Core 8+, a client may ask for any version up to it: 0, 1 or 2.
const MAX_VERSION: i64 = 2;

/// The protocols this server speaks.
const PROTOCOLS: &[&dyn HubProtocol] = &[&JSON, &MESSAGEPACK];

/// The protocol this server speaks by the name clients ask for, if it speaks it.
pub fn protocol_named(name: &str) -> Option<&'static dyn HubProtocol> {
    PROTOCOLS.iter().copied().find(|p| p.name() == name)
}

/// The success answer, record separator included, in the chosen protocol's transfer format
/// (over WebSockets a MessagePack client gets it as a binary message, as from ASP.NET).
pub fn success(protocol: &dyn HubProtocol) -> Frame {
    const OK: &str = "{}\u{1e}";
    match protocol.transfer_format() {
        TransferFormat::Text => Frame::static_text(OK),
        TransferFormat::Binary => Frame::binary(bytes::Bytes::from_static(OK.as_bytes())),
    }
}

/// Why a handshake failed; the `Display` text is ASP.NET Core's, sent to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion { protocol: String, version: i64 },
    #[error(
        "Cannot use the '{protocol}' protocol on the current transport. The transport does not support '{format:?}' transfer format."
    )]
    UnsupportedTransferFormat {
        protocol: String,
        format: TransferFormat,
    },
    #[error("An unexpected error occurred during connection handshake. InvalidDataException: {0}")]
    Invalid(String),
    /// The client did not send its handshake in time, sent one too large, or went away.
    #[error("Handshake was canceled.")]
    Canceled,
}

impl From<ProtocolError> for HandshakeError {
    fn from(_: ProtocolError) -> Self {
        // ASP.NET answers an oversized handshake like a late one.
        Self::Canceled
    }
}

/// What a client's handshake chose.
#[derive(Debug, Clone, Copy)]
pub struct Chosen {
    pub protocol: &'static dyn HubProtocol,
    /// The protocol version it asked for; 2 turns stateful reconnect on, if negotiated.
    pub version: i64,
}

impl Chosen {
    /// Whether the client can resume the connection (stateful reconnect): protocol version 2.
    pub fn resumable(&self) -> bool {
        self.version >= 2
    }
}

#[derive(Deserialize)]
struct Request {
    protocol: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Takes the handshake request from `buffer` if it is complete and answers it: the protocol
/// the client chose, or why not. `Ok(None)` until the whole record has arrived; bytes after it
/// stay in `buffer` for the chosen protocol. `binary` says whether the transport carries
/// binary frames (Server-Sent Events do not).
pub fn read(
    buffer: &mut BytesMut,
    max_size: usize,
    binary: bool,
) -> Result<Option<Chosen>, HandshakeError> {
    let Some(record) = next_record(buffer, max_size)? else {
        return Ok(None);
    };
    let chosen = parse_request(&record)?;
    let protocol = chosen.protocol;
    if protocol.transfer_format() == TransferFormat::Binary && !binary {
        return Err(HandshakeError::UnsupportedTransferFormat {
            protocol: protocol.name().to_owned(),
            format: TransferFormat::Binary,
        });
    }
    Ok(Some(chosen))
}

/// Reads the client's handshake record (without its separator).
pub fn parse_request(record: &[u8]) -> Result<Chosen, HandshakeError> {
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
        Some(v) => v.as_i64().ok_or_else(|| {
            HandshakeError::Invalid("Expected 'version' to be of type Integer.".into())
        })?,
        None => {
            return Err(HandshakeError::Invalid(
                "Missing required property 'version'.".into(),
            ));
        }
    };
    // Names match whatever their case, as ASP.NET's resolver does.
    let Some(chosen) = PROTOCOLS
        .iter()
        .find(|p| p.name().eq_ignore_ascii_case(&protocol))
    else {
        return Err(HandshakeError::UnsupportedProtocol(protocol));
    };
    if version > MAX_VERSION {
        return Err(HandshakeError::UnsupportedVersion { protocol, version });
    }
    let chosen = Chosen {
        protocol: *chosen,
        version,
    };
    Ok(chosen)
}

/// The error answer for a failed handshake, record separator included.
pub fn error_response(error: &HandshakeError) -> Frame {
    let mut out = serde_json::json!({ "error": error.to_string() }).to_string();
    out.push('\u{1e}');
    Frame::text(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(record: &[u8]) -> Result<&'static str, HandshakeError> {
        parse_request(record).map(|c| c.protocol.name())
    }

    #[test]
    fn accepts_versions_up_to_the_servers_as_aspnet_8() {
        for version in [0, 1, 2] {
            let request = format!(r#"{{"protocol":"json","version":{version}}}"#);
            assert_eq!(chosen(request.as_bytes()), Ok("json"));
            let request = format!(r#"{{"protocol":"messagepack","version":{version}}}"#);
            assert_eq!(chosen(request.as_bytes()), Ok("messagepack"));
        }
        assert_eq!(chosen(br#"{"protocol":"JSON","version":1}"#), Ok("json"));
    }

    #[test]
    fn rejects_other_protocols_with_aspnet_text() {
        let err = chosen(br#"{"protocol":"xml","version":1}"#).unwrap_err();
        assert_eq!(err.to_string(), "The protocol 'xml' is not supported.");
    }

    #[test]
    fn refuses_binary_protocols_on_text_transports() {
        let mut buffer = BytesMut::from(&b"{\"protocol\":\"messagepack\",\"version\":1}\x1e"[..]);
        let err = read(&mut buffer, 1024, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format."
        );
    }

    #[test]
    fn rejects_unknown_versions_with_aspnet_text() {
        let err = chosen(br#"{"protocol":"json","version":3}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The server does not support version 3 of the 'json' protocol."
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(chosen(b"hello"), Err(HandshakeError::Invalid(_))));
        assert!(matches!(
            chosen(br#"{"version":1}"#),
            Err(HandshakeError::Invalid(m)) if m == "Missing required property 'protocol'."
        ));
    }

    #[test]
    fn reads_the_request_and_leaves_what_follows() {
        let mut buffer = BytesMut::from(&br#"{"protocol":"json","ver"#[..]);
        assert!(matches!(read(&mut buffer, 1024, true), Ok(None)));
        buffer.extend_from_slice(b"sion\":1}\x1e{\"type\":6}\x1e");
        assert!(
            matches!(read(&mut buffer, 1024, true), Ok(Some(c)) if c.protocol.name() == "json")
        );
        assert_eq!(&buffer[..], b"{\"type\":6}\x1e");
        let mut huge = BytesMut::from(&[b' '; 64][..]);
        assert_eq!(
            read(&mut huge, 16, true).err(),
            Some(HandshakeError::Canceled)
        );
    }

    #[test]
    fn error_response_is_a_json_record() {
        assert_eq!(
            error_response(&HandshakeError::Canceled).as_bytes(),
            b"{\"error\":\"Handshake was canceled.\"}\x1e"
        );
    }
}
