//! Support code for what `#[hub]` generates. Not part of the API; may change at any time.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::__bindings::exports::hubhost::hub::handler;
use crate::__bindings::hubhost::hub::types::{self as wit, Level};
pub use crate::__bindings::hubhost::hub::types::{
    MethodInfo, ParamInfo, StreamStep, UploadEvent, UploadStep,
};
use crate::imports::log as wit_log;
use crate::{Context, HubError, HubResult};

pub use wit_bindgen;

/// ASP.NET Core SignalR's text for arguments that do not bind, kept so client code written
/// against it keeps working.
const BINDING_ERROR: &str = "Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.";

/// What `#[hub]` implements for the user's type.
pub trait Hub {
    fn invoke(ctx: &Context, method: &str, args: &str) -> Result<Option<String>, HubError>;
    fn stream(
        _ctx: &Context,
        _method: &str,
        _args: &str,
        _cursor: Option<String>,
    ) -> Result<StreamStep, HubError> {
        Err(HubError::method_not_found())
    }
    fn upload(
        _ctx: &Context,
        _method: &str,
        _args: &str,
        _event: UploadEvent,
        _state: Option<String>,
    ) -> Result<UploadStep, HubError> {
        Err(HubError::method_not_found())
    }
    fn describe() -> Vec<MethodInfo> {
        Vec::new()
    }
    fn on_connected(_ctx: &Context) -> HubResult {
        Ok(())
    }
    fn on_disconnected(_ctx: &Context, _error: Option<String>) -> HubResult {
        Ok(())
    }
}

/// The JSON array of a call's arguments, checked against the method's arity.
pub struct Args<'a> {
    items: std::vec::IntoIter<&'a RawValue>,
}

impl<'a> Args<'a> {
    pub fn parse(args: &'a str, expected: usize) -> Result<Self, HubError> {
        let items: Vec<&'a RawValue> =
            serde_json::from_str(args).map_err(|_| HubError::invalid_arguments(BINDING_ERROR))?;
        if items.len() != expected {
            return Err(HubError::invalid_arguments(format!(
                "Invocation provides {} argument(s) but target expects {expected}.",
                items.len()
            )));
        }
        Ok(Self {
            items: items.into_iter(),
        })
    }

    /// Decodes the next argument. `parse` checked the count, so a missing one is a binding error.
    pub fn next<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, HubError> {
        let raw = self
            .items
            .next()
            .ok_or_else(|| HubError::invalid_arguments(BINDING_ERROR))?;
        serde_json::from_str(raw.get()).map_err(|e| {
            wit_log::write(
                Level::Debug,
                &format!("argument '{name}' does not bind: {e}"),
            );
            HubError::invalid_arguments(BINDING_ERROR)
        })
    }
}

/// A method's return value as a completion result: `null` (from `()` or `None`) means none.
pub fn ok_json<T: Serialize>(value: &T) -> Result<Option<String>, HubError> {
    let json = serde_json::to_string(value)?;
    Ok(if json == "null" { None } else { Some(json) })
}

/// Turns a method's `Result<T, E>` into a completion.
pub fn result_json<T: Serialize, E: Into<HubError>>(
    value: Result<T, E>,
) -> Result<Option<String>, HubError> {
    match value {
        Ok(v) => ok_json(&v),
        Err(e) => Err(e.into()),
    }
}

/// Routes panics to the host's log: a hub has no stderr, and the panic message is the one clue
/// its author needs.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            wit_log::write(Level::Error, &format!("hub panicked: {info}"));
        }));
    });
}

/// The error for a method name the hub does not have.
pub fn method_not_found() -> HubError {
    HubError::method_not_found()
}

/// Adapts a [`Hub`] to the generated `handler` export.
pub struct Export<H>(std::marker::PhantomData<H>);

impl<H: Hub> handler::Guest for Export<H> {
    fn on_connected(ctx: wit::Context) -> Result<(), wit::HubError> {
        install_panic_hook();
        H::on_connected(&Context::from_wit(ctx)).map_err(HubError::into_wit)
    }

    fn on_disconnected(ctx: wit::Context, error: Option<String>) -> Result<(), wit::HubError> {
        install_panic_hook();
        H::on_disconnected(&Context::from_wit(ctx), error).map_err(HubError::into_wit)
    }

    fn invoke(
        ctx: wit::Context,
        method: String,
        arguments: String,
    ) -> Result<Option<String>, wit::HubError> {
        install_panic_hook();
        H::invoke(&Context::from_wit(ctx), &method, &arguments).map_err(HubError::into_wit)
    }

    fn stream_items(
        ctx: wit::Context,
        method: String,
        arguments: String,
        cursor: Option<String>,
    ) -> Result<StreamStep, wit::HubError> {
        install_panic_hook();
        H::stream(&Context::from_wit(ctx), &method, &arguments, cursor).map_err(HubError::into_wit)
    }

