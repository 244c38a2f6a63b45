//! From a decoded message to a hub call and back: runs the call, hands the recorded effects to
//! the router in order, and turns the outcome into SignalR's completion texts.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::router::Router;
use crate::runtime::{
    Answer, Call, CallError, CallOutcome, Effect, HubError, HubRuntime, LoadedHub, MethodInfo,
    StreamNext, UploadEvent, UploadStep,
};
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

/// How a call for a client ended: its reply, and whether the hub aborted the connection
/// (SignalR's `Context.Abort()`), which closes once the reply is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replied<T> {
    pub reply: Result<T, ErrorText>,
    pub abort: bool,
}

impl<T> Replied<T> {
    fn error(text: ErrorText) -> Self {
        Self {
            reply: Err(text),
            abort: false,
        }
    }
}

/// Why an invocation failed, before it is worded for a client.
#[derive(Debug)]
pub enum Failure {
    /// The call failed (or the hub has no such method).
    Call(CallError),
    /// The invocation does not fit the method (a streaming one called plainly, one that takes
    /// uploads called without them); ASP.NET's text.
    Refused(ErrorText),
}

/// One step of a stream, ready for the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Streamed {
    /// Items to send now, each one JSON value.
    pub items: Vec<String>,
    /// Where the stream goes on from; `None` ends it.
    pub next: Option<StreamNext>,
    /// The stream fails after these items, with this text.
    pub error: Option<ErrorText>,
}

/// ASP.NET's refusal when a client sends `sent` streams to a method that takes `expected`.
fn expects_uploads(method: &str, expected: usize, sent: usize) -> Result<(), ErrorText> {
    if sent == expected {
        return Ok(());
    }
    Err(format!(
        "An unexpected error occurred invoking '{method}' on the server. HubException: Client sent {sent} stream(s), Hub method expects {expected}."
    ))
}

/// What a hub's description says of one method.
enum Described<'a> {
    /// The hub describes nothing (contract 0.1): plain methods only, none known by name.
    Nothing,
    /// The hub has no such method.
    Missing,
    Method(&'a MethodInfo),
}

impl<'a> Described<'a> {
    /// Looks `method` up in what the hub described, matching names as SignalR does.
    fn find(methods: Option<&'a [MethodInfo]>, method: &str) -> Self {
        let Some(methods) = methods else {
            return Self::Nothing;
        };
        match methods.iter().find(|m| m.name.eq_ignore_ascii_case(method)) {
            Some(info) => Self::Method(info),
            None => Self::Missing,
        }
    }

    fn streams(&self) -> bool {
        matches!(self, Self::Method(info) if info.streaming)
    }

    /// How many streams the method takes from the client.
    fn uploads(&self) -> usize {
        match self {
            Self::Method(info) => info.uploads(),
            Self::Nothing | Self::Missing => 0,
        }
    }
}

impl Dispatcher {
    pub fn new(runtime: Arc<HubRuntime>, router: Router, detailed_errors: bool) -> Self {
        runtime.set_router(router.clone());
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
    ) -> Replied<Option<String>> {
        let (reply, abort) = self.invoke_unworded(caller, method, arguments).await;
        Replied {
            reply: reply.map_err(|failure| match failure {
                Failure::Call(e) => self.error_text(&e, method),
                Failure::Refused(text) => text,
            }),
            abort,
        }
    }

