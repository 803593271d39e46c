//! `Gateway` (networking.istio.io): the servers (port, protocol, hosts, TLS) a gateway proxy
//! selected by labels exposes at the edge of the mesh.

use std::collections::{BTreeMap, BTreeSet};

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Labels;
use super::service_entry::Protocol;
use super::workload_entry::{
    UNIX_ADDRESS_PREFIX, is_dns1123_label, is_ip, unix_address_problem, wildcard_domain_problem,
};
use crate::{FieldPath, Issues, Validate, status::Status};

/// How a server's TLS is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Forward the TLS connection untouched, routed by SNI (the default).
    Passthrough,
    /// Terminate TLS with the server's certificate.
    Simple,
    /// Terminate TLS and require a client certificate signed by the given CA.
    Mutual,
    /// Forward untouched, routed by SNI alone (no VirtualService needed).
    AutoPassthrough,
    /// Terminate with the mesh's own mutual TLS certificates.
    IstioMutual,
    /// Like MUTUAL, but a client certificate is optional.
    OptionalMutual,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum TlsProtocol {
    /// The proxy's default.
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

impl TlsProtocol {
    fn as_str(self) -> &'static str {
        match self {
            TlsProtocol::TlsAuto => "TLS_AUTO",
            TlsProtocol::TlsV1_0 => "TLSV1_0",
            TlsProtocol::TlsV1_1 => "TLSV1_1",
            TlsProtocol::TlsV1_2 => "TLSV1_2",
            TlsProtocol::TlsV1_3 => "TLSV1_3",
        }
    }
}

/// The port a server listens on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// The port number; 0 only with a unix socket `bind`.
    #[schemars(range(max = 4294967295u32))]
    pub number: u32,
    /// Protocol on the port: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP or TLS.
    pub protocol: String,
    /// Name of the port, unique in the gateway.
    pub name: String,
    /// Has no effect on gateways (and is rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4294967295u32))]
    pub target_port: Option<u32>,
}

/// One certificate and key pair, as files on the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    /// Path of the PEM server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Path of the PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Path of the PEM CA bundle that verifies client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
}

/// TLS settings of a server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1").message("only one of credentialNames or tlsCertificates can be set"))]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1").message("only one of credentialName or credentialNames can be set"))]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1").message("only one of credentialName or tlsCertificates can be set"))]
pub struct ServerTlsSettings {
    /// On a plain HTTP server: answer every request with a redirect to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// How TLS is handled; PASSTHROUGH when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// Path of the PEM server certificate (file mounted on the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Path of the PEM private key (file mounted on the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Path of the PEM CA bundle that verifies client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Path of the PEM certificate revocation list for client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Name of the Secret that holds the certificate, key and optionally the client CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names of up to two Secrets (such as an RSA and an ECDSA certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    pub credential_names: Option<Vec<String>>,
    /// Up to two certificate and key pairs as files (such as RSA and ECDSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    pub tls_certificates: Option<Vec<TlsCertificate>>,
    /// Name of the Secret that holds the CA bundle for client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_credential_name: Option<String>,
    /// Identities a client certificate must carry (one of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<Vec<String>>,
    /// Base64 SHA-256 hashes of allowed client certificates' public keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_spki: Option<Vec<String>>,
    /// Hex SHA-256 hashes of allowed client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_hash: Option<Vec<String>>,
    /// Lowest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// Highest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocol>,
    /// Cipher suites offered; the proxy's defaults when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suites: Option<Vec<String>>,
    /// ECDH curves offered; the proxy's defaults when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecdh_curves: Option<Vec<String>>,
    /// Skip verifying the client certificate (MUTUAL and OPTIONAL_MUTUAL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// One listener of the gateway: a port, the hosts served on it, and its TLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The port the proxy listens on.
    pub port: Port,
    /// Address (IP or `unix://` socket) to listen on instead of every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts served, as `[namespace/]dnsName`; `*` wildcards allowed.
    pub hosts: Vec<String>,
    /// TLS settings; required for HTTPS and TLS ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Where traffic goes when no route matches (`127.0.0.1:port` or `unix://path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Name of the server, unique in the gateway, for reference by routes and in telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A gateway: the servers that the proxies selected by `selector` expose.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    status = "Status",
    shortname = "gw",
    category = "istio-io",
    category = "networking-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The servers the gateway exposes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<Server>>,
    /// Labels of the gateway proxies this applies to (searched in every namespace by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
}

impl Validate for GatewaySpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let at = path.key("servers");
        let servers = self.servers.as_deref().unwrap_or(&[]);
        if servers.is_empty() {
            issues.error(&at, "a gateway needs at least one server");
        }
        let mut port_names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut server_names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, server) in servers.iter().enumerate() {
            let at_server = at.index(i);
            server.validate(&at_server, issues);
            if let Some(first) = port_names.insert(server.port.name.as_str(), i) {
                issues.error(
                    &at_server.key("port").key("name"),
                    format!("port name {:?} is already used by servers[{first}]", server.port.name),
                );
            }
            if let Some(name) = server.name.as_deref().filter(|n| !n.is_empty())
                && let Some(first) = server_names.insert(name, i)
            {
                issues
                    .error(&at_server.key("name"), format!("server name {name:?} is already used by servers[{first}]"));
            }
        }
    }
}

