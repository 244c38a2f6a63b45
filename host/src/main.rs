//! The `hubhost` binary: flags, logging, signals, then [`hubhost::run`].

use anyhow::Context as _;
use hubhost::config::{Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hubhost: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(Command::New { name, sdk, dir }) = &config.command {
        return match hubhost::template::create(dir, name, sdk.as_deref()) {
            Ok(root) => {
                println!(
                    "created {root}\nbuild it:  cd {root} && cargo build --release\nserve it:  cp {root}/target/wasm32-wasip2/release/{file}.wasm <hubs dir>/{name}.wasm",
                    root = root.display(),
                    file = name.replace('-', "_"),
                );
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("hubhost new: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    init_tracing(config.log_format);
    match serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("hubhost: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    hubhost::run(listener, config, shutdown_signal()).await
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HUBHOST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
