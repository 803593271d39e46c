//! Flags, environment variables and defaults of `trellis-ordering`, and the names and ports the Istio
//! tutorial gives the app's services. Every flag has an environment variable; a bad value names the
//! flag. The tutorial's YAML (`examples/tutorial/`) fixes the names: the ingress VirtualService sends
//! `/api/v1/booking` to `booking-service` port 8080, and the other services follow the shape of the
//! tutorial's `order-service` (Service port 80).

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::outbound::{HttpUrl, UrlError};

/// Environment variable for `--role`.
pub const ENV_ROLE: &str = "TRELLIS_ORDERING_ROLE";
/// Environment variable for `--version`.
pub const ENV_VERSION: &str = "TRELLIS_ORDERING_VERSION";
/// Environment variable for `--listen`.
pub const ENV_LISTEN: &str = "TRELLIS_ORDERING_LISTEN";
/// Environment variable for `--inventory-url`.
pub const ENV_INVENTORY_URL: &str = "TRELLIS_ORDERING_INVENTORY_URL";
/// Environment variable for `--shipping-url`.
pub const ENV_SHIPPING_URL: &str = "TRELLIS_ORDERING_SHIPPING_URL";
/// Environment variable for `--upstream-timeout-ms`.
pub const ENV_UPSTREAM_TIMEOUT_MS: &str = "TRELLIS_ORDERING_UPSTREAM_TIMEOUT_MS";
/// Environment variable for `--log`.
pub const ENV_LOG: &str = "TRELLIS_ORDERING_LOG";
/// Environment variable naming this instance in answers (Kubernetes sets it to the pod name).
pub const ENV_HOSTNAME: &str = "HOSTNAME";

/// The version this instance reports when none is given.
pub const DEFAULT_VERSION: &str = "v1";
/// IP the server binds when `--listen` is not given.
pub const DEFAULT_LISTEN_IP: &str = "0.0.0.0";
/// Port of `booking-service` (the tutorial's ingress VirtualService routes to port 8080).
pub const BOOKING_PORT: u16 = 8080;
/// Port of `inventory-service` (shaped like the tutorial's `order-service`: port 80).
pub const INVENTORY_PORT: u16 = 80;
/// Port of `shipping-service` (shaped like the tutorial's `order-service`: port 80).
pub const SHIPPING_PORT: u16 = 80;
/// Where booking finds inventory: the tutorial's service name and port.
pub const DEFAULT_INVENTORY_URL: &str = "http://inventory-service:80/api/v1/inventory";
/// Where booking finds shipping: the tutorial's service name and port.
pub const DEFAULT_SHIPPING_URL: &str = "http://shipping-service:80/api/v1/shipping";
/// How long booking waits for each dependency (connect and whole answer) before reporting it failed.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 10_000;
/// Log filter (`tracing` env-filter syntax).
pub const DEFAULT_LOG: &str = "info";
/// How long in-flight requests may take to finish after SIGTERM or SIGINT.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Path booking serves (and everything under it), as the tutorial's ingress route matches it by prefix.
pub const BOOKING_PATH: &str = "/api/v1/booking";
/// Path inventory serves (and everything under it).
pub const INVENTORY_PATH: &str = "/api/v1/inventory";
/// Path shipping serves (and everything under it).
pub const SHIPPING_PATH: &str = "/api/v1/shipping";
/// Liveness and readiness path every role serves.
pub const HEALTH_PATH: &str = "/healthz";

/// Which of the tutorial's services this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `booking-service`: takes orders and asks inventory and shipping.
    Booking,
    /// `inventory-service`: answers with its version; can be made slow or failing.
    Inventory,
    /// `shipping-service`: answers with its version; can be made slow or failing.
    Shipping,
}

impl Role {
    /// The role's name in answers and in the `x-ordering-service` header.
    pub fn name(self) -> &'static str {
        match self {
            Role::Booking => "booking",
            Role::Inventory => "inventory",
            Role::Shipping => "shipping",
        }
    }

    /// The port the tutorial's Service exposes for this role, and so the default listening port.
    pub fn port(self) -> u16 {
        match self {
            Role::Booking => BOOKING_PORT,
            Role::Inventory => INVENTORY_PORT,
            Role::Shipping => SHIPPING_PORT,
        }
    }

    /// The API path the role serves.
    pub fn path(self) -> &'static str {
        match self {
            Role::Booking => BOOKING_PATH,
            Role::Inventory => INVENTORY_PATH,
            Role::Shipping => SHIPPING_PATH,
        }
    }
}

