//! The TLS and TCP rules of a `VirtualService` and the conditions they match on.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::RouteDestination;
use crate::istio::common::Labels;

/// One TLS rule: the connections it matches by SNI and where they go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions, any of which selects the rule.
    pub r#match: Vec<TlsMatchAttributes>,
    /// Destinations to forward to, split by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
}

/// Conditions on a TLS connection; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI names to match (wildcards allowed); each must fall under one of the service's hosts.
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDR ranges to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_subnets: Option<Vec<String>>,
    /// Destination port to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub port: Option<u32>,
    /// Labels of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Labels>,
    /// Gateways this condition applies to, overriding the service's `gateways`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// Namespace of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// One TCP rule: the connections it matches and where they go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Conditions, any of which selects the rule; all connections when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Vec<L4MatchAttributes>>,
    /// Destinations to forward to, split by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
}

/// Conditions on a TCP connection; every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDR ranges to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_subnets: Option<Vec<String>>,
    /// Destination port to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub port: Option<u32>,
    /// Source IP or CIDR range to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
    /// Labels of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Labels>,
    /// Gateways this condition applies to, overriding the service's `gateways`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Vec<String>>,
    /// Namespace of the calling workload to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}
