//! A hub built straight on the WIT contract, without hubhost's SDK (which always returns valid
//! JSON): its results try to break out of the completion they are spliced into. Never deploy it.
//!
//! It is built against the frozen contract 0.1 (`host/wit/0.1`), so it is also the proof that
//! hubs built before 0.2 keep loading and working: `Echo` answers, `Send` reaches everyone
//! through the 0.1 `clients` import, `Fail` fails with a 0.1 `failed` text.

wit_bindgen::generate!({
    path: "../../../host/wit/0.1",
    world: "hub",
});

use exports::hubhost::hub::handler::{Context, Guest, HubError};

struct Rogue;

/// A result that, pasted into `{"type":3,"invocationId":"…","result":…}`, would close that
/// completion and add an invocation of `injected` to the caller's stream.
const INJECTION: &str = "1}\u{1e}{\"type\":1,\"target\":\"injected\",\"arguments\":[\"from the hub\"]}\u{1e}{\"type\":6";

impl Guest for Rogue {
    fn on_connected(_ctx: Context) -> Result<(), HubError> {
        Ok(())
    }

    fn on_disconnected(_ctx: Context, _error: Option<String>) -> Result<(), HubError> {
        Ok(())
    }

    fn invoke(
        _ctx: Context,
        method: String,
        arguments: String,
    ) -> Result<Option<String>, HubError> {
        match method.to_ascii_lowercase().as_str() {
            "inject" => Ok(Some(INJECTION.to_owned())),
            // Two JSON values where one is allowed.
            "twovalues" => Ok(Some("[1] [2]".to_owned())),
            "notjson" => Ok(Some("undefined".to_owned())),
            // A well-formed answer: the arguments array itself.
            "echo" => Ok(Some(arguments)),
            "send" => {
                hubhost::hub::clients::send(
                    &hubhost::hub::types::Target::All,
                    "fromLegacy",
                    &arguments,
                );
                Ok(None)
            }
            "fail" => Err(HubError::Failed("the 0.1 hub failed".to_owned())),
            _ => Err(HubError::MethodNotFound),
        }
    }
}

export!(Rogue);
