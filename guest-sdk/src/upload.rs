//! Streams from the caller: a hub method that takes an [`Upload`] receives what the client sends
//! with `connection.invoke("Sum", subject)`, item by item.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::hubhost::hub::types::UploadEvent;
use crate::HubError;

/// A stream the client sends to a hub method (ASP.NET's `IAsyncEnumerable<T>` parameter):
/// `connection.invoke("Sum", subject)` with `subject.next(1)`, ..., `subject.complete()` on the
/// client side.
///
/// Hubs are transient, so an upload is folded rather than looped over: the host calls the
/// method once per item with the state the previous item left, and once more at the end.
/// [`Upload::fold`] hands the method its result at the end; before that it returns an error that
/// only carries the state back to the host, so write it with `?` (or as the method's last
/// expression) and do what comes after it (sends, state changes) below it: that part runs once,
/// at the end. The host buffers 10 items per upload, as ASP.NET does, and stops reading the
/// client's messages while the hub is behind.
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
///
/// pub struct Numbers;
///
/// #[hub]
/// impl Numbers {
///     /// `await connection.invoke("Sum", subject)` resolves to the sum of the items.
///     fn sum(numbers: Upload<i64>) -> HubResult<i64> {
///         let total = numbers.fold(0, |total, n| Ok(total + n))?;
///         Clients::all().send("summed", (total,))?;
///         Ok(total)
///     }
/// }
/// ```
///
/// An item that is not a `T` ends the call with an unexpected failure (`Failed to bind Stream
/// message.`); a client that completes its stream with an error fails the call with that text.
/// A method takes at most one `Upload`, and cannot also return a [`crate::HubStream`].
pub struct Upload<T> {
    event: Option<UploadEvent>,
    state: Option<String>,
    item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Upload<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Upload<T> {
    /// Built by `#[hub]` for each event. Not part of the API.
    #[doc(hidden)]
    pub fn __new(event: UploadEvent, state: Option<String>) -> Self {
        Self {
            event: Some(event),
            state,
            item: PhantomData,
        }
    }

    /// Folds the items into one value: `f(state, item)` for each, from `init`. Returns the
    /// final value once the client has completed its stream; see [`Upload`] for how.
    pub fn fold<S, F>(mut self, init: S, f: F) -> Result<S, HubError>
    where
        S: Serialize + DeserializeOwned,
        F: FnOnce(S, T) -> Result<S, HubError>,
    {
        let state = match self.state.take() {
            // A one-element array, so a state that is itself `null` survives the trip.
            Some(text) => {
                let (state,): (S,) = serde_json::from_str(&text).map_err(|e| {
                    HubError::unexpected(format!("the upload's state does not decode: {e}"))
                })?;
                state
            }
            None => init,
        };
        match self.event.take() {
            Some(UploadEvent::Item(item)) => {
                let item: T = serde_json::from_str(&item).map_err(|e| {
                    crate::log::debug(format!("an uploaded item does not bind: {e}"));
                    HubError::unexpected("Failed to bind Stream message.")
                })?;
                let state = f(state, item)?;
                Err(HubError::pending(serde_json::to_string(&(state,))?))
            }
            Some(UploadEvent::End(None)) => Ok(state),
            Some(UploadEvent::End(Some(error))) => Err(HubError::unexpected(error)),
            None => Err(HubError::unexpected("an upload was folded twice")),
        }
    }

    /// All the items, once the client has completed its stream. They travel through the host
    /// as the fold's state (at most 64 KiB), so keep it for small uploads; fold large ones.
    ///
    /// ```no_run
    /// use hubhost_sdk::prelude::*;
    /// # pub struct H;
    /// # #[hub] impl H {
    /// fn longest(words: Upload<String>) -> HubResult<Option<String>> {
    ///     let words = words.collect()?;
    ///     Ok(words.into_iter().max_by_key(|w| w.len()))
    /// }
    /// # }
    /// ```
    pub fn collect(self) -> Result<Vec<T>, HubError>
    where
        T: Serialize,
    {
        self.fold(Vec::new(), |mut items, item| {
            items.push(item);
            Ok(items)
        })
    }
}
