//! Connection ids and hub names.

use std::borrow::Borrow;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A random URL-safe id of 22 characters (132 bits), like ASP.NET Core's connection ids.
pub fn random_id() -> String {
    let mut rng = rand::rng();
    (0..22)
        .map(|_| ALPHABET[rng.random_range(0..64)] as char)
        .collect()
}

/// A connection's public id (the `connectionId` of negotiate). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// A new random id.
    pub fn random() -> Self {
        Self::new(random_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ConnectionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hub's name: its URL path segment and its component's file stem. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HubName(Arc<str>);

impl HubName {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hub names are URL path segments and file stems: ASCII letters, digits, `-` and `_`.
    pub fn is_valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

impl Borrow<str> for HubName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HubName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hub name a path in the hubs directory serves (`chat.wasm` serves `chat`), if it is a hub
/// file at all: hidden files and other extensions are not. The name may still be invalid
/// ([`HubName::is_valid`]).
pub fn hub_file_stem(path: &Path) -> Option<&str> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.') {
        return None;
    }
    file.strip_suffix(".wasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_safe_and_distinct() {
        let a = random_id();
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(a, random_id());
    }

    #[test]
    fn only_visible_wasm_files_are_hubs() {
        assert_eq!(hub_file_stem(Path::new("/h/chat.wasm")), Some("chat"));
        assert_eq!(hub_file_stem(Path::new("/h/.chat.wasm.tmp")), None);
        assert_eq!(hub_file_stem(Path::new("/h/.chat.wasm")), None);
        assert_eq!(hub_file_stem(Path::new("/h/chat.wasm.part")), None);
        assert_eq!(hub_file_stem(Path::new("/h/notes.txt")), None);
    }

    #[test]
    fn hub_names_are_path_segments() {
        assert!(HubName::is_valid("chat-room_2"));
        assert!(!HubName::is_valid(""));
        assert!(!HubName::is_valid("a/b"));
        assert!(!HubName::is_valid(&"x".repeat(65)));
    }
}
