//! The security policy of the proxy's workload: PeerAuthentication (mutual-TLS mode), AuthorizationPolicy
//! and RequestAuthentication, with Istio's scopes.
//!
//! - PeerAuthentication: the mesh default (the Mesh's `mtls.mode`), overridden by a selector-less policy
//!   in the root namespace, then by one in the workload's namespace, then by one whose selector matches
//!   the workload, then by that policy's `portLevelMtls` entry for the port; `UNSET` inherits. Among
//!   several policies of one scope the oldest wins (Istio's PeerAuthentication reference).
//! - AuthorizationPolicy and RequestAuthentication apply from the root namespace (to every workload, or
//!   those its selector matches) and from the workload's namespace (all workloads, or those selected).
//!   Policies are listed DENY, then ALLOW, then AUDIT, each by namespace and name. CUSTOM policies and
//!   policies attached with `targetRef(s)` cannot apply to sidecars yet and are reported.

use trellis_api::FieldPath;
use trellis_api::istio::authorization_policy::Action;
use trellis_api::istio::common::WorkloadSelector;
use trellis_api::istio::peer_authentication::MtlsMode;
use trellis_api::istio::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};
use trellis_api::mesh::MeshMtlsMode;
use trellis_api::object::Object;
use trellis_api::proxy_config::{
    AuthorizationAction, AuthorizationRule, InboundMtls, JwtClaimToHeader, JwtHeader, JwtProvider,
};

use super::{Context, scope};
use crate::index::{Age, Key, Kind};

/// Header a JWT is read from when a rule names no location (Istio's default).
pub const DEFAULT_JWT_HEADER: &str = "authorization";
/// Prefix stripped from [`DEFAULT_JWT_HEADER`].
pub const DEFAULT_JWT_PREFIX: &str = "Bearer ";
/// Query parameter a JWT is read from when a rule names no location (Istio's default).
pub const DEFAULT_JWT_PARAM: &str = "access_token";

pub(super) fn has_labels(selector: Option<&WorkloadSelector>) -> bool {
    selector.and_then(|s| s.match_labels.as_ref()).is_some_and(|l| !l.is_empty())
}

/// The mutual-TLS mode of the proxy's own workload port `port`.
pub fn mtls(cx: &Context<'_>, port: u16) -> InboundMtls {
    workload_mtls(cx, &cx.proxy.namespace, &cx.proxy.labels, port)
}

/// Whether any PeerAuthentication turns mutual TLS off somewhere (mode or port-level `DISABLE`): when
/// none does, no destination needs [`workload_mtls`] to be worked out.
pub fn any_disabled(cx: &Context<'_>) -> bool {
    let disables = |m: Option<&trellis_api::istio::peer_authentication::PeerAuthenticationMutualTls>| {
        m.and_then(|m| m.mode) == Some(MtlsMode::Disable)
    };
    cx.index.configs(Kind::PeerAuthentication).any(|(_, _, object)| match object {
        Object::PeerAuthentication(pa) => {
            disables(pa.spec.mtls.as_ref())
                || pa.spec.port_level_mtls.as_ref().is_some_and(|ports| ports.values().any(|m| disables(Some(m))))
        }
        _ => false,
    })
}

/// The mutual-TLS mode of port `port` of a workload in `namespace` with `labels` (the proxy's own, or a
/// destination's: auto mTLS sends plain text to a port whose mode is `DISABLE`, as Istio does).
pub fn workload_mtls(cx: &Context<'_>, namespace: &str, labels: &crate::index::Labels, port: u16) -> InboundMtls {
    let mut policies: Vec<(Age, &Key, &PeerAuthenticationSpec)> = cx
        .index
        .configs(Kind::PeerAuthentication)
        .filter_map(|(key, age, object)| match object {
            Object::PeerAuthentication(pa) => Some((age, key, &pa.spec)),
            _ => None,
        })
        .collect();
    policies.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let oldest = |wanted: &dyn Fn(&Key, &PeerAuthenticationSpec) -> bool| {
        policies.iter().find(|(_, key, spec)| wanted(key, spec)).map(|(_, _, spec)| *spec)
    };
    let mesh_wide = oldest(&|key, spec| cx.is_root(&key.namespace) && !has_labels(spec.selector.as_ref()));
    let namespace_wide = oldest(&|key, spec| &*key.namespace == namespace && !has_labels(spec.selector.as_ref()));
    let workload = oldest(&|key, spec| {
        &*key.namespace == namespace
            && has_labels(spec.selector.as_ref())
            && spec.selector.as_ref().and_then(|s| s.match_labels.as_ref()).is_some_and(|l| scope::selects(l, labels))
    });
    let mut mode = match cx.mesh.map(|m| m.mtls.mode).unwrap_or_default() {
        MeshMtlsMode::Permissive => InboundMtls::Permissive,
        MeshMtlsMode::Strict => InboundMtls::Strict,
    };
    let mut apply = |set: Option<MtlsMode>| match set {
        Some(MtlsMode::Disable) => mode = InboundMtls::Disable,
        Some(MtlsMode::Permissive) => mode = InboundMtls::Permissive,
        Some(MtlsMode::Strict) => mode = InboundMtls::Strict,
        Some(MtlsMode::Unset) | None => {}
    };
    for spec in [mesh_wide, namespace_wide, workload].into_iter().flatten() {
        apply(spec.mtls.as_ref().and_then(|m| m.mode));
    }
    if let Some(spec) = workload {
        apply(spec.port_level_mtls.as_ref().and_then(|p| p.get(&port.to_string())).and_then(|m| m.mode));
    }
    mode
}

