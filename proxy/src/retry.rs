//! Request-level resilience of a route: retries (`retries` of a VirtualService route, capped per
//! cluster by `maxRetries` and the DestinationRule's retry budget) and timeouts (the route's
//! `timeout`, `perTryTimeout`, and a gRPC client's `grpc-timeout`).
//!
//! Everything is compiled once per config: [`RouteResilience`] per route, [`RetryLimits`] per
//! cluster. Per request, [`forward`] runs the attempts against an [`Upstream`] (the HTTP path's
//! endpoint picking and sending): a request without retries or deadline goes straight through; with
//! retries its head is kept for the next attempt and its body is teed into a bounded replay buffer
//! ([`body`]), so a request without a body pays only for that head and one whose body is too large
//! streams through unretried.
//!
//! Timeouts apply to the response head, as Envoy's route timeout does for a streamed response: once
//! the head is back the body streams for as long as it takes. The route timeout covers every attempt
//! and the back-off between them; when it passes the client gets 504 `upstream request timeout` (a
//! gRPC client gets `grpc-status: 4` in a trailers-only response).

pub mod backoff;
pub mod body;
pub mod budget;
pub mod condition;
pub mod deadline;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::time::Instant;
use trellis_api::proxy_config::{RetryPolicy, Route};

pub use backoff::Backoff;
pub use body::{MAX_REPLAY_BYTES, Replay};
pub use budget::RetryLimits;
pub use condition::Conditions;

use crate::access_log;
use crate::balance::{Balancer, Pick};
use crate::http::{Body, UpstreamFailure};
use crate::metrics::{ClusterMetrics, ResponseFlag};

/// A route's retry policy, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// Retries after the first attempt.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub conditions: Conditions,
    pub backoff: Backoff,
    /// Whether a retry avoids the endpoints already tried (Istio's default).
    pub avoid_previous_hosts: bool,
}

/// A route's timeouts and retries, compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteResilience {
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
}

impl RouteResilience {
    /// Compiles a route's `timeout` and `retries`; an unknown `retryOn` condition is an error naming it.
    pub fn compile(route: &Route) -> Result<Self, String> {
        let retries = route.retries.as_ref().filter(|r| r.attempts > 0).map(Retries::compile).transpose()?;
        Ok(Self { timeout: route.timeout.filter(|t| !t.is_zero()), retries })
    }
}

impl Retries {
    fn compile(policy: &RetryPolicy) -> Result<Self, String> {
        Ok(Self {
            attempts: policy.attempts,
            per_try_timeout: policy.per_try_timeout.filter(|t| !t.is_zero()),
            conditions: Conditions::parse(&policy.retry_on)?,
            backoff: Backoff::new(policy.backoff.filter(|b| !b.is_zero())),
            avoid_previous_hosts: !policy.allow_previous_hosts,
        })
    }
}

/// The endpoints a request's attempts went to, so a retry can pick another (Istio's previous-hosts
/// predicate). The first endpoint is kept inline: a request that is not retried allocates nothing.
#[derive(Debug, Default)]
pub struct Tried {
    first: Option<SocketAddr>,
    all: Vec<SocketAddr>,
    avoid: bool,
}

impl Tried {
    /// Attempts that pick freely.
    pub fn none() -> Self {
        Self::default()
    }

    /// Attempts that avoid the endpoints already tried when `avoid` holds.
    pub fn avoiding(avoid: bool) -> Self {
        Self { avoid, ..Self::default() }
    }

    /// Picks an endpoint for the next attempt, one not tried yet when possible, and records it.
    pub fn pick(&mut self, balancer: &Balancer, hash: Option<u64>) -> Option<Pick> {
        let pick = match self.first {
            Some(first) if self.avoid => {
                if self.all.is_empty() {
                    self.all.push(first);
                }
                balancer.pick_excluding(hash, &self.all).or_else(|| balancer.pick(hash))
            }
            _ => balancer.pick(hash),
        }?;
        if self.first.is_none() {
            self.first = Some(pick.addr);
        } else if self.avoid && !self.all.contains(&pick.addr) {
            self.all.push(pick.addr);
        }
        Some(pick)
    }

    /// The endpoints tried, in order (each once).
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.first.into_iter().chain(self.all.iter().copied().skip(1))
    }
}

