//! One hub in two versions (`--features v2`), for the hot-replace test.

use hubhost_sdk::prelude::*;

pub struct Versioned;

#[cfg(not(feature = "v2"))]
const VERSION: u32 = 1;
#[cfg(feature = "v2")]
const VERSION: u32 = 2;

#[hub]
impl Versioned {
    /// Which version answered.
    fn version() -> u32 {
        VERSION
    }

    /// Greets; version 2 says it differently.
    fn greet(name: String) -> String {
        if VERSION == 1 {
            format!("Hello, {name}!")
        } else {
            format!("Hi {name}, from version 2")
        }
    }
}
