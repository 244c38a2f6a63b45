//! `hubhost new NAME`: a hub crate ready to build, from the template in `template/`.

pub mod sdk;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::types::HubName;

const LIB: &str = include_str!("template/lib.rs.txt");
const CARGO: &str = include_str!("template/Cargo.toml.txt");
const CARGO_CONFIG: &str = include_str!("template/cargo-config.toml.txt");
/// The toolchain hubhost itself is built and tested with (it lists the wasm target).
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");
/// Where a new hub crate's SDK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A `guest-sdk` directory (`--sdk PATH`).
    At(PathBuf),
    /// A copy written into the crate, from the one this binary carries (`--vendor-sdk`).
    Vendored,
    /// The checkout this binary was built from if it is still there, else a copy.
    Automatic,
}

/// The directory, inside a new crate, of a vendored SDK.
const VENDORED: &str = "hubhost-sdk";

/// Creates `dir/NAME` with a hub crate depending on `sdk`. Returns the crate's directory.
pub fn create(dir: &Path, name: &str, sdk: Sdk) -> anyhow::Result<PathBuf> {
    if !HubName::is_valid(name) {
        bail!(
            "'{name}' cannot be a hub name: use ASCII letters, digits, '-' and '_' (it becomes the URL path /{name})"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = match sdk {
        Sdk::At(path) => Some(
            path.canonicalize()
                .ok()
                .filter(|p| p.join("wit/hub.wit").exists())
                .with_context(|| {
                    format!(
                        "--sdk {}: not the hubhost guest-sdk (no wit/hub.wit there)",
                        path.display()
                    )
                })?,
        ),
        Sdk::Vendored => None,
        Sdk::Automatic => sdk::checkout(),
    };
    let dependency = match &sdk {
        Some(path) => format!("{{ path = {:?} }}", path.display().to_string()),
        None => format!("{{ path = \"{VENDORED}\" }}"),
    };
    let crate_name = name.replace('-', "_");
    let type_name: String = crate_name
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect();
    let type_name = if type_name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("Hub{type_name}")
    } else {
        type_name
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{type}}", &type_name)
            .replace("{{sdk}}", &dependency)
    };
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::create_dir_all(root.join(".cargo"))?;
    std::fs::write(root.join("Cargo.toml"), fill(CARGO))?;
    std::fs::write(root.join("src/lib.rs"), fill(LIB))?;
    std::fs::write(root.join(".cargo/config.toml"), fill(CARGO_CONFIG))?;
    std::fs::write(root.join("rust-toolchain.toml"), TOOLCHAIN)?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    if sdk.is_none() {
        sdk::vendor(&root.join(VENDORED))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_template() {
        let dir = std::env::temp_dir().join(format!("hubhost-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        let root = create(&dir, "game-lobby", Sdk::At(sdk.clone())).expect("created");
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct GameLobby;"));
        assert!(lib.contains("impl GameLobby {"));
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"game-lobby\""));
        assert!(cargo.contains("hubhost-sdk = { path = "));
        assert!(
            create(&dir, "game-lobby", Sdk::At(sdk.clone())).is_err(),
            "never overwrites"
        );
        assert!(create(&dir, "no/slash", Sdk::Automatic).is_err());
        let vendored = create(&dir, "offline", Sdk::Vendored).expect("created");
        let cargo = std::fs::read_to_string(vendored.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains("hubhost-sdk = { path = \"hubhost-sdk\" }"),
            "{cargo}"
        );
        assert!(vendored.join("hubhost-sdk/src/lib.rs").is_file());
        let automatic = create(&dir, "automatic", Sdk::Automatic).expect("created");
        let cargo = std::fs::read_to_string(automatic.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("guest-sdk"), "the checkout's SDK: {cargo}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