/// The version label of this instance (the tutorial's DestinationRule subsets select on `version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// The label value, as in the pod's `version` label and the `x-ordering-version` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// The Istio tutorial's online ordering app: one binary, one role per process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "trellis-ordering", about)]
pub struct Args {
    /// Which service this process is.
    #[arg(long, env = ENV_ROLE)]
    pub role: Role,
    /// The version this instance answers with.
    #[arg(long, env = ENV_VERSION, default_value = DEFAULT_VERSION)]
    pub version: Version,
    /// Address to listen on [default: 0.0.0.0 and the role's tutorial port: booking 8080, others 80].
    #[arg(long, env = ENV_LISTEN, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Inventory's URL (booking only); plain `http://`.
    #[arg(long, env = ENV_INVENTORY_URL, default_value = DEFAULT_INVENTORY_URL, value_name = "URL")]
    pub inventory_url: String,
    /// Shipping's URL (booking only); plain `http://`.
    #[arg(long, env = ENV_SHIPPING_URL, default_value = DEFAULT_SHIPPING_URL, value_name = "URL")]
    pub shipping_url: String,
    /// How long booking waits for each dependency, in milliseconds.
    #[arg(long, env = ENV_UPSTREAM_TIMEOUT_MS, default_value_t = DEFAULT_UPSTREAM_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "MS")]
    pub upstream_timeout_ms: u64,
    /// Log filter (`tracing` env-filter syntax, e.g. `info` or `debug`).
    #[arg(long, env = ENV_LOG, default_value = DEFAULT_LOG)]
    pub log: String,
}

/// A flag whose value cannot be used.
#[derive(Debug, Error)]
#[error("--{flag}: {problem}")]
pub struct SettingsError {
    /// The flag, without dashes.
    pub flag: &'static str,
    pub problem: UrlError,
}

/// The resolved settings of one process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub role: Role,
    pub version: Version,
    pub listen: SocketAddr,
    pub inventory: HttpUrl,
    pub shipping: HttpUrl,
    pub upstream_timeout: Duration,
    /// This instance's name (the pod name in Kubernetes), shown in answers.
    pub instance: Option<String>,
}

impl Args {
    /// Checks the flags and fills in the role-dependent defaults; `instance` comes from `HOSTNAME`.
    pub fn settings(&self, instance: Option<String>) -> Result<Settings, SettingsError> {
        let listen = self.listen.unwrap_or_else(|| default_listen(self.role));
        let inventory =
            HttpUrl::parse(&self.inventory_url).map_err(|problem| SettingsError { flag: "inventory-url", problem })?;
        let shipping =
            HttpUrl::parse(&self.shipping_url).map_err(|problem| SettingsError { flag: "shipping-url", problem })?;
        Ok(Settings {
            role: self.role,
            version: self.version,
            listen,
            inventory,
            shipping,
            upstream_timeout: Duration::from_millis(self.upstream_timeout_ms),
            instance: instance.filter(|name| !name.is_empty()),
        })
    }
}

/// `0.0.0.0` and the role's tutorial port.
pub fn default_listen(role: Role) -> SocketAddr {
    let ip = DEFAULT_LISTEN_IP.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    SocketAddr::new(ip, role.port())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("trellis-ordering").chain(args.iter().copied()))
    }

    #[test]
    fn the_default_urls_name_the_tutorials_services_and_ports() {
        let args = parse(&["--role", "booking"]).expect("booking with defaults parses");
        let settings = args.settings(None).expect("defaults are valid");
        assert_eq!(settings.inventory.host, "inventory-service");
        assert_eq!(settings.inventory.port, 80);
        assert_eq!(settings.inventory.path_and_query, INVENTORY_PATH);
        assert_eq!(settings.shipping.host, "shipping-service");
        assert_eq!(settings.shipping.port, 80);
        assert_eq!(settings.shipping.path_and_query, SHIPPING_PATH);
        assert_eq!(settings.version, Version::V1);
    }

    #[test]
    fn each_role_listens_on_its_tutorial_port_by_default() {
        for (role, port) in [("booking", 8080), ("inventory", 80), ("shipping", 80)] {
            let settings = parse(&["--role", role]).expect("role parses").settings(None).expect("valid");
            assert_eq!(settings.listen, SocketAddr::from(([0, 0, 0, 0], port)), "{role}");
        }
    }

    #[test]
    fn an_explicit_listen_address_and_version_are_used() {
        let args = parse(&["--role", "shipping", "--version", "v2", "--listen", "127.0.0.1:9000"]).expect("parses");
        let settings = args.settings(Some("shipping-v2-abc".into())).expect("valid");
        assert_eq!(settings.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(settings.version.as_str(), "v2");
        assert_eq!(settings.instance.as_deref(), Some("shipping-v2-abc"));
    }

    #[test]
    fn an_unknown_role_or_version_is_refused() {
        assert!(parse(&["--role", "payments"]).is_err());
        assert!(parse(&["--role", "booking", "--version", "v3"]).is_err());
        assert!(parse(&[]).is_err(), "the role is required");
    }

    #[test]
    fn a_bad_dependency_url_names_its_flag() {
        let args = parse(&["--role", "booking", "--shipping-url", "https://shipping-service/"]).expect("parses");
        let err = args.settings(None).expect_err("https is refused");
        assert!(err.to_string().starts_with("--shipping-url: "), "{err}");
    }

    #[test]
    fn a_zero_upstream_timeout_is_refused() {
        assert!(parse(&["--role", "booking", "--upstream-timeout-ms", "0"]).is_err());
    }
}
