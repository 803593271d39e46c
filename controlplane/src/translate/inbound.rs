//! The sidecar's inbound side: one listener per port its workload serves, found through the services
//! that select the workload (Kubernetes Services and ServiceEntries with a `workloadSelector` in the
//! proxy's namespace), each with its mutual-TLS mode, authorization policies, JWT providers and local rate
//! limits.
//!
//! A service port forwards to the workload's port: a WorkloadEntry's override for the port's name, else
//! the target port (a named target port resolved among the workload's named ports). When two services
//! declare the same workload port with different protocols, the first service (by kind, namespace and
//! name) wins and the other is reported. A catch-all listener (port 0) carries the workload's mode and
//! policies for ports no service declares.

use std::collections::BTreeMap;

use trellis_api::FieldPath;
use trellis_api::proxy_config::{INBOUND_CATCH_ALL_PORT, InboundListener, InboundMtls, Protocol};

use super::clusters::workload_port;
use super::{Context, ratelimit, scope, security};
use crate::index::{Key, TargetPort};

/// Builds the inbound listeners of the proxy's workload.
pub fn build(cx: &mut Context<'_>) -> Vec<InboundListener> {
    let proxy_ns = cx.proxy.namespace.clone();
    let mut ports: BTreeMap<u16, (Protocol, Key)> = BTreeMap::new();
    let selecting: Vec<_> = cx
        .index
        .services()
        .filter(|s| s.namespace() == proxy_ns)
        .filter(|s| s.selector.as_ref().is_some_and(|sel| scope::selects(sel, &cx.proxy.labels)))
        .collect();
    for service in selecting {
        for (p, port) in service.ports.iter().enumerate() {
            let target = match cx.own {
                Some(own) => workload_port(own, port),
                None => match &port.target_port {
                    TargetPort::Same => Some(port.port),
                    TargetPort::Number(n) => Some(*n),
                    TargetPort::Name(_) => None,
                },
            };
            let Some(target) = target else {
                let reason = format!(
                    "the proxy's workload has no port named {:?}; port {} gets no inbound listener",
                    match &port.target_port {
                        TargetPort::Name(name) => name.as_str(),
                        _ => port.name.as_str(),
                    },
                    port.port
                );
                cx.skip(&service.origin, FieldPath::of("spec").key("ports").index(p), reason);
                continue;
            };
            match ports.get(&target) {
                None => {
                    ports.insert(target, (port.protocol, service.origin.clone()));
                }
                Some((protocol, first)) if *protocol != port.protocol && first != &service.origin => {
                    let reason = format!(
                        "workload port {target} is already declared as {protocol:?} by {first}; this port's \
                         protocol {:?} is ignored for inbound traffic",
                        port.protocol
                    );
                    cx.skip(&service.origin, FieldPath::of("spec").key("ports").index(p), reason);
                }
                Some(_) => {}
            }
        }
    }
    let authorization = security::authorization(cx);
    let jwt = security::jwt(cx);
    let rate_limits = ratelimit::rate_limits(cx);
    // Ports no service declares still get the workload's mutual-TLS mode and policies, as Istio's
    // inbound passthrough chain does; left out when it says only what a proxy assumes anyway.
    let catch_all = InboundListener {
        port: INBOUND_CATCH_ALL_PORT,
        protocol: Protocol::Detect,
        mtls: security::mtls(cx, INBOUND_CATCH_ALL_PORT),
        authorization: authorization.clone(),
        jwt: jwt.clone(),
        rate_limits: ratelimit::for_port(&rate_limits, INBOUND_CATCH_ALL_PORT),
    };
    let needs_catch_all = catch_all.mtls != InboundMtls::Permissive
        || !catch_all.authorization.is_empty()
        || !catch_all.jwt.is_empty()
        || !catch_all.rate_limits.is_empty();
    let mut listeners: Vec<InboundListener> = ports
        .into_iter()
        .map(|(port, (protocol, _))| InboundListener {
            port,
            protocol,
            mtls: security::mtls(cx, port),
            authorization: authorization.clone(),
            jwt: jwt.clone(),
            rate_limits: ratelimit::for_port(&rate_limits, port),
        })
        .collect();
    if needs_catch_all {
        listeners.insert(0, catch_all);
    }
    listeners
}
