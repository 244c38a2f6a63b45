//! What a hub asks for: sends (an [`Envelope`] with its [`Target`]) and [`GroupChange`]s.

use serde::{Deserialize, Serialize};

use super::HubName;

/// Who receives a send, within one hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    All,
    AllExcept(Vec<String>),
    Connection(String),
    Connections(Vec<String>),
    Group(String),
    GroupExcept {
        group: String,
        excluded: Vec<String>,
    },
    Groups(Vec<String>),
    User(String),
    Users(Vec<String>),
}

/// One send: the hub, the recipients, and the client method with its JSON array of arguments.
/// Each server encodes the frame from it once per protocol its recipients use, and shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub hub: HubName,
    pub target: Target,
    pub method: String,
    pub arguments: String,
}

/// A group membership change for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupChange {
    Add {
        hub: HubName,
        connection: String,
        group: String,
    },
    Remove {
        hub: HubName,
        connection: String,
        group: String,
    },
}

impl GroupChange {
    pub fn hub(&self) -> &HubName {
        match self {
            Self::Add { hub, .. } | Self::Remove { hub, .. } => hub,
        }
    }

    pub fn connection(&self) -> &str {
        match self {
            Self::Add { connection, .. } | Self::Remove { connection, .. } => connection,
        }
    }

    pub fn group(&self) -> &str {
        match self {
            Self::Add { group, .. } | Self::Remove { group, .. } => group,
        }
    }
}
