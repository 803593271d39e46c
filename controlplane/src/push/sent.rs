//! What the push server keeps of the large sections proxies share: their encodings.
//!
//! A view's clusters and outbound section are kept as the JSON messages carry ([`SentCluster`],
//! [`SentOutbound`]), not as values: the encoding is what goes out (encoded once, when the section
//! is interned, and then only referred to), equal encodings are equal sections, and a value is several
//! times its JSON. Each endpoint's label map is a B-tree node with room for eleven labels, so a cluster
//! of ten endpoints is ~7 KB against 1.6 KB of JSON (7 MB for the thousand clusters of the control-plane
//! bench); an outbound section of 190 virtual hosts is ~230 KB against 80 KB.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_api::proxy_config::{Cluster, Outbound};
use trellis_api::push::ClusterEntry;

/// `value` as compact JSON after `prefix`, in an allocation of its own size. Sections are plain data
/// (string-keyed maps, no fallible serializer), so they always encode.
fn encode(prefix: &[u8], value: &impl Serialize) -> Bytes {
    let mut json = prefix.to_vec();
    serde_json::to_writer(&mut json, value).expect("a section encodes as JSON");
    json.shrink_to_fit();
    Bytes::from(json)
}

/// A value decoded from the encoding this module made of it.
fn decode<T: DeserializeOwned>(json: &[u8]) -> T {
    serde_json::from_slice(json).expect("a section decodes from its own encoding")
}

/// A cluster as the push server keeps it: its name and its JSON.
#[derive(Debug, PartialEq, Eq)]
pub struct SentCluster {
    name: String,
    /// The encoding with a leading comma, so a list is its clusters one after the other (the first
    /// without its comma).
    json: Bytes,
}

/// Clusters the push diffs as they were sent: equal encodings are equal clusters.
impl ClusterEntry for SentCluster {
    fn cluster_name(&self) -> &str {
        &self.name
    }
    fn same_cluster(&self, other: &Self) -> bool {
        self == other
    }
}

impl SentCluster {
    /// `cluster` encoded.
    pub fn new(cluster: &Cluster) -> Self {
        Self { name: cluster.name.clone(), json: encode(b",", cluster) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON with a leading comma (shared, not copied).
    pub fn json_after_comma(&self) -> Bytes {
        self.json.clone()
    }

    /// The JSON (shared, not copied).
    pub fn json(&self) -> Bytes {
        self.json.slice(1..)
    }

    /// The cluster again, decoded from its JSON (for `GET /v1/config` and tests).
    pub fn to_cluster(&self) -> Cluster {
        decode(&self.json[1..])
    }
}

/// An outbound section as the push server keeps it: its JSON.
#[derive(Debug, PartialEq, Eq)]
pub struct SentOutbound {
    json: Bytes,
}

impl SentOutbound {
    /// `outbound` encoded.
    pub fn new(outbound: &Outbound) -> Self {
        Self { json: encode(b"", outbound) }
    }

    /// The JSON (shared, not copied).
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// The section again, decoded from its JSON.
    pub fn to_outbound(&self) -> Outbound {
        decode(&self.json)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use trellis_api::proxy_config::{Endpoint, LoadBalancer, Protocol, UpstreamTls, VirtualHost};

    use super::*;

    fn cluster(endpoints: usize) -> Cluster {
        Cluster {
            name: "outbound|80||web.shop.svc.cluster.local".to_owned(),
            service: "web.shop.svc.cluster.local".to_owned(),
            port: 80,
            subset: String::new(),
            protocol: Protocol::Http,
            endpoints: (0..endpoints)
                .map(|e| Endpoint {
                    address: SocketAddr::from(([10, 0, 0, e as u8 + 1], 8080)),
                    labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                    identity: "spiffe://cluster.local/ns/shop/sa/web".to_owned(),
                    weight: 1,
                    meshed: true,
                })
                .collect(),
            load_balancer: LoadBalancer::default(),
            connection_pool: None,
            outlier_detection: None,
            tls: UpstreamTls::Auto,
            retry_budget: None,
        }
    }

    #[test]
    fn a_cluster_is_kept_as_its_encoding_and_decodes_to_itself() {
        let web = cluster(10);
        let sent = SentCluster::new(&web);
        assert_eq!(sent.name(), web.name);
        assert_eq!(sent.json(), serde_json::to_vec(&web).expect("encodes"));
        assert_eq!(&sent.json_after_comma()[1..], &sent.json()[..], "the same bytes after a comma");
        assert_eq!(sent.to_cluster(), web);
        assert_ne!(SentCluster::new(&cluster(9)), sent, "another value is another encoding");
    }

    #[test]
    fn an_outbound_section_is_kept_as_its_encoding_and_decodes_to_itself() {
        let host = |name: &str| VirtualHost {
            name: name.to_owned(),
            port: 80,
            protocol: Protocol::Http,
            domains: vec![name.to_owned()],
            addresses: Vec::new(),
            routes: Vec::new(),
            tcp: Vec::new(),
        };
        let outbound = Outbound { virtual_hosts: vec![host("a"), host("b")], ..Outbound::default() };
        let sent = SentOutbound::new(&outbound);
        assert_eq!(sent.json(), serde_json::to_vec(&outbound).expect("encodes"));
        assert_eq!(sent.to_outbound(), outbound);
        assert_ne!(SentOutbound::new(&Outbound::default()), sent);
    }
}
