use std::fmt;

use crate::__bindings::hubhost::hub::types::{Exception as WitException, HubError as WitHubError};

/// The result type of hub methods and sends: `Ok(T)` or a [`HubError`].
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// fn checked_room(room: &str) -> HubResult<String> {
///     if room.is_empty() {
///         return Err(HubError::new("Room names cannot be empty."));
///     }
///     Ok(room.to_lowercase())
/// }
/// ```
pub type HubResult<T = ()> = Result<T, HubError>;

/// Why a hub call failed; the caller receives it as an error completion.
///
/// - [`HubError::new`] is a deliberate refusal (SignalR's `HubException`): the caller sees the
///   text, as `An unexpected error occurred invoking 'Method' on the server. HubException: <text>`.
/// - Any other error converted with `?` (any [`std::error::Error`]), [`HubError::unexpected`] or
///   [`HubError::exception`], is an unexpected failure: it is logged by the host, and the caller
///   sees only `An unexpected error occurred invoking 'Method' on the server.` unless the host
///   runs with detailed errors, which add `<TypeName>: <message>` as ASP.NET's do (the type is
///   the Rust error's, `ParseIntError`, or the one given to [`HubError::exception`]).
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// pub struct Shop;
///
/// #[hub]
/// impl Shop {
///     fn buy(item: String, quantity: u32) -> HubResult<u32> {
///         if quantity > 10 {
///             return Err(HubError::new("At most 10 per order."));
///         }
///         let price: u32 = "12".parse()?; // a ParseIntError becomes an unexpected failure
///         Ok(price * quantity)
///     }
/// }
/// ```
pub struct HubError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Rejected(String),
    Failed {
        type_name: String,
        message: String,
    },
    MethodNotFound,
    InvalidArguments(String),
    /// Not an error: an [`crate::Upload`] waits for its next item with this state.
    Pending(String),
}

impl HubError {
    /// A deliberate refusal whose message the caller sees (SignalR's `HubException`).
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// let err = HubError::new("The room is full.");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Rejected(message.into()),
        }
    }

    /// An unexpected failure: logged by the host, hidden from the caller unless the host runs
    /// with detailed errors.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// let err = HubError::unexpected("inventory out of sync");
    /// ```
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::exception("Exception", message)
    }

    /// An unexpected failure of a named type, as .NET exceptions have: with detailed errors
    /// the caller sees `An unexpected error occurred invoking 'M' on the server.
    /// InvalidOperationException: <message>`.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// let err = HubError::exception("InvalidOperationException", "the game is over");
    /// ```
    pub fn exception(type_name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Failed {
                type_name: type_name.into(),
                message: message.into(),
            },
        }
    }

    /// The error's text, as the host logs it.
    ///
    /// ```no_run
    /// # use hubhost_sdk::prelude::*;
    /// assert_eq!(HubError::new("no").message(), "no");
    /// ```
    pub fn message(&self) -> &str {
        match &self.kind {
            Kind::Rejected(m) | Kind::Failed { message: m, .. } | Kind::InvalidArguments(m) => m,
            Kind::MethodNotFound => "Method does not exist.",
            Kind::Pending(_) => "The upload waits for its next item.",
        }
    }

    pub(crate) fn method_not_found() -> Self {
        Self {
            kind: Kind::MethodNotFound,
        }
    }

    pub(crate) fn pending(state: String) -> Self {
        Self {
            kind: Kind::Pending(state),
        }
    }

    /// The state an upload waits with, if this is not an error but an upload's pause.
    pub(crate) fn into_pending(self) -> Result<String, Self> {
        match self.kind {
            Kind::Pending(state) => Ok(state),
            kind => Err(Self { kind }),
        }
    }

    pub(crate) fn invalid_arguments(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::InvalidArguments(message.into()),
        }
    }

    pub(crate) fn into_wit(self) -> WitHubError {
        match self.kind {
            Kind::Rejected(m) => WitHubError::Rejected(m),
            Kind::Failed { type_name, message } => {
                WitHubError::Failed(WitException { type_name, message })
            }
            Kind::MethodNotFound => WitHubError::MethodNotFound,
            Kind::InvalidArguments(m) => WitHubError::InvalidArguments(m),
            // Reaches the host only if a method swallowed it and failed with it otherwise.
            Kind::Pending(_) => WitHubError::Failed(WitException {
                type_name: "InvalidOperationException".into(),
                message: "an upload's fold was not returned with `?`".into(),
            }),
        }
    }
}

impl fmt::Debug for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Any error converts with `?` into an unexpected failure. (`HubError` itself deliberately does
/// not implement `std::error::Error`, which is what makes this blanket conversion possible.)
impl<E: std::error::Error> From<E> for HubError {
    fn from(error: E) -> Self {
        Self::exception(type_name::<E>(), error.to_string())
    }
}

/// A type's own name, without its path or generic arguments (`ParseIntError`), as .NET's
/// `GetType().Name` reads.
fn type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_converted_with_question_mark_keep_their_type_name() {
        let parse = "x".parse::<u32>().unwrap_err();
        let error = HubError::from(parse);
        assert!(matches!(
            &error.kind,
            Kind::Failed { type_name, .. } if type_name == "ParseIntError"
        ));
        assert_eq!(type_name::<Vec<std::io::Error>>(), "Vec");
    }
}
