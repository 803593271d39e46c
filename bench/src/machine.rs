//! Facts about the machine a bench runs on, for the reports: CPU model, memory, and the first line
//! a tool prints about its version.

use std::process::Command;

/// The first line a command prints (stdout, else stderr), if it runs.
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    let text = if output.stdout.is_empty() { output.stderr } else { output.stdout };
    String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_owned())
}

/// The CPU model from `/proc/cpuinfo`, or `unknown`.
pub fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

/// Total memory from `/proc/meminfo` (`23.5 GiB`), or `unknown`.
pub fn memory() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("unknown".into(), |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
}

/// This process's command line as a shell reads it back: arguments with spaces or quotes single-quoted.
pub fn own_command_line(program: &str) -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = program.to_owned();
    }
    shell_join(&args)
}

/// `args` joined for a shell: each argument that a shell would split or interpret single-quoted.
pub fn shell_join(args: &[String]) -> String {
    let quote = |arg: &String| {
        let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
        if plain { arg.clone() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_with_spaces_or_quotes_are_single_quoted_for_a_shell() {
        let args: Vec<String> =
            ["bench", "--build", "release build, static", "it's", "", "--rates=1000,2000"].map(String::from).into();
        assert_eq!(shell_join(&args), r"bench --build 'release build, static' 'it'\''s' '' --rates=1000,2000");
    }
}
