//! The `hubhost` binary: flags, logging, signals, then [`hubhost::run`].

use anyhow::Context as _;
use hubhost::config::{Command, Config};
use hubhost::template::Sdk;

fn main() -> std::process::ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hubhost: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(usize::from(threads));
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(main_async(config)),
        Err(error) => {
            eprintln!("hubhost: cannot start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_async(config: Config) -> std::process::ExitCode {
    if let Some(Command::New {
        name,
        sdk,
        vendor_sdk,
        dir,
    }) = &config.command
    {
        let sdk = match (sdk, vendor_sdk) {
            (Some(path), _) => Sdk::At(path.clone()),
            (None, true) => Sdk::Vendored,
            (None, false) => Sdk::Automatic,
        };
        return match hubhost::template::create(dir, name, sdk) {
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
    match &config.command {
        Some(Command::Describe { file, json }) => {
            return finish("describe", describe(file, *json).await);
        }
        Some(Command::Types { file, out }) => {
            return finish("types", types(file, out.as_deref()).await);
        }
        _ => {}
    }
    hubhost::init_tracing(config.log_format);
    if let Some((before, after)) = hubhost::raise_open_files_limit() {
        // Each connection holds one file descriptor.
        tracing::debug!(before, after, "open files limit");
        if after < 4096 {
            tracing::warn!(
                limit = after,
                "the open files limit caps connections near this number; raise it (ulimit -n)"
            );
        }
    }
    match serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("hubhost: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit status of a subcommand, its error on standard error.
fn finish(command: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hubhost {command}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn describe(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let description = hubhost::describe::describe(file).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&description)?);
    } else {
        print!("{}", hubhost::describe::text(&description));
    }
    Ok(())
}

async fn types(file: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let description = hubhost::describe::describe(file).await?;
    let typescript = hubhost::describe::typescript(&description)?;
    match out {
        Some(path) => std::fs::write(path, typescript)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{typescript}"),
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    hubhost::run(listener, config, shutdown_signal()).await
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
