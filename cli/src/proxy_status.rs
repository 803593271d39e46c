//! `trellis proxy-status`: every proxy connected to `trellisd` and whether it runs the config it was
//! last sent, from `GET /v1/proxies` (`trellis_api::push::ProxyStatusList`), as a table or as JSON.
//!
//! A proxy is SYNCED when it acknowledged the version last sent, NACKED when it refused it (the error
//! follows the table; it keeps serving its last good config), and STALE while an acknowledgement is
//! outstanding.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use trellis_api::push::{DEFAULT_PORT, ProxyStatus, ProxyStatusList, STATUS_PATH};

/// The control plane asked unless `--control-plane` says otherwise (`trellis run`'s default).
pub const DEFAULT_CONTROL_PLANE: &str = "127.0.0.1:15012";
/// Environment variable of `--control-plane`.
pub const CONTROL_PLANE_ENV: &str = "TRELLIS_CONTROL_PLANE";
/// How long the whole exchange with `trellisd` may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit code when `trellisd` cannot be asked.
pub const EXIT_UNREACHABLE: u8 = 1;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Flags of `trellis proxy-status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// trellisd's address: `host:port` or `http://host:port` (port 15012 when absent).
    #[arg(long, env = CONTROL_PLANE_ENV, default_value = DEFAULT_CONTROL_PLANE, value_name = "ADDR")]
    pub control_plane: String,
    /// `table`, or `json` (the list as trellisd returns it).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Runs `trellis proxy-status`.
pub fn run(args: &Args) -> ExitCode {
    let listed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(fetch(&args.control_plane)));
    let listed = match listed {
        Ok(listed) => listed,
        Err(err) => {
            eprintln!("trellis proxy-status: {err:#}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&listed).map(|json| json + "\n").unwrap_or_default(),
        Output::Table => table(&listed, now()),
    };
    print!("{text}");
    ExitCode::SUCCESS
}

/// The URL of the status list of the control plane at `address` (`host[:port]` or `http://host[:port]`).
pub fn status_url(address: &str) -> Result<String> {
    let authority = match address.split_once("://") {
        None => address,
        Some(("http", rest)) => rest,
        Some((scheme, _)) => bail!("--control-plane {address:?}: {scheme}:// is not supported; use host:port"),
    };
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("--control-plane {address:?} is not host:port");
    }
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) => !host.ends_with(':') && port.parse::<u16>().is_ok() && !port.is_empty(),
        None => false,
    };
    let has_port = has_port && (!authority.starts_with('[') || authority.contains("]:"));
    let authority = if has_port { authority.to_owned() } else { format!("{authority}:{DEFAULT_PORT}") };
    Ok(format!("http://{authority}{STATUS_PATH}"))
}

/// The status list of the control plane at `address`.
pub async fn fetch(address: &str) -> Result<ProxyStatusList> {
    let url = status_url(address)?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = url.parse().with_context(|| format!("--control-plane {address:?}"))?;
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| anyhow!("cannot reach trellisd at {url}: {}", cause(&e)))?;
        let status = response.status();
        let body = response.into_body().collect().await.context("reading trellisd's answer")?.to_bytes();
        if !status.is_success() {
            bail!("trellisd at {url} answered {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        serde_json::from_slice(&body).with_context(|| format!("{url} did not answer a proxy status list"))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("trellisd at {url} did not answer within {} s", REQUEST_TIMEOUT.as_secs()))?
}

/// The innermost cause of an error (a client error's outer text says little).
fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A proxy's sync state as the table shows it.
pub fn state(proxy: &ProxyStatus) -> &'static str {
    match (proxy.in_sync, &proxy.last_error) {
        (true, _) => "SYNCED",
        (false, Some(_)) => "NACKED",
        (false, None) => "STALE",
    }
}

/// How long ago `since` (Unix seconds) was, at `now`: `42s`, `3m12s`, `5h7m`, `2d3h`.
pub fn age(since: u64, now: u64) -> String {
    let seconds = now.saturating_sub(since);
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{minutes}m{}s", seconds % 60),
        3600..86_400 => format!("{hours}h{}m", minutes % 60),
        _ => format!("{days}d{}h", hours % 24),
    }
}

