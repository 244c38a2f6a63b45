//! Sandbox limits of one hub: the global flags, overridden by an optional `NAME.toml` beside
//! `NAME.wasm`:
//!
//! ```toml
//! call-timeout = "2s"        # longest one call may run
//! memory = "16MiB"           # linear memory cap of one instance
//! instances = 8              # instances alive at once
//! max-message-size = "64KiB" # largest client message on this hub's connections
//! require-auth = true        # refuse clients without a valid bearer token (401)
//! state-keys = 1000          # keys the hub's shared state may hold
//! state-bytes = "1MiB"       # bytes of keys and values the hub's shared state may hold
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::RuntimeConfig;
use crate::state::Quota;
use crate::units::{parse_duration, parse_size};

/// The limits a hub runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLimits {
    pub call_timeout: Duration,
    pub memory_limit: usize,
    pub instances: u32,
    pub max_message_size: usize,
    /// Clients need a valid bearer token.
    pub require_auth: bool,
    /// What the hub's shared state may hold.
    pub state: Quota,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SettingsFile {
    call_timeout: Option<String>,
    memory: Option<String>,
    instances: Option<u32>,
    max_message_size: Option<String>,
    require_auth: Option<bool>,
    state_keys: Option<u64>,
    state_bytes: Option<String>,
}

impl HubLimits {
    /// The global limits.
    pub fn from_config(config: &RuntimeConfig) -> Self {
        Self {
            call_timeout: config.call_timeout,
            memory_limit: config.memory_limit,
            instances: config.instances_per_hub,
            max_message_size: config.max_message_size,
            require_auth: false,
            state: config.state_quota,
        }
    }

    /// The global limits with the overrides of `settings` (a `NAME.toml`), if it exists.
    pub fn load(config: &RuntimeConfig, settings: &Path) -> anyhow::Result<Self> {
        let mut limits = Self::from_config(config);
        let text = match std::fs::read_to_string(settings) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(limits),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", settings.display()));
            }
        };
        limits
            .apply(&text, config.total_instances)
            .with_context(|| format!("{} is not valid", settings.display()))?;
        Ok(limits)
    }

    /// Applies a settings file; `total_instances` is what every hub shares.
    fn apply(&mut self, text: &str, total_instances: u32) -> anyhow::Result<()> {
        let file: SettingsFile = toml::from_str(text)?;
        if let Some(t) = file.call_timeout {
            self.call_timeout = parse_duration(&t).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                !self.call_timeout.is_zero(),
                "call-timeout must be greater than zero"
            );
        }
        if let Some(m) = file.memory {
            self.memory_limit = parse_size(&m).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(self.memory_limit >= 2 << 20, "memory must be at least 2MiB");
        }
        if let Some(n) = file.instances {
            anyhow::ensure!(n >= 1, "instances must be at least 1");
            anyhow::ensure!(
                n <= total_instances,
                "instances = {n} cannot fit: the host has {total_instances} instance slots for all hubs (--total-instances)"
            );
            self.instances = n;
        }
        if let Some(required) = file.require_auth {
            self.require_auth = required;
        }
        if let Some(m) = file.max_message_size {
            self.max_message_size = parse_size(&m).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                self.max_message_size >= 1024,
                "max-message-size must be at least 1KiB"
            );
        }
        if let Some(keys) = file.state_keys {
            self.state.max_keys = keys;
        }
        if let Some(bytes) = file.state_bytes {
            self.state.max_bytes = parse_size(&bytes).map_err(anyhow::Error::msg)? as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_what_the_file_names() {
        let config = RuntimeConfig::default();
        let mut limits = HubLimits::from_config(&config);
        limits
            .apply(
                "call-timeout = \"250ms\"\nmemory = \"8MiB\"\nstate-keys = 5\nstate-bytes = \"1KiB\"\n",
                1000,
            )
            .expect("valid");
        assert_eq!(limits.call_timeout, Duration::from_millis(250));
        assert_eq!(limits.memory_limit, 8 << 20);
        assert_eq!(
            limits.state,
            Quota {
                max_keys: 5,
                max_bytes: 1024
            }
        );
        assert_eq!(limits.instances, config.instances_per_hub, "unchanged");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let config = RuntimeConfig::default();
        let mut limits = HubLimits::from_config(&config);
        assert!(limits.apply("memroy = \"8MiB\"", 1000).is_err());
        assert!(limits.apply("memory = \"lots\"", 1000).is_err());
        assert!(limits.apply("call-timeout = \"0s\"", 1000).is_err());
    }

    #[test]
    fn refuses_more_instances_than_the_host_has_slots() {
        let mut limits = HubLimits::from_config(&RuntimeConfig::default());
        let error = limits.apply("instances = 2000", 1000).unwrap_err();
        assert_eq!(
            error.to_string(),
            "instances = 2000 cannot fit: the host has 1000 instance slots for all hubs (--total-instances)"
        );
        assert!(limits.apply("instances = 1000", 1000).is_ok());
    }
}