/// Where attempts go: the HTTP path's endpoint picking and sending for one cluster.
pub trait Upstream {
    /// Sends one attempt to an endpoint picked through `tried`. A failed exchange comes back as the
    /// proxy's own error response carrying an [`UpstreamFailure`].
    fn attempt<'a>(
        &'a self,
        req: Request<Body>,
        tried: &'a mut Tried,
    ) -> impl Future<Output = Response<Body>> + Send + 'a;
}

/// The request head, kept to build the next attempt.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// What the request path needs from the cluster for the attempts.
#[derive(Debug, Clone, Copy)]
pub struct ClusterParts<'a> {
    pub limits: &'a RetryLimits,
    pub metrics: &'a ClusterMetrics,
}

/// The route's deadline passed (its `timeout`, or the client's `grpc-timeout`): no attempt is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RouteTimedOut;

/// Sends `req` under the route's timeouts and retries and returns the response to give the client.
///
/// Each attempt waits on one timer, at the earlier of the route's deadline and its own per-try
/// deadline (and a back-off pause sleeps at most until the route's deadline): a request never holds
/// two timers, so timeouts configured but not firing cost one timer entry per attempt.
pub async fn forward<U>(
    route: &RouteResilience,
    cluster: ClusterParts<'_>,
    upstream: &U,
    req: Request<Body>,
) -> Response<Body>
where
    U: Upstream + Sync,
{
    let _active = cluster.limits.request();
    let client_deadline = deadline::grpc_timeout(req.headers());
    let budget = match (route.timeout, client_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if budget.is_none() && route.retries.is_none() {
        // Nothing to time or retry: the one attempt, without the layers below.
        return upstream.attempt(req, &mut Tried::none()).await;
    }
    // The clock is read only when there is a deadline to set.
    let route_deadline = budget.map(|budget| Instant::now() + budget);
    let grpc = route_deadline.is_some() && deadline::is_grpc(req.headers());
    // The client's deadline travels upstream only when the client gave one.
    let propagate = client_deadline.and(route_deadline);
    match attempts(route, cluster, upstream, req, route_deadline, propagate).await {
        Ok(response) => response,
        Err(RouteTimedOut) => {
            // The request began one budget before its deadline: no clock read at its start.
            let took = route_deadline.map_or(Duration::ZERO, |d| d.elapsed()) + budget.unwrap_or_default();
            cluster.metrics.request(http::StatusCode::GATEWAY_TIMEOUT.as_u16(), took.as_secs_f64());
            deadline::timed_out(grpc)
        }
    }
}

/// The attempts of one request before `route_deadline`; `propagate` is the deadline to announce
/// upstream in `grpc-timeout`.
async fn attempts<U>(
    route: &RouteResilience,
    cluster: ClusterParts<'_>,
    upstream: &U,
    req: Request<Body>,
    route_deadline: Option<Instant>,
    propagate: Option<Instant>,
) -> Result<Response<Body>, RouteTimedOut>
where
    U: Upstream + Sync,
{
    let upgrade = req.method() == Method::CONNECT || req.headers().contains_key(http::header::UPGRADE);
    let retries = route.retries.as_ref().filter(|_| !upgrade);
    let Some(retries) = retries else {
        return attempt(None, cluster, upstream, req, &mut Tried::none(), route_deadline, propagate).await;
    };
    // Only a per-try timeout makes an attempt's answer a timeout (the route's ends the attempts
    // elsewhere): without one, no request header is looked up for gRPC.
    let grpc = retries.per_try_timeout.is_some() && deadline::is_grpc(req.headers());
    let (mut parts, body) = req.into_parts();
    // Every attempt carries the same request id.
    crate::http::ensure_request_id(&mut parts.headers);
    let (replay, first) = if body.is_end_stream() {
        (None, body)
    } else {
        match Replay::new(body) {
            Ok((replay, first)) => (Some(replay), BodyExt::boxed(first)),
            Err(body) => (None, body),
        }
    };
    let empty = replay.is_none() && first.is_end_stream();
    let head = Head {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
    };
    let mut req = Request::from_parts(parts, first);
    let mut tried = Tried::avoiding(retries.avoid_previous_hosts);
    let mut permit = None;
    let mut retry = 0;
    loop {
        let per_try = retries.per_try_timeout;
        let response = if per_try.is_none() && route_deadline.is_none() {
            // Istio's default policy (retries, no timeout): the attempt itself, no timer layer.
            upstream.attempt(req, &mut tried).await
        } else {
            attempt(per_try, cluster, upstream, req, &mut tried, route_deadline, propagate).await?
        };
        drop(permit.take());
        let retriable = retries.conditions.retriable(&response);
        if !retriable {
            return Ok(finish(response, grpc));
        }
        if retry >= retries.attempts {
            // Envoy's URX: the last attempt failed in a retriable way and no retry was left.
            let mut response = finish(response, grpc);
            access_log::add_flag(&mut response, ResponseFlag::URX);
            return Ok(response);
        }
        let body = match &replay {
            Some(replay) => match replay.next() {
                Some(body) => BodyExt::boxed(body),
                None => return Ok(finish(response, grpc)),
            },
            None if empty => crate::http::full(bytes::Bytes::new()),
            None => return Ok(finish(response, grpc)),
        };
        let Some(granted) = cluster.limits.try_retry() else {
            cluster.metrics.retry_overflow.inc();
            // Envoy flags a retry the budget or `maxRetries` refused as an overflow (UO).
            let mut response = finish(response, grpc);
            access_log::add_flag(&mut response, ResponseFlag::UO);
            return Ok(response);
        };
        permit = Some(granted);
        drop(response);
        retry += 1;
        let pause = retries.backoff.delay(retry, fastrand::f64());
        match route_deadline {
            Some(route_deadline) if Instant::now() + pause >= route_deadline => {
                tokio::time::sleep_until(route_deadline).await;
                return Err(RouteTimedOut);
            }
            _ => tokio::time::sleep(pause).await,
        }
        cluster.metrics.retries.inc();
        req = head.request(body);
    }
}

/// One attempt, waiting at most until the earlier of the route's deadline and its per-try deadline,
/// on one timer. A per-try timeout is an answer (504, retryable); the route's is the end.
async fn attempt<U: Upstream>(
    per_try: Option<Duration>,
    cluster: ClusterParts<'_>,
    upstream: &U,
    mut req: Request<Body>,
    tried: &mut Tried,
    route_deadline: Option<Instant>,
    propagate: Option<Instant>,
) -> Result<Response<Body>, RouteTimedOut> {
    let try_deadline = per_try.map(|per_try| Instant::now() + per_try);
    announce(req.headers_mut(), propagate, try_deadline);
    let limit = match (try_deadline, route_deadline) {
        (Some(a), Some(b)) => a.min(b),
        (Some(limit), None) | (None, Some(limit)) => limit,
        (None, None) => return Ok(upstream.attempt(req, tried).await),
    };
    match tokio::time::timeout_at(limit, upstream.attempt(req, tried)).await {
        Ok(response) => Ok(response),
        Err(_) if route_deadline.is_some_and(|route_deadline| limit >= route_deadline) => Err(RouteTimedOut),
        Err(_) => {
            // The per-try deadline (`limit`) passed first; the attempt began one per-try timeout
            // before it.
            let took = limit.elapsed() + per_try.unwrap_or_default();
            cluster.metrics.request(http::StatusCode::GATEWAY_TIMEOUT.as_u16(), took.as_secs_f64());
            Ok(deadline::attempt_timed_out())
        }
    }
}

/// Sets `grpc-timeout` to the time left before the earlier of the deadlines, when one is propagated.
fn announce(headers: &mut HeaderMap, propagate: Option<Instant>, attempt: Option<Instant>) {
    let Some(deadline) = propagate else { return };
    let deadline = attempt.map_or(deadline, |a| a.min(deadline));
    let left = deadline.saturating_duration_since(Instant::now());
    headers.insert(deadline::GRPC_TIMEOUT, deadline::format_grpc_timeout(left));
}

/// The response the client gets: a gRPC client whose last attempt timed out hears `DEADLINE_EXCEEDED`.
fn finish(response: Response<Body>, grpc: bool) -> Response<Body> {
    if grpc && UpstreamFailure::on(&response) == Some(UpstreamFailure::Timeout) {
        return deadline::timed_out(true);
    }
    response
}

#[cfg(test)]
mod tests;
