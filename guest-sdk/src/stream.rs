//! Streams to the caller: a hub method that returns [`HubStream`] answers
//! `connection.stream(...)` item by item.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::hubhost::hub::types::{StreamNext, StreamStep};
use crate::HubError;

/// Items sent in one step at most when steps follow each other without delay, so a fast stream
/// still reaches the client in bounded pieces (and each step stays within the call deadline).
const MAX_ITEMS_PER_STEP: usize = 64;

/// A stream of items to the caller, the answer of a streaming hub method (ASP.NET's
/// `IAsyncEnumerable<T>`): clients call the method with `connection.stream(...)` and receive
/// the items as the hub produces them, then completion.
///
/// Hubs are transient, so a stream is not a loop that stays in memory: it is a *state* and a
/// *step* function. The host calls the step with the state, sends the items it returns, waits
/// the delay it asks for, and calls it again with the next state; between steps nothing of the
/// hub runs or stays loaded, so thousands of slow streams cost little. Each step has the usual
/// call deadline and memory cap. The state travels through the host as JSON.
///
/// The method itself runs again before every step, with the same arguments, to rebuild the
/// stream: it should only check its arguments and build the stream, and leave work (sends,
/// state changes) to the step function.
///
/// ```no_run
/// use std::time::Duration;
/// use hubhost_sdk::prelude::*;
///
/// pub struct Ticker;
///
/// #[hub]
/// impl Ticker {
///     /// `connection.stream("Counter", 5, 100)` receives 0, 1, 2, 3, 4, one every 100 ms.
///     fn counter(count: u32, delay_ms: u64) -> HubResult<HubStream<u32>> {
///         if count > 10_000 {
///             return Err(HubError::new("At most 10000 items."));
///         }
///         Ok(HubStream::unfold(0, move |next: u32| {
///             if next == count {
///                 return Ok(Step::done());
///             }
///             Ok(Step::item(next).then(next + 1).after(Duration::from_millis(delay_ms)))
///         }))
///     }
/// }
/// ```
///
/// An error from the step ends the stream with an error for the client (`An error occurred on
/// the server while streaming results.`, with the text of a [`HubError::new`]); an error from
/// the method itself, before the stream starts, is an invocation error as for other methods.
pub struct HubStream<T> {
    step: Box<dyn FnMut(Option<String>) -> Result<StreamStep, HubError>>,
    item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for HubStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStream").finish_non_exhaustive()
    }
}

/// What one step of a [`HubStream`] produces: items to send now, and the state to go on from
/// (without it, the stream completes after these items).
///
/// ```
/// use std::time::Duration;
/// use hubhost_sdk::Step;
///
/// // Send 1 and 2, then go on from state 3 after a second.
/// let step: Step<u32, u32> = Step::items([1, 2]).then(3).after(Duration::from_secs(1));
/// // Send "last" and complete.
/// let last: Step<&str, ()> = Step::item("last");
/// // Complete without sending anything.
/// let done: Step<u32, u32> = Step::done();
/// ```
#[derive(Debug, Clone)]
#[must_use = "a step does nothing unless returned from the stream's step function"]
pub struct Step<T, S> {
    items: Vec<T>,
    next: Option<S>,
    delay: Duration,
}

impl<T, S> Step<T, S> {
    /// Sends nothing more: the stream completes.
    pub fn done() -> Self {
        Self::items([])
    }

    /// Sends one item; add [`Step::then`] to go on.
    pub fn item(item: T) -> Self {
        Self::items([item])
    }

    /// Sends these items, in order; add [`Step::then`] to go on.
    pub fn items(items: impl IntoIterator<Item = T>) -> Self {
        Self {
            items: items.into_iter().collect(),
            next: None,
            delay: Duration::ZERO,
        }
    }

    /// Goes on with `state` as the next step's state.
    pub fn then(mut self, state: S) -> Self {
        self.next = Some(state);
        self
    }

    /// Waits this long before the next step (nothing is held meanwhile).
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl<T: Serialize + 'static> HubStream<T> {
    /// A stream that starts from `state` and calls `step` with each state in turn.
    ///
    /// See [`HubStream`] for an example.
    pub fn unfold<S, F>(state: S, mut step: F) -> Self
    where
        S: Serialize + DeserializeOwned + 'static,
        F: FnMut(S) -> Result<Step<T, S>, HubError> + 'static,
    {
        let mut first = Some(state);
        Self::raw(move |cursor| match cursor {
            // The first call only starts the stream: an error in the method before this point
            // is an invocation error, one in a step a streaming error.
            None => {
                let state = first
                    .take()
                    .ok_or_else(|| HubError::unexpected("the stream was started twice"))?;
                Ok(StreamStep {
                    items: Vec::new(),
                    next: Some(StreamNext {
                        cursor: cursor_of(state)?,
                        delay_ms: 0,
                    }),
                    error: None,
                })
            }
            Some(cursor) => {
                // A one-element array, so a state that is itself `null` survives the trip.
                let (mut state,): (S,) = serde_json::from_str(&cursor).map_err(|e| {
                    HubError::unexpected(format!("the stream's state does not decode: {e}"))
                })?;
                let mut items = Vec::new();
                loop {
                    let Step {
                        items: produced,
                        next,
                        delay,
                    } = match step(state) {
                        Ok(step) => step,
                        // Items of earlier rounds of this step go out before the failure.
                        Err(error) if !items.is_empty() => {
                            return Ok(StreamStep {
                                items,
                                next: None,
                                error: Some(error.into_wit()),
                            });
                        }
                        Err(error) => return Err(error),
                    };
                    for item in &produced {
                        items.push(serde_json::to_string(item)?);
                    }
                    match next {
                        Some(next) if delay.is_zero() && items.len() < MAX_ITEMS_PER_STEP => {
                            state = next;
                        }
                        next => {
                            let next = match next {
                                Some(next) => Some(StreamNext {
                                    cursor: cursor_of(next)?,
                                    delay_ms: u32::try_from(delay.as_millis()).unwrap_or(u32::MAX),
                                }),
                                None => None,
                            };
                            return Ok(StreamStep {
                                items,
                                next,
                                error: None,
                            });
                        }
                    }
                }
            }
        })
    }

    /// A stream of these items, sent as fast as the client reads them, then completion.
    ///
    /// ```no_run
    /// use hubhost_sdk::prelude::*;
    /// # pub struct H;
    /// # #[hub] impl H {
    /// fn letters() -> HubStream<char> {
    ///     HubStream::iter(vec!['a', 'b', 'c'])
    /// }
    /// # }
    /// ```
    pub fn iter(items: Vec<T>) -> Self
    where
        T: Clone + 'static,
    {
        Self::unfold(0usize, move |at: usize| {
            let end = (at + MAX_ITEMS_PER_STEP).min(items.len());
            let step = Step::items(items.get(at..end).unwrap_or_default().iter().cloned());
            Ok(if end < items.len() {
                step.then(end)
            } else {
                step
            })
        })
    }

    fn raw(step: impl FnMut(Option<String>) -> Result<StreamStep, HubError> + 'static) -> Self {
        Self {
            step: Box::new(step),
            item: PhantomData,
        }
    }

    /// Runs one step for the host. Not part of the API.
    #[doc(hidden)]
    pub fn __step(mut self, cursor: Option<String>) -> Result<StreamStep, HubError> {
        (self.step)(cursor)
    }
}

fn cursor_of<S: Serialize>(state: S) -> Result<String, HubError> {
    Ok(serde_json::to_string(&(state,))?)
}