    /// Invokes a hub method and gives its failure as it is (logged), for a dialect that words
    /// failures its own way (SignalR 2); the flag is the hub's abort.
    pub async fn invoke_unworded(
        &self,
        caller: &Caller,
        method: &str,
        arguments: &str,
    ) -> (Result<Option<String>, Failure>, bool) {
        let Some(hub) = self.runtime.hub(caller.hub.as_str()) else {
            return (
                Err(Failure::Call(CallError::Hub(HubError::MethodNotFound))),
                false,
            );
        };
        let methods = hub.methods(caller).await;
        let described = Described::find(methods.as_deref(), method);
        if described.streams() {
            return (
                Err(Failure::Refused(format!(
                    "The client attempted to invoke the streaming '{method}' method with a non-streaming invocation."
                ))),
                false,
            );
        }
        if let Err(error) = expects_uploads(method, described.uploads(), 0) {
            return (Err(Failure::Refused(error)), false);
        }
        let outcome = self
            .call(&hub, caller, Call::Invoke { method, arguments })
            .await;
        let (result, abort) = self.finish(outcome).await;
        let reply = match result {
            Ok(Answer::Value(value)) => Ok(value),
            Ok(_) => Err(CallError::InvalidResult(
                "The hub answered an invocation with a stream step.".into(),
            )),
            Err(e) => Err(e),
        };
        let reply = reply.map_err(|e| {
            self.log_failure(&e, method, caller, &hub);
            Failure::Call(e)
        });
        (reply, abort)
    }

    /// Whether callers see the causes of unexpected failures (`--detailed-errors`).
    pub fn detailed_errors(&self) -> bool {
        self.detailed_errors
    }

    /// A call's reply for the client: failures logged and worded as ASP.NET words a failed
    /// invocation.
    fn replied<T>(
        &self,
        reply: Result<T, CallError>,
        abort: bool,
        method: &str,
        caller: &Caller,
        hub: &LoadedHub,
    ) -> Replied<T> {
        Replied {
            reply: reply.map_err(|e| {
                self.log_failure(&e, method, caller, hub);
                self.error_text(&e, method)
            }),
            abort,
        }
    }

    /// One step of a streaming method: the first without a cursor (the invocation itself),
    /// then with the cursor the previous step returned.
    pub async fn stream(
        &self,
        caller: &Caller,
        method: &str,
        arguments: &str,
        cursor: Option<&str>,
    ) -> Replied<Streamed> {
        let Some(hub) = self.runtime.hub(caller.hub.as_str()) else {
            return Replied::error(method_not_found(method));
        };
        let methods = hub.methods(caller).await;
        match Described::find(methods.as_deref(), method) {
            Described::Missing => return Replied::error(method_not_found(method)),
            described if !described.streams() => {
                return Replied::error(format!(
                    "The client attempted to invoke the non-streaming '{method}' method with a streaming invocation."
                ));
            }
            _ => {}
        }
        let call = Call::Stream {
            method,
            arguments,
            cursor,
        };
        let outcome = self.call(&hub, caller, call).await;
        let (result, abort) = self.finish(outcome).await;
        let step = match result {
            Ok(Answer::Step(step)) => Ok(step),
            Ok(_) => Err(CallError::InvalidResult(
                "The hub answered a stream step with a result.".into(),
            )),
            Err(e) => Err(e),
        };
        let failed = |e: CallError| {
            self.log_failure(&e, method, caller, &hub);
            // The first step is the invocation; later ones are its enumeration.
            match (cursor, &e) {
                (None, _) | (_, CallError::Hub(HubError::MethodNotFound)) => {
                    self.error_text(&e, method)
                }
                (Some(_), _) => self.streaming_error_text(&e),
            }
        };
        let reply = step.map_err(failed).map(|step| Streamed {
            items: step.items,
            next: step.next,
            error: step.error.map(|e| {
                let e = CallError::Hub(e);
                self.log_failure(&e, method, caller, &hub);
                self.streaming_error_text(&e)
            }),
        });
        Replied { reply, abort }
    }

    /// Checks that `method` takes as many streams from the client as it sent (`sent`), before
    /// its upload starts.
    pub async fn check_upload(
        &self,
        caller: &Caller,
        method: &str,
        sent: usize,
    ) -> Result<(), ErrorText> {
        let Some(hub) = self.runtime.hub(caller.hub.as_str()) else {
            return Err(method_not_found(method));
        };
        let methods = hub.methods(caller).await;
        match Described::find(methods.as_deref(), method) {
            Described::Missing => Err(method_not_found(method)),
            described => expects_uploads(method, described.uploads(), sent),
        }
    }