impl Validate for Server {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let at_hosts = path.key("hosts");
        if self.hosts.is_empty() {
            issues.error(&at_hosts, "a server needs at least one host");
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if let Some(problem) = gateway_host_problem(host) {
                issues.error(&at_hosts.index(i), problem);
            }
        }

        let bind = self.bind.as_deref().unwrap_or("");
        let unix_bind = bind.starts_with(UNIX_ADDRESS_PREFIX);
        let protocol = validate_port(&self.port, unix_bind, &path.key("port"), issues);
        if let Some(socket) = bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
            if let Some(problem) = unix_address_problem(socket) {
                issues.error(&path.key("bind"), problem);
            }
            if self.port.number != 0 {
                issues.error(&path.key("port").key("number"), "port number must be 0 with a unix socket bind");
            }
        } else if !bind.is_empty() && !is_ip(bind) {
            issues.error(&path.key("bind"), format!("bind {bind:?} is not a valid IP address"));
        }

        self.tls.validate(&path.key("tls"), issues);

        let Some(protocol) = protocol else { return };
        let at_tls = path.key("tls");
        match &self.tls {
            None if protocol.is_tls() => {
                issues.error(&at_tls, format!("a {} server needs tls settings", self.port.protocol));
            }
            Some(tls) if !protocol.is_tls() => {
                let passthrough = matches!(tls.mode, None | Some(TlsMode::Passthrough | TlsMode::AutoPassthrough));
                let has_files =
                    [&tls.ca_certificates, &tls.private_key, &tls.server_certificate].iter().any(|f| is_set(f));
                if !protocol.is_http() {
                    issues.error(&at_tls, format!("a {} server cannot have tls settings", self.port.protocol));
                } else if !passthrough || has_files {
                    issues.error(&at_tls, "a plain-text HTTP server can only have tls.httpsRedirect");
                }
            }
            _ => {}
        }
        if !protocol.is_http() && self.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
            issues.warn(&at_tls.key("httpsRedirect"), "httpsRedirect only has an effect on HTTP servers");
        }
    }
}

/// Checks a server port and returns its protocol when the whole port is valid.
fn validate_port(port: &Port, unix_bind: bool, path: &FieldPath, issues: &mut Issues) -> Option<Protocol> {
    let mut valid = true;
    let protocol = Protocol::parse(&port.protocol);
    if protocol.is_none() {
        valid = false;
        issues.error(
            &path.key("protocol"),
            format!(
                "unknown protocol {:?}; use HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, REDIS, MYSQL, TCP or TLS",
                port.protocol
            ),
        );
    }
    if (port.number > 0 || !unix_bind) && !(1..=65535).contains(&port.number) {
        valid = false;
        issues.error(&path.key("number"), format!("port {} is out of range 1-65535", port.number));
    }
    if port.target_port.is_some_and(|t| t > 0) {
        valid = false;
        issues.error(&path.key("targetPort"), "targetPort has no effect on gateways");
    }
    if port.name.is_empty() {
        valid = false;
        issues.error(&path.key("name"), "port name is required");
    }
    protocol.filter(|_| valid)
}

