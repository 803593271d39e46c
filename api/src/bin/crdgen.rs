//! `crdgen`: writes one YAML file per CustomResourceDefinition into a folder (`crds/` by default),
//! or checks that the folder already holds exactly what would be written (`--check`).

use std::path::PathBuf;

use anyhow::{Context, bail};

/// Folder written when none is given.
const DEFAULT_OUT_DIR: &str = "crds";

fn main() -> anyhow::Result<()> {
    let mut check = false;
    let mut out_dir = PathBuf::from(DEFAULT_OUT_DIR);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR]   (DIR defaults to {DEFAULT_OUT_DIR})");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown flag {other:?}; see crdgen --help"),
            other => out_dir = PathBuf::from(other),
        }
    }
    let mut stale = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for crd in trellis_api::crd::all() {
        let name = trellis_api::crd::file_name(&crd);
        let text = trellis_api::crd::to_yaml(&crd)?;
        let path = out_dir.join(&name);
        expected.insert(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if check {
        for entry in std::fs::read_dir(&out_dir).with_context(|| format!("reading {}", out_dir.display()))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !expected.contains(&name) {
                stale.push(format!("{} (no longer generated)", out_dir.join(name).display()));
            }
        }
        if !stale.is_empty() {
            bail!("CRDs are out of date, run `make crds`: {}", stale.join(", "));
        }
    }
    Ok(())
}
