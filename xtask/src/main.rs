//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `hubs`: builds the example hubs into `target/hubs/` and the test hubs into
//!   `target/test-hubs/` (release components for `wasm32-wasip2`).
//! - `demo [HOST FLAGS]`: builds the hubs and the host, then serves the chat demo (on
//!   <http://127.0.0.1:5000> unless `--listen` says otherwise; extra flags go to `hubhost`).
//! - `test`: builds everything, runs the Rust tests, installs the Node packages and the Python
//!   client if needed and runs the end-to-end tests under `tests/` against real host processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Example hubs: served by the demo.
const EXAMPLE_HUBS: &[&str] = &["chat", "lobby", "presence"];
/// Hubs that exist only for tests.
const TEST_HUBS: &[&str] = &["faulty", "features", "rogue", "values"];
const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    // `cargo demo -- --listen ...` and `cargo demo --listen ...` alike.
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    let root = root()?;
    match task.as_str() {
        "hubs" => build_hubs(&root),
        "demo" => demo(&root, &rest),
        "test" => test(&root, &rest),
        _ => {
            eprintln!("usage: cargo xtask <hubs | demo [hubhost flags] | test>");
            bail!("unknown task '{task}'")
        }
    }
}

fn root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask is not inside the workspace")
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `cargo xtask` runs this program with the variables cargo sets for what it runs (the
    // package's manifest dir and metadata). A build started from here must see what a shell's
    // would, or build scripts that watch those variables (ring's does) rebuild on every switch
    // between `cargo build` and `cargo xtask ...`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            command.env_remove(key.as_ref());
        }
    }
    command
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Makes sure the wasm target is installed (rust-toolchain.toml names it, but rustup only adds
/// targets when it installs the toolchain itself).
fn ensure_wasm_target(root: &Path) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains(WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup")
            .args(["target", "add", WASM_TARGET])
            .current_dir(root)),
        // Without rustup, the toolchain must already have the target.
        Err(_) => Ok(()),
    }
}

fn build_hubs(root: &Path) -> anyhow::Result<()> {
    ensure_wasm_target(root)?;
    let mut build = cargo();
    build
        .current_dir(root)
        .args(["build", "--profile", "hub", "--target", WASM_TARGET]);
    for hub in EXAMPLE_HUBS.iter().chain(TEST_HUBS) {
        build.args(["--package", hub]);
    }
    run(&mut build)?;
    let out = root.join("target").join(WASM_TARGET).join("hub");
    for (hubs, dir) in [(EXAMPLE_HUBS, "hubs"), (TEST_HUBS, "test-hubs")] {
        for hub in hubs {
            place(
                &out.join(format!("{hub}.wasm")),
                &root.join("target").join(dir),
                hub,
            )?;
        }
    }
    // One hub in two versions, for the hot-replace test.
    for (features, name) in [(None, "versioned-v1"), (Some("v2"), "versioned-v2")] {
        let mut build = cargo();
        build.current_dir(root).args([
            "build",
            "--profile",
            "hub",
            "--target",
            WASM_TARGET,
            "--package",
            "versioned",
        ]);
        if let Some(features) = features {
            build.args(["--features", features]);
        }
        run(&mut build)?;
        place(
            &out.join("versioned.wasm"),
            &root.join("target/test-hubs"),
            name,
        )?;
    }
    Ok(())
}

/// Copies a built component into `dir` as `name.wasm`, atomically (write, then rename), so a
/// host watching `dir` never sees a half-written file.
fn place(from: &Path, dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(from, &tmp).with_context(|| format!("cannot copy {}", from.display()))?;
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm")))?;
    Ok(())
}

fn demo(root: &Path, flags: &[String]) -> anyhow::Result<()> {
    build_hubs(root)?;
    build_binaries(root)?;
    println!("hubhost demo: open the demo page address below in two browser tabs (Ctrl-C stops)");
    run(Command::new(root.join("target/debug/hubhost"))
        .current_dir(root)
        .arg("--hubs")
        .arg(root.join("target/hubs"))
        .args(flags))
}

/// The host and load generator binaries. The demo and the tests build exactly this set, so
/// their dependencies are built once, with one set of features, whichever runs first.
fn build_binaries(root: &Path) -> anyhow::Result<()> {
    run(cargo()
        .current_dir(root)
        .args(["build", "--package", "hubhost", "--package", "loadgen"]))
}

fn test(root: &Path, filters: &[String]) -> anyhow::Result<()> {
    build_hubs(root)?;
    // The binaries for the end-to-end tests, then the Rust unit, integration and doc tests.
    build_binaries(root)?;
    run(cargo().current_dir(root).arg("test"))?;

    if filters.is_empty() {
        // The load generator's quick run: every scenario, small; fails only if a message is lost.
        run(Command::new(root.join("target/debug/loadgen"))
            .current_dir(root)
            .args(["--quick", "--host-bin"])
            .arg(root.join("target/debug/hubhost")))?;
    }
    // The newest of package.json's packages tell whether node_modules is up to date.
    let installed = [
        "@microsoft/signalr-protocol-msgpack",
        "typescript",
        "signalr",
        "jquery",
    ]
    .iter()
    .all(|package| root.join("node_modules").join(package).exists());
    if !installed {
        run(Command::new("npm").arg("ci").current_dir(root))?;
    }
    let python = python_client(root)?;
    let mut node = Command::new("node");
    node.current_dir(root)
        .env("HUBHOST_PYTHON", python)
        .env("HUBHOST_BIN", root.join("target/debug/hubhost"))
        .env("HUBHOST_EXAMPLE_HUBS", root.join("target/hubs"))
        .env("HUBHOST_TEST_HUBS", root.join("target/test-hubs"))
        .args(["--test", "--test-concurrency=1"])
        // A test that hangs fails after ten minutes instead of holding CI until its limit.
        .arg("--test-timeout=600000");
    // A test file whose tests have all finished ends even if something it opened is still
    // open (a CI run once waited out its limit on such a file, all of whose tests had passed).
    if node_at_least(root, (20, 14))? {
        node.arg("--test-force-exit");
    }
    if filters.is_empty() {
        node.arg("tests/");
    } else {
        node.args(filters);
    }
    run(&mut node)
}

/// Whether the `node` on the path is at least `major.minor`.
fn node_at_least(root: &Path, (major, minor): (u32, u32)) -> anyhow::Result<bool> {
    let output = Command::new("node")
        .current_dir(root)
        .arg("--version")
        .output()
        .context("cannot start node")?;
    let version = String::from_utf8_lossy(&output.stdout);
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let mut next = || parts.next().and_then(|part| part.parse::<u32>().ok());
    let (Some(have_major), Some(have_minor)) = (next(), next()) else {
        bail!("cannot read node's version from {version:?}");
    };
    Ok((have_major, have_minor) >= (major, minor))
}

/// A Python with the SignalR client the end-to-end tests drive (`tests/support/requirements.txt`),
/// in a virtual environment under `target/python`, made on first use.
fn python_client(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = root.join("target/python");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/support/requirements.txt");
    // The copy of the requirements the environment was made from: a changed list remakes it.
    let installed = venv.join("requirements.txt");
    let wanted = std::fs::read(&requirements).context("reading tests/support/requirements.txt")?;
    if python.exists() && std::fs::read(&installed).ok().as_ref() == Some(&wanted) {
        return Ok(python);
    }
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&installed, wanted).context("recording the Python requirements")?;
    Ok(python)
}
