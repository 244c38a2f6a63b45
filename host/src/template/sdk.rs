//! Where a new hub crate gets the SDK from: the hubhost checkout this binary was built from,
//! when it is still there, or a copy of the SDK carried inside the binary, written into the new
//! crate. Either works without any repository beyond this one.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The SDK's files, as they were when this binary was built.
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../guest-sdk/Cargo.toml")),
    (
        "src/__private.rs",
        include_str!("../../../guest-sdk/src/__private.rs"),
    ),
    (
        "src/client.rs",
        include_str!("../../../guest-sdk/src/client.rs"),
    ),
    (
        "src/clients.rs",
        include_str!("../../../guest-sdk/src/clients.rs"),
    ),
    (
        "src/context.rs",
        include_str!("../../../guest-sdk/src/context.rs"),
    ),
    (
        "src/error.rs",
        include_str!("../../../guest-sdk/src/error.rs"),
    ),
    (
        "src/groups.rs",
        include_str!("../../../guest-sdk/src/groups.rs"),
    ),
    (
        "src/imports.rs",
        include_str!("../../../guest-sdk/src/imports.rs"),
    ),
    ("src/lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    ("src/log.rs", include_str!("../../../guest-sdk/src/log.rs")),
    (
        "src/native.rs",
        include_str!("../../../guest-sdk/src/native.rs"),
    ),
    (
        "src/presence.rs",
        include_str!("../../../guest-sdk/src/presence.rs"),
    ),
    (
        "src/request.rs",
        include_str!("../../../guest-sdk/src/request.rs"),
    ),
    (
        "src/state.rs",
        include_str!("../../../guest-sdk/src/state.rs"),
    ),
    (
        "src/stream.rs",
        include_str!("../../../guest-sdk/src/stream.rs"),
    ),
    (
        "src/upload.rs",
        include_str!("../../../guest-sdk/src/upload.rs"),
    ),
    (
        "wit/hub.wit",
        include_str!("../../../guest-sdk/wit/hub.wit"),
    ),
    (
        "macros/Cargo.toml",
        include_str!("../../../guest-sdk/macros/Cargo.toml"),
    ),
    (
        "macros/src/lib.rs",
        include_str!("../../../guest-sdk/macros/src/lib.rs"),
    ),
];

/// The workspace manifest the SDK's manifests inherit versions and dependencies from.
const WORKSPACE: &str = include_str!("../../../Cargo.toml");

/// The `guest-sdk` of the checkout this binary was built from, if it is still there.
pub fn checkout() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    if path.join("wit/hub.wit").is_file() {
        path.canonicalize().ok()
    } else {
        None
    }
}

/// Writes the SDK carried in this binary into `dir`, as a crate that stands on its own (its
/// manifests no longer inherit from hubhost's workspace).
pub fn vendor(dir: &Path) -> anyhow::Result<()> {
    let workspace: toml::Table =
        toml::from_str(WORKSPACE).context("the embedded workspace manifest")?;
    for (path, text) in FILES {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = if path.ends_with("Cargo.toml") {
            standalone(text, &workspace).with_context(|| format!("the SDK's {path}"))?
        } else {
            (*text).to_owned()
        };
        std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

/// A workspace member's manifest with every `workspace = true` replaced by the workspace's
/// value, and the SDK's macro crate found beside it.
fn standalone(manifest: &str, workspace: &toml::Table) -> anyhow::Result<String> {
    let mut table: toml::Table = toml::from_str(manifest)?;
    let inherited = |section: &str| -> Option<&toml::Table> {
        workspace.get("workspace")?.get(section)?.as_table()
    };
    if let Some(package) = table.get_mut("package").and_then(toml::Value::as_table_mut) {
        for (key, value) in package.iter_mut() {
            if is_inherited(value) {
                *value = inherited("package")
                    .and_then(|p| p.get(key))
                    .cloned()
                    .with_context(|| format!("the workspace has no package.{key}"))?;
            }
        }
    }
    if let Some(dependencies) = table
        .get_mut("dependencies")
        .and_then(toml::Value::as_table_mut)
    {
        for (name, value) in dependencies.iter_mut() {
            if name == "hubhost-sdk-macros" {
                *value = toml::Value::Table(toml::Table::from_iter([(
                    "path".to_owned(),
                    toml::Value::String("macros".to_owned()),
                )]));
            } else if is_inherited(value) {
                let mut concrete = match inherited("dependencies").and_then(|d| d.get(name)) {
                    Some(toml::Value::String(version)) => toml::Table::from_iter([(
                        "version".to_owned(),
                        toml::Value::String(version.clone()),
                    )]),
                    Some(toml::Value::Table(spec)) => spec.clone(),
                    _ => anyhow::bail!("the workspace has no dependency {name}"),
                };
                // Keys beside `workspace = true` (features) add to the workspace's.
                if let Some(extra) = value.as_table() {
                    for (key, extra) in extra.iter().filter(|(k, _)| *k != "workspace") {
                        match (concrete.get_mut(key), extra) {
                            (Some(toml::Value::Array(mine)), toml::Value::Array(more)) => {
                                mine.extend(more.iter().cloned())
                            }
                            _ => {
                                concrete.insert(key.clone(), extra.clone());
                            }
                        }
                    }
                }
                *value = toml::Value::Table(concrete);
            }
        }
    }
    // Lints inherited from the workspace do not travel; the SDK's own `[lints.rust]` does.
    if table.get("lints").is_some_and(is_inherited) {
        table.remove("lints");
    }
    Ok(toml::to_string(&table)?)
}

fn is_inherited(value: &toml::Value) -> bool {
    value
        .as_table()
        .and_then(|t| t.get("workspace"))
        .and_then(toml::Value::as_bool)
        == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path, root, out);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn carries_every_file_of_the_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        let mut on_disk = Vec::new();
        files_under(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut carried: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        carried.sort();
        assert_eq!(
            carried, on_disk,
            "template/sdk.rs must list every file of guest-sdk"
        );
    }

    #[test]
    fn vendored_manifests_stand_on_their_own() {
        let dir = std::env::temp_dir().join(format!("hubhost-vendored-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        vendor(&dir).expect("vendored");
        let sdk: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest"))
                .expect("toml");
        let text = toml::to_string(&sdk).expect("text");
        assert!(!text.contains("workspace"), "{text}");
        assert_eq!(sdk["package"]["name"].as_str(), Some("hubhost-sdk"));
        assert_eq!(sdk["package"]["edition"].as_str(), Some("2024"));
        assert_eq!(
            sdk["dependencies"]["hubhost-sdk-macros"]["path"].as_str(),
            Some("macros")
        );
        assert_eq!(
            sdk["dependencies"]["wit-bindgen"]["version"].as_str(),
            Some("0.46")
        );
        let features = sdk["dependencies"]["serde_json"]["features"]
            .as_array()
            .expect("features");
        assert!(features.iter().any(|f| f.as_str() == Some("raw_value")));
        assert!(sdk["lints"]["rust"].is_table(), "the SDK's own lints stay");
        let macros = std::fs::read_to_string(dir.join("macros/Cargo.toml")).expect("manifest");
        assert!(!macros.contains("workspace"), "{macros}");
        assert!(dir.join("wit/hub.wit").is_file());
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
