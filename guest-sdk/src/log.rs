//! Log lines in the host's log, tagged with the hub name and the calling connection.
//!
//! `println!` and `eprintln!` go nowhere in a hub; use these instead.
//!
//! ```no_run
//! use hubhost_sdk::log;
//!
//! log::info("room created");
//! log::warn(format!("{} users waiting", 3));
//! ```

use crate::__bindings::hubhost::hub::types::Level;
use crate::imports::log as wit;

/// Logs at TRACE level.
///
/// ```no_run
/// hubhost_sdk::log::trace("entering send");
/// ```
pub fn trace(message: impl AsRef<str>) {
    wit::write(Level::Trace, message.as_ref());
}

/// Logs at DEBUG level.
///
/// ```no_run
/// hubhost_sdk::log::debug("decoded 2 arguments");
/// ```
pub fn debug(message: impl AsRef<str>) {
    wit::write(Level::Debug, message.as_ref());
}

/// Logs at INFO level.
///
/// ```no_run
/// hubhost_sdk::log::info("room created");
/// ```
pub fn info(message: impl AsRef<str>) {
    wit::write(Level::Info, message.as_ref());
}

/// Logs at WARN level.
///
/// ```no_run
/// hubhost_sdk::log::warn("room almost full");
/// ```
pub fn warn(message: impl AsRef<str>) {
    wit::write(Level::Warn, message.as_ref());
}

/// Logs at ERROR level.
///
/// ```no_run
/// hubhost_sdk::log::error("state was inconsistent");
/// ```
pub fn error(message: impl AsRef<str>) {
    wit::write(Level::Error, message.as_ref());
}
