//! What a server wants to hear about from the others.

use super::HubName;

/// Messages for one of this server's hubs, connections, groups or users. The local registry
/// reports when the first local member appears and the last one leaves; a backplane that spans
/// servers subscribes and unsubscribes accordingly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interest {
    Hub(HubName),
    Connection(HubName, String),
    Group(HubName, String),
    User(HubName, String),
}

/// A change of this server's interests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterestChange {
    Subscribe(Interest),
    Unsubscribe(Interest),
}
