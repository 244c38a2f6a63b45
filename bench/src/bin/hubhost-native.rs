//! `hubhost-native`: hubhost serving the chat hub compiled natively instead of as Wasm, with
//! the same flags. It exists only to measure what the sandbox costs (`loadgen --native`); it
//! is not a way to deploy hubs.

use anyhow::Context as _;
use hubhost::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load().map_err(anyhow::Error::msg)?;
    hubhost::init_tracing(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    hubhost::run_with_native_hubs(listener, config, vec![loadgen::native::chat()], shutdown).await
}