/// Whether a policy of `key`'s namespace with `selector` applies to the proxy's workload.
pub(super) fn applies(cx: &Context<'_>, key: &Key, selector: Option<&WorkloadSelector>) -> bool {
    if *key.namespace != *cx.proxy.namespace && !cx.is_root(&key.namespace) {
        return false;
    }
    selector.and_then(|s| s.match_labels.as_ref()).is_none_or(|labels| scope::selects(labels, &cx.proxy.labels))
}

/// Reports a policy attached with `targetRef(s)`, which sidecars cannot apply yet; true when it is one.
fn targeted(cx: &mut Context<'_>, key: &Key, target_ref: bool, target_refs: bool) -> bool {
    let field = if target_refs { "targetRefs" } else { "targetRef" };
    if target_ref || target_refs {
        let reason = "policies attached with targetRef(s) apply to gateways and waypoints, which Trellis does not \
                      support yet; it is ignored";
        cx.skip(key, FieldPath::of("spec").key(field), reason);
        return true;
    }
    false
}

/// The authorization policies that apply to the workload, in evaluation order.
pub fn authorization(cx: &mut Context<'_>) -> Vec<AuthorizationRule> {
    let candidates: Vec<(&Key, &AuthorizationPolicySpec)> = cx
        .index
        .configs(Kind::AuthorizationPolicy)
        .filter_map(|(key, _, object)| match object {
            Object::AuthorizationPolicy(ap) => Some((key, &ap.spec)),
            _ => None,
        })
        .filter(|(key, spec)| applies(cx, key, spec.selector.as_ref()))
        .collect();
    let mut rules = Vec::new();
    for (key, spec) in candidates {
        if targeted(cx, key, spec.target_ref.is_some(), spec.target_refs.is_some()) {
            continue;
        }
        let (order, action) = match spec.effective_action() {
            Action::Deny => (0, AuthorizationAction::Deny),
            Action::Allow => (1, AuthorizationAction::Allow),
            Action::Audit => (2, AuthorizationAction::Audit),
            Action::Custom => {
                let reason = "CUSTOM (external authorization) cannot be expressed yet; the policy is ignored";
                cx.skip(key, FieldPath::of("spec").key("action"), reason);
                continue;
            }
        };
        let rule = AuthorizationRule {
            policy: format!("{}/{}", key.namespace, key.name),
            action,
            rules: spec.rules.clone().unwrap_or_default(),
        };
        rules.push((order, key.clone(), rule));
    }
    rules.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    rules.into_iter().map(|(_, _, rule)| rule).collect()
}

/// The JWT providers whose tokens are validated for the workload.
pub fn jwt(cx: &mut Context<'_>) -> Vec<JwtProvider> {
    let candidates: Vec<(&Key, &RequestAuthenticationSpec)> = cx
        .index
        .configs(Kind::RequestAuthentication)
        .filter_map(|(key, _, object)| match object {
            Object::RequestAuthentication(ra) => Some((key, &ra.spec)),
            _ => None,
        })
        .filter(|(key, spec)| applies(cx, key, spec.selector.as_ref()))
        .collect();
    let mut providers = Vec::new();
    for (key, spec) in candidates {
        if targeted(cx, key, spec.target_ref.is_some(), spec.target_refs.is_some()) {
            continue;
        }
        for (i, rule) in spec.jwt_rules.iter().flatten().enumerate() {
            let at = FieldPath::of("spec").key("jwtRules").index(i);
            let Some(issuer) = rule.issuer.clone() else {
                cx.skip(key, at.key("issuer"), "a JWT rule without issuer cannot be checked; it is ignored");
                continue;
            };
            // `timeout` bounds trellisd's JWKS fetch (`jwks::wanted_uris`), not the proxy.
            if rule.presence.is_some() {
                cx.skip(key, at.key("presence"), "presence cannot be expressed yet; it is not applied");
            }
            let mut from_headers: Vec<JwtHeader> = rule
                .from_headers
                .iter()
                .flatten()
                .map(|h| JwtHeader { name: h.name.to_ascii_lowercase(), prefix: h.prefix.clone().unwrap_or_default() })
                .collect();
            let mut from_params = rule.from_params.clone().unwrap_or_default();
            let from_cookies = rule.from_cookies.clone().unwrap_or_default();
            if from_headers.is_empty() && from_params.is_empty() && from_cookies.is_empty() {
                from_headers
                    .push(JwtHeader { name: DEFAULT_JWT_HEADER.to_owned(), prefix: DEFAULT_JWT_PREFIX.to_owned() });
                from_params.push(DEFAULT_JWT_PARAM.to_owned());
            }
            let output_claim_to_headers = rule
                .output_claim_to_headers
                .iter()
                .flatten()
                .map(|o| JwtClaimToHeader { header: o.header.to_ascii_lowercase(), claim: o.claim.clone() })
                .collect();
            providers.push(JwtProvider {
                issuer,
                audiences: rule.audiences.clone().unwrap_or_default(),
                jwks: rule.jwks.clone(),
                // With neither `jwks` nor `jwksUri`: the issuer's OpenID configuration (trellisd follows it).
                jwks_uri: crate::jwks::key_source(rule),
                from_headers,
                from_params,
                from_cookies,
                forward_original_token: rule.forward_original_token.unwrap_or(false),
                output_payload_to_header: rule
                    .output_payload_to_header
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase),
                output_claim_to_headers,
                space_delimited_claims: rule.space_delimited_claims.clone().unwrap_or_default(),
            });
        }
    }
    providers
}