fn is_set(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

/// Cipher suites the proxy knows by name.
const KNOWN_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

fn is_known_cipher_suite(suite: &str) -> bool {
    // Names starting with a symbol (`[A|B]` groups, `!` exclusions) are passed through unchecked.
    suite.is_empty()
        || suite == "ALL"
        || !suite.chars().next().is_some_and(char::is_alphanumeric)
        || KNOWN_CIPHER_SUITES.contains(&suite)
}

impl Validate for ServerTlsSettings {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let mode = self.mode.unwrap_or(TlsMode::Passthrough);
        let has_credential_names = self.credential_names.is_some();
        let has_tls_certificates = self.tls_certificates.is_some();
        if has_tls_certificates && has_credential_names {
            issues.error(path, "only one of credentialNames or tlsCertificates can be set");
        }
        if self.credential_name.is_some() && has_credential_names {
            issues.error(path, "only one of credentialName or credentialNames can be set");
        }
        for (field, list_len) in [
            ("credentialNames", self.credential_names.as_ref().map(Vec::len)),
            ("tlsCertificates", self.tls_certificates.as_ref().map(Vec::len)),
        ] {
            if let Some(len) = list_len
                && !(1..=2).contains(&len)
            {
                issues.error(&path.key(field), format!("{field} must have 1 or 2 entries, not {len}"));
            }
        }

        if let (Some(min), Some(max)) = (self.min_protocol_version, self.max_protocol_version)
            && min != TlsProtocol::TlsAuto
            && max != TlsProtocol::TlsAuto
            && min > max
        {
            issues.error(
                &path.key("minProtocolVersion"),
                format!("minProtocolVersion {} is above maxProtocolVersion {}", min.as_str(), max.as_str()),
            );
        }
        if matches!(self.min_protocol_version, Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1))
            && self.cipher_suites.as_ref().is_none_or(Vec::is_empty)
        {
            issues.warn(
                &path.key("minProtocolVersion"),
                "TLS versions below 1.2 need cipherSuites set, the default ones do not support them",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, suite) in self.cipher_suites.iter().flatten().enumerate() {
            let at = path.key("cipherSuites").index(i);
            if !is_known_cipher_suite(suite) {
                issues.warn(&at, format!("unknown cipher suite {suite:?} is ignored"));
            } else if !seen.insert(suite.as_str()) {
                issues.warn(&at, format!("duplicate cipher suite {suite:?} is ignored"));
            }
        }

        let credential_name = is_set(&self.credential_name);
        let credential_names = self.credential_names.as_ref().is_some_and(|n| !n.is_empty());
        let tls_certificates = self.tls_certificates.as_ref().is_some_and(|c| !c.is_empty());
        if mode == TlsMode::IstioMutual {
            for (field, set) in [
                ("serverCertificate", is_set(&self.server_certificate)),
                ("privateKey", is_set(&self.private_key)),
                ("caCertificates", is_set(&self.ca_certificates)),
                ("tlsCertificates", tls_certificates),
                ("credentialName", credential_name),
                ("credentialNames", credential_names),
            ] {
                if set {
                    issues.error(
                        &path.key(field),
                        format!("ISTIO_MUTUAL uses the mesh's certificates and cannot set {field}"),
                    );
                }
            }
            return;
        }
        if matches!(mode, TlsMode::Passthrough | TlsMode::AutoPassthrough)
            && (is_set(&self.ca_crl)
                || is_set(&self.server_certificate)
                || is_set(&self.private_key)
                || is_set(&self.ca_certificates)
                || tls_certificates
                || credential_name
                || credential_names)
        {
            let name = if mode == TlsMode::Passthrough { "PASSTHROUGH" } else { "AUTO_PASSTHROUGH" };
            issues.warn(path, format!("{name} mode does not use certificates, they are ignored"));
        }

        let files = is_set(&self.server_certificate) && is_set(&self.private_key);
        let sources = [files, credential_name, credential_names, tls_certificates].iter().filter(|s| **s).count();
        if sources > 1 {
            issues.error(
                path,
                "only one of credentialName, credentialNames, serverCertificate/privateKey or tlsCertificates can be set",
            );
        }

        let terminating = matches!(mode, TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual);
        if terminating && !credential_name && !credential_names {
            let name = if mode == TlsMode::Simple { "SIMPLE" } else { "MUTUAL" };
            if mode != TlsMode::Simple && !is_set(&self.ca_certificates) && !is_set(&self.ca_cert_credential_name) {
                issues.error(&path.key("caCertificates"), format!("{name} TLS requires a client CA bundle"));
            }
            match &self.tls_certificates {
                Some(certificates) if !certificates.is_empty() => {
                    for (i, certificate) in certificates.iter().enumerate() {
                        let at = path.key("tlsCertificates").index(i);
                        if !is_set(&certificate.server_certificate) {
                            issues.error(
                                &at.key("serverCertificate"),
                                format!("{name} TLS requires a server certificate"),
                            );
                        }
                        if !is_set(&certificate.private_key) {
                            issues.error(&at.key("privateKey"), format!("{name} TLS requires a private key"));
                        }
                    }
                }
                _ => {
                    if !is_set(&self.server_certificate) {
                        issues.error(
                            &path.key("serverCertificate"),
                            format!("{name} TLS requires credentialName or a server certificate"),
                        );
                    }
                    if !is_set(&self.private_key) {
                        issues.error(
                            &path.key("privateKey"),
                            format!("{name} TLS requires credentialName or a private key"),
                        );
                    }
                }
            }
        }
        if is_set(&self.ca_crl) {
            if credential_name {
                issues.error(&path.key("caCrl"), "caCrl cannot be used with credentialName, put the CRL in the secret");
            }
            if mode == TlsMode::Simple {
                issues.error(&path.key("caCrl"), "caCrl cannot be used with SIMPLE TLS");
            }
        }
    }
}

/// Why `host` is not a valid gateway host (`[namespace/]dnsName`, where namespace is `*`, `.` or a
/// namespace name and dnsName may start with a wildcard), or `None` when it is one.
fn gateway_host_problem(host: &str) -> Option<String> {
    let Some((namespace, name)) = host.split_once('/') else {
        return wildcard_domain_problem(host).map(|p| format!("invalid host {host:?}: {p}"));
    };
    if namespace.is_empty() || name.is_empty() {
        return Some(format!("host {host:?} must have a namespace and a DNS name around the /"));
    }
    if namespace != "*" && namespace != "." && !is_dns1123_label(namespace) {
        return Some(format!("invalid namespace {namespace:?} in host {host:?}"));
    }
    wildcard_domain_problem(name).map(|p| format!("invalid host {host:?}: {p}"))
}

#[cfg(test)]
mod tests;
