//! Asking one client for a result (SignalR's client results).

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::HubError;
use crate::imports::results as wit;

/// One connection, to ask for a result: SignalR's `Clients.Client(id).InvokeAsync<T>(...)`.
/// The client runs its handler (`connection.on("Answer", (q) => ...)`) and its return value comes
/// back to the hub, whichever server the connection is on.
///
/// Only a single connection can be asked, as in ASP.NET: there is no way to ask a group or
/// everyone, so such code does not compile:
///
/// ```compile_fail
/// use hubhost_sdk::prelude::*;
/// # fn f() -> HubResult {
/// let answers: Vec<String> = Clients::all().invoke("Answer", ("everyone?",))?;
/// # Ok(()) }
/// ```
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// pub struct Quiz;
///
/// #[hub]
/// impl Quiz {
///     /// Asks `connection_id` the question and returns its answer to the caller.
///     fn ask(connection_id: String, question: String) -> HubResult<String> {
///         Ok(Client::new(connection_id).invoke("Answer", (question,))?)
///     }
/// }
/// ```
///
/// The wait holds the call (and its instance) and counts against the call's deadline
/// (`--call-timeout`, 5 s by default); [`Client::timeout`] shortens it. A hub may ask its own
/// caller: the host keeps reading the caller's messages while the call waits.
#[derive(Debug, Clone)]
#[must_use = "a Client does nothing until you call invoke"]
pub struct Client {
    connection_id: String,
    timeout: Duration,
}

/// Why a client gave no result. With `?` in a hub method it becomes the method's error: a
/// client's own error text is shown to the caller (as ASP.NET's `HubException`); a timeout or a
/// connection that is gone is an unexpected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The client answered with an error: the official client's `Client didn't provide a
    /// result.` when it has no handler for the method, or the message its handler threw.
    Client(String),
    /// No answer in time.
    Timeout,
    /// The connection left before answering, or was never there.
    Gone,
    /// The client's result is not what the hub expected.
    BadResult(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client(text) => f.write_str(text),
            Self::Timeout => f.write_str("The client did not answer in time."),
            Self::Gone => f.write_str("The client is not connected."),
            Self::BadResult(text) => write!(f, "The client's result does not bind: {text}"),
        }
    }
}

impl From<ClientError> for HubError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Client(text) => HubError::new(text),
            ClientError::Timeout => {
                HubError::exception("OperationCanceledException", error.to_string())
            }
            ClientError::Gone => HubError::exception("IOException", error.to_string()),
            ClientError::BadResult(_) => {
                HubError::exception("InvalidDataException", error.to_string())
            }
        }
    }
}

impl Client {
    /// The connection with this id (on any server).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f(ctx: &Context) {
    /// let caller = Client::new(ctx.connection_id());
    /// # }
    /// ```
    pub fn new(connection_id: impl Into<String>) -> Self {
        Self {
            connection_id: connection_id.into(),
            timeout: Duration::from_millis(u32::MAX.into()),
        }
    }

    /// Gives up after `timeout` (the call's deadline applies anyway).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let ok: bool = Client::new("c1").timeout(Duration::from_secs(2)).invoke("Confirm", ("Delete?",))?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs client method `method` with `arguments` (a tuple, as for [`crate::Clients::send`])
    /// and returns its result.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// # fn f() -> HubResult {
    /// let answer: String = Client::new("c1").invoke("Answer", ("What is 6 x 7?",))?;
    /// # Ok(()) }
    /// ```
    pub fn invoke<T: DeserializeOwned>(
        &self,
        method: &str,
        arguments: impl Serialize,
    ) -> Result<T, ClientError> {
        let json = crate::clients::arguments_json(method, &arguments)
            .map_err(|e| ClientError::BadResult(e.to_string()))?;
        let timeout_ms = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        match wit::ask(&self.connection_id, method, &json, timeout_ms) {
            Ok(result) => {
                serde_json::from_str(&result).map_err(|e| ClientError::BadResult(e.to_string()))
            }
            Err(wit::AskError::Client(text)) => Err(ClientError::Client(text)),
            Err(wit::AskError::Timeout) => Err(ClientError::Timeout),
            Err(wit::AskError::Gone) => Err(ClientError::Gone),
        }
    }
}
