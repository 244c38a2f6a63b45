//! From a decoded message to a hub call and back: runs the call, hands the recorded effects to
//! the router in order, and turns the outcome into SignalR's completion texts.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::router::Router;
use crate::runtime::{Call, CallError, CallOutcome, Effect, HubError, HubRuntime, LoadedHub};
use crate::types::Caller;

/// Runs hub calls for connections.
pub struct Dispatcher {
    runtime: Arc<HubRuntime>,
    router: Router,
    /// Like ASP.NET Core's `EnableDetailedErrors`: show unexpected failures' causes to callers.
    detailed_errors: bool,
    metrics: Arc<Metrics>,
}

/// Errors of a hub call, as SignalR texts ready for a Completion or a Close.
pub type ErrorText = String;

impl Dispatcher {
    pub fn new(runtime: Arc<HubRuntime>, router: Router, detailed_errors: bool) -> Self {
        Self {
            runtime,
            router,
            detailed_errors,
            metrics: Arc::new(Metrics::default()),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs one call, timing it and counting how it ended.
    async fn call(&self, hub: &LoadedHub, caller: &Caller, call: Call<'_>) -> CallOutcome {
        let started = std::time::Instant::now();
        let outcome = hub.call(caller, call).await;
        self.metrics.call_duration.observe(started.elapsed());
        Metrics::inc(&self.metrics.hub_calls);
        match &outcome.result {
            Err(CallError::Trap(_)) => Metrics::inc(&self.metrics.traps),
            Err(CallError::Deadline(_)) => Metrics::inc(&self.metrics.deadline_hits),
            Err(CallError::Memory(_)) => Metrics::inc(&self.metrics.memory_hits),
            _ => {}
        }
        outcome
    }

    pub fn runtime(&self) -> &Arc<HubRuntime> {
        &self.runtime
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Invokes a hub method; `Ok(Some(json))` is a result, `Ok(None)` a void completion.
    pub async fn invoke(
        &self,
        caller: &Caller,
        method: &str,
        arguments: &str,
    ) -> Result<Option<String>, ErrorText> {
        let Some(hub) = self.runtime.hub(caller.hub.as_str()) else {
            return Err(method_not_found(method));
        };
        let outcome = self
            .call(&hub, caller, Call::Invoke { method, arguments })
            .await;
        self.finish(outcome).await.map_err(|e| {
            self.log_failure(&e, method, caller, &hub);
            self.error_text(&e, method)
        })
    }

    /// Tells the hub a client connected. An error means the connection must close.
    pub async fn connected(&self, caller: &Caller) -> Result<(), ErrorText> {
        let Some(hub) = self.runtime.hub(caller.hub.as_str()) else {
            return Err(
                "Connection closed with an error. HubException: The hub is not loaded.".into(),
            );
        };
        let outcome = self.call(&hub, caller, Call::Connected).await;
        match self.finish(outcome).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.log_failure(&e, "OnConnected", caller, &hub);
                Err(self.close_text(&e))
            }
        }
    }

    /// Tells the hub a client disconnected (`error` says why when it was not clean).
    pub async fn disconnected(&self, caller: &Caller, error: Option<&str>) {
        let Some(hub) = self.runtime.hub(caller.hub.as_str()) else {
            return;
        };
        let outcome = self.call(&hub, caller, Call::Disconnected { error }).await;
        if let Err(e) = self.finish(outcome).await {
            self.log_failure(&e, "OnDisconnected", caller, &hub);
        }
    }

    /// Carries out the effects in order, then returns the call's own result.
    async fn finish(&self, outcome: CallOutcome) -> Result<Option<String>, CallError> {
        for effect in outcome.effects {
            match effect {
                Effect::Send(envelope) => self.router.send(envelope),
                Effect::Group(change) => {
                    if let Err(e) = self.router.change_group(change).await {
                        // Like an exception at `await Groups.AddToGroupAsync(..)`: the call
                        // fails and what the hub did after it does not happen.
                        return Err(CallError::Backplane(e.to_string()));
                    }
                }
            }
        }
        outcome.result
    }

    fn log_failure(&self, error: &CallError, method: &str, caller: &Caller, hub: &LoadedHub) {
        let connection = caller.connection_id.as_str();
        let hub = hub.name().as_str();
        match error {
            CallError::Hub(HubError::Failed(text)) => {
                tracing::error!(hub, method, connection, "hub method failed: {text}")
            }
            CallError::Hub(_) => {}
            CallError::Trap(trap) => {
                tracing::error!(hub, method, connection, "hub trapped: {trap}")
            }
            CallError::Deadline(_)
            | CallError::Memory(_)
            | CallError::InvalidResult(_)
            | CallError::Unavailable(_)
            | CallError::Backplane(_) => {
                tracing::error!(hub, method, connection, "hub call failed: {error}")
            }
        }
    }

    fn error_text(&self, error: &CallError, method: &str) -> ErrorText {
        let unexpected = format!("An unexpected error occurred invoking '{method}' on the server.");
        match error {
            CallError::Hub(HubError::MethodNotFound) => method_not_found(method),
            CallError::Hub(HubError::InvalidArguments(text)) => {
                // The caller's own mistake: nothing secret, so always say what it was.
                format!(
                    "Failed to invoke '{method}' due to an error on the server. InvalidDataException: {text}"
                )
            }
            CallError::Hub(HubError::Rejected(text)) => {
                format!("{unexpected} HubException: {text}")
            }
            other => {
                if self.detailed_errors {
                    format!("{unexpected} {}", describe(other))
                } else {
                    unexpected
                }
            }
        }
    }

    /// The Close text for a failed `on-connected`.
    fn close_text(&self, error: &CallError) -> ErrorText {
        let base = "Connection closed with an error.";
        match error {
            CallError::Hub(HubError::Rejected(text)) => format!("{base} HubException: {text}"),
            other if self.detailed_errors => format!("{base} {}", describe(other)),
            _ => base.to_owned(),
        }
    }
}

/// SignalR's text for an unknown method.
fn method_not_found(method: &str) -> ErrorText {
    format!(
        "Failed to invoke '{method}' due to an error on the server. HubException: Method does not exist."
    )
}

/// An unexpected failure as `Kind: detail`, the shape of .NET's detailed errors.
fn describe(error: &CallError) -> String {
    match error {
        CallError::Hub(HubError::Failed(text)) => format!("Exception: {text}"),
        CallError::Hub(other) => format!("Exception: {other:?}"),
        CallError::Deadline(_) => format!("TimeoutException: {error}"),
        CallError::Memory(_) => format!("OutOfMemoryException: {error}"),
        CallError::Trap(trap) => format!("WasmTrap: {}", trap.lines().next().unwrap_or("trap")),
        CallError::InvalidResult(_) => format!("InvalidDataException: {error}"),
        CallError::Unavailable(text) => format!("HubUnavailableException: {text}"),
        CallError::Backplane(text) => format!("TimeoutException: {text}"),
    }
}
