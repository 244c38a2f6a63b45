//! A hub that takes and returns any value, for the host's tests of how values cross protocols
//! (MessagePack's binary and timestamps reach hubs as JSON strings).

use hubhost_sdk::prelude::*;
use serde_json::Value;

pub struct Values;

#[hub]
impl Values {
    /// Returns the value unchanged.
    fn echo(value: Value) -> Value {
        value
    }

    /// The JSON type the hub received the value as: `null`, `bool`, `number`, `string`,
    /// `array` or `object`.
    fn kind(value: Value) -> String {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        kind.to_owned()
    }

    /// Everyone connected receives `value(value)`.
    fn broadcast(value: Value) -> HubResult {
        Clients::all().send("value", (value,))
    }

    /// Everyone but the caller receives `value(value)`.
    fn others(ctx: &Context, value: Value) -> HubResult {
        ctx.others().send("value", (value,))
    }
}