    /// One event of an upload to `method`, with the state the previous one returned.
    pub async fn upload(
        &self,
        caller: &Caller,
        method: &str,
        arguments: &str,
        event: UploadEvent<'_>,
        state: Option<&str>,
    ) -> Replied<UploadStep> {
        let Some(hub) = self.runtime.hub(caller.hub.as_str()) else {
            return Replied::error(method_not_found(method));
        };
        let ended = matches!(event, UploadEvent::End(_));
        let call = Call::Upload {
            method,
            arguments,
            event,
            state,
        };
        let outcome = self.call(&hub, caller, call).await;
        let (result, abort) = self.finish(outcome).await;
        let reply = match result {
            Ok(Answer::Upload(UploadStep::Pending(_))) if ended => Err(CallError::InvalidResult(
                "The hub kept waiting for items after the upload ended.".into(),
            )),
            Ok(Answer::Upload(step)) => Ok(step),
            Ok(_) => Err(CallError::InvalidResult(
                "The hub answered an upload with something else.".into(),
            )),
            Err(e) => Err(e),
        };
        self.replied(reply, abort, method, caller, &hub)
    }

    /// The hub's methods as it describes them (`None`: it describes nothing, as 0.1 hubs).
    pub async fn methods(&self, caller: &Caller) -> Option<Arc<[MethodInfo]>> {
        self.runtime.hub(caller.hub.as_str())?.methods(caller).await
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
            (Ok(_), false) => Ok(()),
            // Aborting from `on-connected` refuses the connection, as a failure does.
            (Ok(_), true) => Err("Connection closed with an error.".into()),
            (Err(e), _) => {
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
        if let (Err(e), _) = self.finish(outcome).await {
            self.log_failure(&e, "OnDisconnected", caller, &hub);
        }
    }

    /// Carries out the effects in order, then returns the call's own result and whether the
    /// hub asked to abort the caller's connection.
    async fn finish(&self, outcome: CallOutcome) -> (Result<Answer, CallError>, bool) {
        let mut abort = false;
        for effect in outcome.effects {
            match effect {
                Effect::Send(envelope) => self.router.send(envelope),
                Effect::Group(change) => {
                    if let Err(e) = self.router.change_group(change).await {
                        // Like an exception at `await Groups.AddToGroupAsync(..)`: the call
                        // fails and what the hub did after it does not happen.
                        return (Err(CallError::Backplane(e.to_string())), abort);
                    }
                }
                Effect::Abort => abort = true,
            }
        }
        (outcome.result, abort)
    }

    fn log_failure(&self, error: &CallError, method: &str, caller: &Caller, hub: &LoadedHub) {
        let connection = caller.connection_id.as_str();
        let hub = hub.name().as_str();
        match error {
            CallError::Hub(HubError::Failed(exception)) => {
                tracing::error!(hub, method, connection, "hub method failed: {exception}")
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

    /// The error that ends a stream after its first step, as ASP.NET words a failure of the
    /// enumeration.
    fn streaming_error_text(&self, error: &CallError) -> ErrorText {
        let base = "An error occurred on the server while streaming results.";
        match error {
            CallError::Hub(HubError::Rejected(text)) => format!("{base} HubException: {text}"),
            other if self.detailed_errors => format!("{base} {}", describe(other)),
            _ => base.to_owned(),
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
        CallError::Hub(HubError::Failed(exception)) => exception.to_string(),
        CallError::Hub(other) => format!("Exception: {other:?}"),
        CallError::Deadline(_) => format!("TimeoutException: {error}"),
        CallError::Memory(_) => format!("OutOfMemoryException: {error}"),
        CallError::Trap(trap) => format!("WasmTrap: {}", trap.lines().next().unwrap_or("trap")),
        CallError::InvalidResult(_) => format!("InvalidDataException: {error}"),
        CallError::Unavailable(text) => format!("HubUnavailableException: {text}"),
        CallError::Backplane(text) => format!("TimeoutException: {text}"),
    }
}
