//! How hub files are named to SignalR 2 clients.
//!
//! A 2.x page names hubs by their .NET class (`ChatHub`, reached as `$.connection.chatHub`),
//! while a hub file is named by its stem (`chat.wasm`). Each hub answers to its *legacy name*,
//! the stem in PascalCase with `Hub` appended (`chat` → `ChatHub`, `game-lobby` →
//! `GameLobbyHub`; a stem already ending in `hub` keeps its ending), and to its stem; both
//! ignoring case, as SignalR 2 looks hubs up.

use crate::types::HubName;

/// The legacy (2.x) name of a hub: `chat` → `ChatHub`.
pub fn legacy_name(hub: &HubName) -> String {
    let mut name: String = hub
        .as_str()
        .split(['-', '_', '.', ' '])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect();
    if !name.to_ascii_lowercase().ends_with("hub") {
        name.push_str("Hub");
    }
    name
}

/// The name of a hub's proxy on `$.connection`: its legacy name with the first letter lowered
/// (`ChatHub` → `chatHub`), as SignalR 2's generator names them.
pub fn proxy_name(legacy: &str) -> String {
    let mut chars = legacy.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Which of `hubs` a client means by `name` (its legacy name or its stem, any case).
pub fn resolve<'a>(hubs: impl IntoIterator<Item = &'a HubName>, name: &str) -> Option<HubName> {
    hubs.into_iter()
        .find(|hub| {
            hub.as_str().eq_ignore_ascii_case(name) || legacy_name(hub).eq_ignore_ascii_case(name)
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_are_pascal_case_with_hub() {
        for (stem, legacy) in [
            ("chat", "ChatHub"),
            ("game-lobby", "GameLobbyHub"),
            ("my_room", "MyRoomHub"),
            ("chathub", "Chathub"),
            ("ChatHub", "ChatHub"),
            ("presence", "PresenceHub"),
        ] {
            assert_eq!(legacy_name(&HubName::new(stem)), legacy, "{stem}");
        }
        assert_eq!(proxy_name("ChatHub"), "chatHub");
    }

    #[test]
    fn hubs_are_found_by_legacy_name_or_stem_in_any_case() {
        let hubs = [HubName::new("chat"), HubName::new("lobby")];
        for name in ["chathub", "ChatHub", "chat", "CHAT"] {
            assert_eq!(resolve(&hubs, name), Some(HubName::new("chat")), "{name}");
        }
        assert_eq!(resolve(&hubs, "lobbyhub"), Some(HubName::new("lobby")));
        assert_eq!(resolve(&hubs, "nothub"), None);
    }
}
