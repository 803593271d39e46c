//! The inbound path: a request for the workload behind this sidecar passes its local rate limit,
//! RequestAuthentication (a failing token is a 401 with a Bearer challenge) and AuthorizationPolicy
//! (403 `RBAC: access denied`), in that order, as Envoy's filter chain does; then it is handed to the
//! application with the caller's identity in `x-forwarded-client-cert`.

use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Version};

use super::failure::UpstreamFailure;
use super::forward::{Context, Upstream, send};
use super::headers::{ORIG_PROTO, remove_if_present};
use super::{Body, Shared, full, local_response};
use crate::access_log;
use crate::authz::{DENIED_BODY, DENIED_STATUS, HttpFacts, JwtFacts};
use crate::jwt::UNAUTHORIZED;
use crate::ratelimit::Verdict;
use crate::state::Compiled;
use crate::tls::XFCC;

/// Forwards to the application behind an inbound listener.
pub(super) async fn inbound(
    shared: &Shared,
    compiled: &Compiled,
    mut req: Request<Body>,
    cx: Context,
) -> Response<Body> {
    let port = cx.destination.port();
    // Local rate limits first: refusing costs less than checking a token or policy, and protects the app.
    let quota = match compiled.inbound_rate_limits(port).map(|limits| limits.check_http(&req, &cx)) {
        Some(Verdict::Limited(limited)) => {
            let response = limited.response();
            compiled.inbound_metrics.request(response.status().as_u16(), 0.0);
            return response;
        }
        Some(Verdict::Allowed(quota)) => quota,
        Some(Verdict::Unmatched) | None => None,
    };
    // RequestAuthentication: a token that fails is a 401; no token passes on to authorization.
    let mut verified = None;
    if let Some(authenticator) = compiled.inbound_jwt(port) {
        let (mut parts, body) = req.into_parts();
        verified = match authenticator.authenticate(&parts) {
            Ok(verified) => verified,
            Err(err) => {
                tracing::debug!(peer = %cx.peer, error = %err, "JWT refused");
                compiled.inbound_metrics.request(UNAUTHORIZED.as_u16(), 0.0);
                let mut response = unauthenticated(err.body(), crate::jwt::www_authenticate(&parts));
                access_log::detail(&mut response, access_log::details::JWT_DENIED);
                return response;
            }
        };
        authenticator.apply(&mut parts, verified.as_ref());
        req = Request::from_parts(parts, body);
    }
    if let Some(policies) = compiled.inbound_authz(port) {
        let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host()).unwrap_or("");
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let jwt = verified
            .as_ref()
            .map(|v| JwtFacts { principal: v.principal.as_deref().unwrap_or_default(), claims: &v.claims });
        let http = HttpFacts { host, method: req.method().as_str(), path, headers: req.headers(), jwt };
        let decision = policies.evaluate(&crate::listener::authz_facts(&cx, Some(http)));
        if !decision.allowed {
            tracing::debug!(peer = %cx.peer, %decision, "request denied");
            shared.metrics.authz_denied("http");
            compiled.inbound_metrics.request(DENIED_STATUS.as_u16(), 0.0);
            let mut response = denied();
            access_log::detail(&mut response, access_log::details::RBAC_DENIED);
            return response;
        }
    }
    let target = shared.settings.inbound_target.unwrap_or(cx.destination);
    if shared.settings.is_own_listener(target) {
        return local_response(StatusCode::BAD_GATEWAY, "destination is this proxy's own listener");
    }
    let carried_h1 = remove_if_present(req.headers_mut(), &ORIG_PROTO);
    // Who called is ours to say (Istio's SANITIZE_SET): set for mesh TLS clients, removed otherwise.
    remove_if_present(req.headers_mut(), &XFCC);
    if let Some(value) = cx.peer_identity.as_ref().and_then(|peer| peer.xfcc(&compiled.config.node.identity)) {
        req.headers_mut().insert(XFCC, value);
    }
    let declared_h2 = matches!(
        compiled.inbound.get(&cx.destination.port()),
        Some(trellis_api::proxy_config::Protocol::Http2 | trellis_api::proxy_config::Protocol::Grpc)
    );
    let h2 = !carried_h1 && (req.version() == Version::HTTP_2 || declared_h2);
    // In local mode the target is a loopback address given by flag; with interception it is the
    // original destination, reached from the passthrough source so the rules do not capture it again.
    let upstream = if shared.settings.inbound_target.is_some() {
        Upstream::Mesh { h2, meshed: false }
    } else {
        Upstream::App { h2 }
    };
    let started = std::time::Instant::now();
    let (mut response, _) = send(shared, req, started, target, upstream, None, &compiled.inbound_metrics, None).await;
    if let Some(quota) = quota {
        quota.write_headers(response.headers_mut());
    }
    if shared.store.access_log.is_on() || UpstreamFailure::on(&response).is_some() {
        access_log::upstream(&mut response, Some(target), &access_log::inbound_cluster(port));
    }
    response
}

/// Envoy's answer to a request whose JWT fails: 401 with the reason's text and a Bearer challenge.
fn unauthenticated(body: &'static str, challenge: HeaderValue) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = UNAUTHORIZED;
    response.headers_mut().insert(http::header::WWW_AUTHENTICATE, challenge);
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Envoy's answer to a request authorization denies: 403 `RBAC: access denied`.
fn denied() -> Response<Body> {
    let mut response = Response::new(full(DENIED_BODY));
    *response.status_mut() = DENIED_STATUS;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
