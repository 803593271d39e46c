//! Helpers shared by the workspace's integration tests. A test that runs a Trellis binary of another
//! crate (`trellisd` from the CLI's tests, `trellis-proxy` from the control plane's) asks for it here.
//!
//! The binaries come from the same cargo command `make test` runs, `cargo test --workspace
//! --all-targets`, with `--no-run`: under `make test` that is a no-op, because that command already
//! built every crate's binaries with the tests' features. Building them with any other command (say
//! `cargo build -p trellis-proxy`) unifies features differently and compiles every dependency a second
//! time, which doubles the build's time and disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Prefixes of the variables cargo sets for a test process. They must not reach a cargo run from it:
/// build scripts (ring's) track some of them, and a changed value rebuilds them and all above them.
const TEST_ONLY_VARIABLE_PREFIXES: [&str; 5] =
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"];
/// Single variables cargo sets for a test process, kept out of a nested cargo run for the same reason.
const TEST_ONLY_VARIABLES: [&str; 2] = ["CARGO_TARGET_TMPDIR", "OUT_DIR"];

/// Where the running test's binaries live: the profile folder (`target/debug`), its name, and the
/// target triple when the build named one (`target/<triple>/debug`).
#[derive(Debug, Clone)]
pub struct BuildFolder {
    /// `target/debug`, `target/release` or `target/<triple>/<profile>`.
    pub bin_dir: PathBuf,
    /// The target folder itself (`target`).
    pub target_dir: PathBuf,
    /// `debug`, `release` or a custom profile's name.
    pub profile: String,
    /// The triple of a cross or `--target` build.
    pub triple: Option<String>,
}

impl BuildFolder {
    /// The folder of the running test executable (`<target>/<profile>/deps/<test>`).
    pub fn of_this_test() -> BuildFolder {
        let exe = std::env::current_exe().expect("the test executable's path");
        let deps = exe.parent().expect("the test executable lives in a folder");
        let bin_dir = if deps.file_name().is_some_and(|name| name == "deps") {
            deps.parent().expect("deps lives in the profile folder").to_owned()
        } else {
            deps.to_owned()
        };
        BuildFolder::from_bin_dir(bin_dir)
    }

    /// The build folder around `bin_dir`, a profile folder.
    pub fn from_bin_dir(bin_dir: PathBuf) -> BuildFolder {
        let profile = bin_dir.file_name().and_then(|name| name.to_str()).expect("a profile folder").to_owned();
        let above = bin_dir.parent().expect("the profile folder is in a target folder");
        // Cargo writes both files at the root of a target folder, never in a triple's folder; either
        // may have been removed by hand.
        let is_target_dir = ["CACHEDIR.TAG", ".rustc_info.json"].iter().any(|file| above.join(file).exists());
        let (target_dir, triple) = if is_target_dir {
            (above.to_owned(), None)
        } else {
            let triple = above.file_name().and_then(|name| name.to_str()).map(str::to_owned);
            (above.parent().expect("a target folder above the triple").to_owned(), triple)
        };
        BuildFolder { bin_dir, target_dir, profile, triple }
    }

    /// `cargo test --workspace --all-targets --no-run` for this profile, target and target folder.
    fn build_command(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["test", "--workspace", "--all-targets", "--no-run", "--quiet"]);
        command.arg("--target-dir").arg(&self.target_dir);
        match self.profile.as_str() {
            "debug" => {}
            "release" => {
                command.arg("--release");
            }
            other => {
                command.args(["--profile", other]);
            }
        }
        if let Some(triple) = &self.triple {
            command.args(["--target", triple]);
        }
        command.current_dir(workspace_root());
        without_test_variables(&mut command);
        command
    }
}

/// Set to `1` to skip the tests that need root (network namespaces, iptables) when not root; without
/// it such a test fails rather than pass silently.
pub const SKIP_ROOT_TESTS_ENV: &str = "TRELLIS_SKIP_ROOT_TESTS";

/// Whether a test that needs root runs: true as root; false (after saying so) when not root and
/// [`SKIP_ROOT_TESTS_ENV`] is `1`; otherwise the test fails, naming what it needs.
pub fn root_or_skip(test: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if euid == 0 {
        return true;
    }
    if std::env::var(SKIP_ROOT_TESTS_ENV).as_deref() == Ok("1") {
        eprintln!("skipped {test}: not root and {SKIP_ROOT_TESTS_ENV}=1");
        return false;
    }
    panic!(
        "{test} must run as root (it creates network namespaces and writes iptables rules in them); \
         run the tests as root, or set {SKIP_ROOT_TESTS_ENV}=1 to skip them"
    );
}

/// The workspace's root folder (this crate's parent).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("test-support lives in the workspace")
}

/// The path of the workspace binary `name` (`trellisd`, `trellis-proxy`, `trellis`,
/// `trellis-ordering`) in the running test's build folder, built first (once per test process).
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<BuildFolder> = OnceLock::new();
    let folder = BUILT.get_or_init(|| {
        let folder = BuildFolder::of_this_test();
        let mut build = folder.build_command();
        let status = build.status().expect("run cargo to build the workspace's binaries");
        assert!(status.success(), "building the workspace's binaries failed ({status}): {build:?}");
        folder
    });
    let binary = folder.bin_dir.join(name);
    assert!(binary.is_file(), "no {name} in {} after building the workspace", folder.bin_dir.display());
    binary
}

/// `command` without the variables cargo sets only for tests, so a cargo it runs finds every build
/// script fresh.
pub fn without_test_variables(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if TEST_ONLY_VARIABLE_PREFIXES.iter().any(|prefix| text.starts_with(prefix))
            || TEST_ONLY_VARIABLES.contains(&text.as_ref())
        {
            command.env_remove(&name);
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_folder_directly_in_the_target_folder_has_no_triple() {
        let target = std::env::temp_dir().join(format!("trellis-ts-{}", std::process::id()));
        std::fs::create_dir_all(target.join("release")).expect("mkdir");
        std::fs::write(target.join("CACHEDIR.TAG"), "").expect("tag");
        let folder = BuildFolder::from_bin_dir(target.join("release"));
        assert_eq!((folder.profile.as_str(), folder.triple.as_deref()), ("release", None));
        assert_eq!(folder.target_dir, target);
        std::fs::remove_dir_all(&target).expect("clean up");
    }

    #[test]
    fn a_profile_folder_under_a_triple_names_the_triple_and_the_target_folder_above_it() {
        let target = std::env::temp_dir().join(format!("trellis-ts-triple-{}", std::process::id()));
        let bin_dir = target.join("x86_64-unknown-linux-musl").join("debug");
        std::fs::create_dir_all(&bin_dir).expect("mkdir");
        std::fs::write(target.join("CACHEDIR.TAG"), "").expect("tag");
        let folder = BuildFolder::from_bin_dir(bin_dir);
        assert_eq!((folder.profile.as_str(), folder.triple.as_deref()), ("debug", Some("x86_64-unknown-linux-musl")));
        assert_eq!(folder.target_dir, target);
        std::fs::remove_dir_all(&target).expect("clean up");
    }

    #[test]
    fn test_only_variables_are_removed_from_a_nested_cargo_command() {
        let mut command = Command::new("true");
        without_test_variables(&mut command);
        let removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.iter().any(|name| name == "CARGO_PKG_NAME"),
            "cargo sets CARGO_PKG_NAME for tests: {removed:?}"
        );
        assert!(!removed.iter().any(|name| name == "PATH"), "{removed:?}");
    }
}
