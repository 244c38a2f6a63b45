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

/// A hub asks one connection for a result (SignalR's client results): an Invocation with an
/// id, whose Completion goes back to the server that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub hub: HubName,
    pub connection: String,
    /// Unique over servers: it names the asking server (`{server}.{n}`), where the answer goes.
    pub invocation_id: String,
    pub method: String,
    /// A JSON array.
    pub arguments: String,
}

impl Question {
    /// The server that asked, from the invocation id.
    pub fn asker(invocation_id: &str) -> Option<&str> {
        invocation_id.split_once('.').map(|(server, _)| server)
    }
}

/// What became of a [`Question`], on its way back to the server that asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub invocation_id: String,
    /// The connection that answered: only the asked one may.
    pub connection: String,
    pub reply: Reply,
}

/// A client's answer to a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Its result, a JSON value.
    Result(String),
    /// It answered with an error (the official client's `Client didn't provide a result.`, a
    /// handler's exception message).
    Error(String),
    /// It disconnected before answering.
    Gone,
}