/// The list as a table, with the errors of the proxies that have one below it; `now` in Unix seconds.
pub fn table(listed: &ProxyStatusList, now: u64) -> String {
    if listed.proxies.is_empty() {
        return "No proxy is connected.\n".to_owned();
    }
    let header = ["PROXY", "NAMESPACE", "MODE", "CONNECTED", "SENT", "ACKED", "STATUS"];
    let rows: Vec<[String; 7]> = listed
        .proxies
        .iter()
        .map(|p| {
            let mode = serde_json::to_value(p.mode).ok().and_then(|v| v.as_str().map(str::to_owned));
            [
                p.id.clone(),
                p.namespace.clone(),
                mode.unwrap_or_default(),
                age(p.connected_at, now),
                p.sent_version.clone(),
                p.acked_version.clone().unwrap_or_else(|| "-".to_owned()),
                state(p).to_owned(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).chain([header[c].len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header, &mut out);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>(), &mut out);
    }
    for proxy in &listed.proxies {
        if let Some(error) = &proxy.last_error {
            let _ = writeln!(out, "{}: {error}", proxy.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use trellis_api::proxy_config::ProxyMode;

    use super::*;

    fn status(id: &str, sent: &str, acked: Option<&str>, error: Option<&str>) -> ProxyStatus {
        ProxyStatus {
            id: id.to_owned(),
            namespace: "shop".to_owned(),
            mode: ProxyMode::Sidecar,
            proxy_version: "0.1.0".to_owned(),
            address: "127.0.0.1:40000".to_owned(),
            connected_at: 1_000,
            sent_version: sent.to_owned(),
            acked_version: acked.map(str::to_owned),
            in_sync: acked == Some(sent),
            last_error: error.map(str::to_owned),
            sent_messages: 1,
            sent_bytes: 100,
        }
    }

    #[test]
    fn the_table_shows_each_proxy_with_its_versions_and_sync_state_and_then_the_errors() {
        let listed = ProxyStatusList {
            proxies: vec![
                status("backend-v1.shop", "7", Some("7"), None),
                status("backend-v2.shop", "7", Some("6"), Some("refused version 7: unknown cluster \"x\"")),
                status("client.shop", "7", None, None),
            ],
        };
        let text = table(&listed, 1_075);
        let expected = "\
PROXY            NAMESPACE  MODE     CONNECTED  SENT  ACKED  STATUS
backend-v1.shop  shop       sidecar  1m15s      7     7      SYNCED
backend-v2.shop  shop       sidecar  1m15s      7     6      NACKED
client.shop      shop       sidecar  1m15s      7     -      STALE
backend-v2.shop: refused version 7: unknown cluster \"x\"
";
        assert_eq!(text, expected);
        assert_eq!(table(&ProxyStatusList::default(), 0), "No proxy is connected.\n");
    }

    #[test]
    fn ages_read_like_kubectl_ages() {
        assert_eq!(age(100, 142), "42s");
        assert_eq!(age(0, 192), "3m12s");
        assert_eq!(age(0, 5 * 3600 + 7 * 60), "5h7m");
        assert_eq!(age(0, 2 * 86_400 + 3 * 3600), "2d3h");
        assert_eq!(age(500, 100), "0s", "a clock that went back is no negative age");
    }

    #[test]
    fn the_control_plane_address_takes_trellisds_port_by_default() {
        assert_eq!(status_url("127.0.0.1:15012").expect("valid"), "http://127.0.0.1:15012/v1/proxies");
        assert_eq!(status_url("trellisd").expect("valid"), "http://trellisd:15012/v1/proxies");
        assert_eq!(status_url("http://trellisd:9000/").expect("valid"), "http://trellisd:9000/v1/proxies");
        assert_eq!(status_url("[::1]:15012").expect("valid"), "http://[::1]:15012/v1/proxies");
        assert_eq!(status_url("[::1]").expect("valid"), "http://[::1]:15012/v1/proxies");
        assert!(status_url("https://trellisd").is_err());
        assert!(status_url("trellisd/x").is_err());
    }
}
