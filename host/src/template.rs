//! `hubhost new NAME`: a hub crate ready to build, from the template in `template/`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::router::HubName;

const LIB: &str = include_str!("template/lib.rs.txt");
const CARGO: &str = include_str!("template/Cargo.toml.txt");
const CARGO_CONFIG: &str = include_str!("template/cargo-config.toml.txt");
/// The toolchain hubhost itself is built and tested with (it lists the wasm target).
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");
/// Where the SDK comes from when `--sdk` is not given.
const SDK_GIT: &str = "https://github.com/hubhost/hubhost";

/// Creates `dir/NAME` with a hub crate; `sdk` is a local path to `guest-sdk` (else the git
/// repository). Returns the crate's directory.
pub fn create(dir: &Path, name: &str, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
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
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--sdk {}: no such directory", path.display()))?;
            if !path.join("wit/hub.wit").exists() {
                bail!(
                    "--sdk {}: not the hubhost guest-sdk (no wit/hub.wit)",
                    path.display()
                );
            }
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        None => format!("{{ git = \"{SDK_GIT}\" }}"),
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
            .replace("{{sdk}}", &sdk)
    };
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::create_dir_all(root.join(".cargo"))?;
    std::fs::write(root.join("Cargo.toml"), fill(CARGO))?;
    std::fs::write(root.join("src/lib.rs"), fill(LIB))?;
    std::fs::write(root.join(".cargo/config.toml"), fill(CARGO_CONFIG))?;
    std::fs::write(root.join("rust-toolchain.toml"), TOOLCHAIN)?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
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
        let root = create(&dir, "game-lobby", Some(&sdk)).expect("created");
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct GameLobby;"));
        assert!(lib.contains("impl GameLobby {"));
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"game-lobby\""));
        assert!(cargo.contains("hubhost-sdk = { path = "));
        assert!(
            create(&dir, "game-lobby", Some(&sdk)).is_err(),
            "never overwrites"
        );
        assert!(create(&dir, "no/slash", None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