    fn upload(
        ctx: wit::Context,
        method: String,
        arguments: String,
        event: UploadEvent,
        state: Option<String>,
    ) -> Result<UploadStep, wit::HubError> {
        install_panic_hook();
        H::upload(&Context::from_wit(ctx), &method, &arguments, event, state)
            .map_err(HubError::into_wit)
    }

    fn describe() -> Vec<MethodInfo> {
        install_panic_hook();
        H::describe()
    }
}

/// An upload method's answer to one event: its result once done, or the state it waits with.
pub fn upload_step(result: Result<Option<String>, HubError>) -> Result<UploadStep, HubError> {
    match result {
        Ok(result) => Ok(UploadStep::Done(result)),
        Err(error) => error.into_pending().map(UploadStep::Pending),
    }
}

/// The stream a streaming method returned, whether it returned it bare or in a `Result`.
pub fn stream_of<T, E: Into<HubError>>(
    value: Result<crate::HubStream<T>, E>,
) -> Result<crate::HubStream<T>, HubError> {
    value.map_err(Into::into)
}

/// A method's description for `describe`.
pub fn method_info(
    name: &str,
    doc: &str,
    params: Vec<ParamInfo>,
    returns: Option<String>,
    streaming: bool,
) -> MethodInfo {
    let doc = doc.trim();
    MethodInfo {
        name: name.to_owned(),
        doc: (!doc.is_empty()).then(|| doc.to_owned()),
        params,
        returns,
        streaming,
    }
}

/// A parameter's description for `describe`.
pub fn param_info(name: &str, schema: String, upload: bool) -> ParamInfo {
    ParamInfo {
        name: name.to_owned(),
        schema,
        upload,
    }
}

/// The JSON Schema of the types hubs usually take and return; others describe as any value
/// (`{}`). Picked by [`SchemaProbe`] without a bound on the hub's own types.
pub trait Schema {
    fn schema() -> String;
}

macro_rules! schema {
    ($json:literal: $($ty:ty),*) => {
        $(impl Schema for $ty {
            fn schema() -> String {
                $json.to_owned()
            }
        })*
    };
}

schema!(r#"{"type":"string"}"#: String, str, char);
schema!(r#"{"type":"boolean"}"#: bool);
schema!(r#"{"type":"integer"}"#: i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize);
schema!(r#"{"type":"number"}"#: f32, f64);
schema!("{}": serde_json::Value);
schema!(r#"{"type":"null"}"#: ());

impl<T: Schema + ?Sized> Schema for &T {
    fn schema() -> String {
        T::schema()
    }
}

impl<T: Schema> Schema for Option<T> {
    fn schema() -> String {
        format!(r#"{{"anyOf":[{},{{"type":"null"}}]}}"#, T::schema())
    }
}

impl<T: Schema> Schema for Vec<T> {
    fn schema() -> String {
        format!(r#"{{"type":"array","items":{}}}"#, T::schema())
    }
}

impl<T: Schema> Schema for [T] {
    fn schema() -> String {
        Vec::<T>::schema()
    }
}

impl<T: Schema, S> Schema for std::collections::HashMap<String, T, S> {
    fn schema() -> String {
        format!(
            r#"{{"type":"object","additionalProperties":{}}}"#,
            T::schema()
        )
    }
}

impl<T: Schema> Schema for std::collections::BTreeMap<String, T> {
    fn schema() -> String {
        std::collections::HashMap::<String, T>::schema()
    }
}

impl<A: Schema, B: Schema> Schema for (A, B) {
    fn schema() -> String {
        format!(
            r#"{{"type":"array","prefixItems":[{},{}],"items":false}}"#,
            A::schema(),
            B::schema()
        )
    }
}

/// Picks a type's [`Schema`] when it has one and `{}` otherwise (autoref specialization: the
/// method on `SchemaProbe<T>` wins over the one on `&SchemaProbe<T>` when its bound holds).
pub struct SchemaProbe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> SchemaProbe<T> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

pub trait KnownSchema {
    fn schema(&self) -> String;
}

impl<T: Schema + ?Sized> KnownSchema for SchemaProbe<T> {
    fn schema(&self) -> String {
        T::schema()
    }
}

pub trait AnySchema {
    fn schema(&self) -> String;
}

impl<T: ?Sized> AnySchema for &SchemaProbe<T> {
    fn schema(&self) -> String {
        "{}".to_owned()
    }
}

/// Exports `$ty` (which implements [`Hub`]) as the component's `handler`.
#[macro_export]
#[doc(hidden)]
macro_rules! __export_hub {
    ($ty:ty) => {
        // Natively there is no component to export from: `crate::native` calls the hub.
        #[cfg(target_family = "wasm")]
        const _: () = {
            type __HubhostExport = $crate::__private::Export<$ty>;
    $crate::__bindings::export!(__HubhostExport with_types_in $crate::__bindings);
        };
    };
}
