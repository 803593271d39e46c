//! `RequestAuthentication` (security.istio.io): which JSON Web Tokens a workload accepts, and where it finds them.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::authorization_policy::non_empty_entries;
use super::common::{
    DURATION_MESSAGE, DURATION_RULE, PolicyTargetReference, TARGETING_MESSAGE, TARGETING_RULE, WorkloadSelector,
    validate_targeting,
};
use crate::{FieldPath, Issues, Validate, status::Status};

/// Most JWT rules one policy may hold.
const MAX_JWT_RULES: usize = 4096;
/// Most entries of `spaceDelimitedClaims`.
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;
/// Longest JWKS URL.
const MAX_URI_LEN: usize = 2048;

/// Whether a request must carry a token of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtPresence {
    /// A request without a token passes (without an identity); a bad token is still rejected.
    Optional,
    /// A request without a token is rejected.
    Required,
}

/// A header a token is read from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// The header name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// A prefix stripped from the value before the token, such as `Bearer `.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Copies one claim of a verified token into a request header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The header to set.
    #[schemars(length(min = 1), regex(pattern = r"^[-_A-Za-z0-9]+$"))]
    pub header: String,
    /// The claim to copy; nested claims are written `a.b`.
    #[schemars(length(min = 1))]
    pub claim: String,
}

/// How to verify tokens of one issuer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new("(has(self.jwksUri) ? 1 : 0) + (has(self.jwks_uri) ? 1 : 0) + (has(self.jwks) ? 1 : 0) <= 1").message("only one of jwks or jwksUri can be set"))]
pub struct JwtRule {
    /// The expected `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub issuer: Option<String>,
    /// Accepted `aud` values; any audience when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1)))]
    pub audiences: Option<Vec<String>>,
    /// Where to fetch the public keys (http or https); found through OpenID discovery when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::cel::Rule::new("url(self).getScheme() in [\"http\", \"https\"]").message("url must have scheme http:// or https://"))]
    pub jwks_uri: Option<String>,
    /// Same as `jwksUri`, in the snake_case spelling Istio also accepts.
    #[serde(rename = "jwks_uri", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::cel::Rule::new("url(self).getScheme() in [\"http\", \"https\"]").message("url must have scheme http:// or https://"))]
    pub jwks_uri_snake_case: Option<String>,
    /// The public keys inline, as a JSON Web Key Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers to read the token from; `Authorization: Bearer` when no location is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_headers: Option<Vec<JwtHeader>>,
    /// Query parameters to read the token from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1)))]
    pub from_params: Option<Vec<String>>,
    /// Cookies to read the token from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1)))]
    pub from_cookies: Option<Vec<String>>,
    /// Header that receives the verified payload, base64url-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Claims copied into request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_claim_to_headers: Option<Vec<ClaimToHeader>>,
    /// Keep the token in the request forwarded upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims whose string value is a space-separated list (beyond `scope` and `permission`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 64), inner(length(min = 1)))]
    pub space_delimited_claims: Option<Vec<String>>,
    /// Time limit for fetching `jwksUri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::cel::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: Option<String>,
    /// Whether a request must carry a token of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
}

/// JWT verification for the workloads it selects (or the whole namespace, or the mesh in the root namespace).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    namespaced,
    status = "Status",
    shortname = "ra",
    category = "istio-io",
    category = "security-istio-io",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::cel::Rule::new(TARGETING_RULE).message(TARGETING_MESSAGE))]
pub struct RequestAuthenticationSpec {
    /// Workloads this applies to; all of the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The object (such as a Gateway) this applies to; deprecated in favour of `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// The objects (such as Gateways or Services) this applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 16))]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
    /// The token issuers accepted, one rule each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxItems" = 4096))]
    pub jwt_rules: Option<Vec<JwtRule>>,
}

impl Validate for RequestAuthenticationSpec {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        validate_targeting(path, self.selector.as_ref(), self.target_ref.as_ref(), self.target_refs.as_ref(), issues);
        let Some(rules) = &self.jwt_rules else { return };
        let at = path.key("jwtRules");
        if rules.len() > MAX_JWT_RULES {
            issues.error(&at, format!("at most {MAX_JWT_RULES} jwtRules can be set, found {}", rules.len()));
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, rule) in rules.iter().enumerate() {
            let rule_at = at.index(i);
            rule.validate(&rule_at, issues);
            if let Some(issuer) = rule.issuer.as_deref().filter(|s| !s.is_empty()) {
                if let Some(first) = seen.get(issuer) {
                    issues.error(
                        &rule_at.key("issuer"),
                        format!("issuer {issuer:?} is already used by jwtRules[{first}]"),
                    );
                } else {
                    seen.insert(issuer, i);
                }
            }
        }
    }
}

impl Validate for JwtRule {
    fn validate(&self, path: &FieldPath, issues: &mut Issues) {
        let uris = [("jwksUri", &self.jwks_uri), ("jwks_uri", &self.jwks_uri_snake_case)];
        let has_uri = uris.iter().any(|(_, uri)| uri.as_deref().is_some_and(|u| !u.is_empty()));
        match self.issuer.as_deref() {
            Some("") => issues.error(&path.key("issuer"), "issuer must not be empty"),
            None if !has_uri => issues.error(&path.key("issuer"), "issuer must be set (or jwksUri)"),
            _ => {}
        }
        non_empty_entries(&path.key("audiences"), self.audiences.as_ref(), issues);
        let key_sources = [self.jwks_uri.is_some(), self.jwks_uri_snake_case.is_some(), self.jwks.is_some()];
        if key_sources.iter().filter(|set| **set).count() > 1 {
            issues.error(path, "only one of jwks or jwksUri can be set");
        }
        for (field, uri) in uris {
            if let Some(uri) = uri
                && let Err(message) = jwks_uri(uri)
            {
                issues.error(&path.key(field), message);
            }
        }
        if let Some(jwks) = self.jwks.as_deref().filter(|j| !j.is_empty())
            && let Err(message) = key_set(jwks)
        {
            issues.error(&path.key("jwks"), message);
        }
        for (i, header) in self.from_headers.iter().flatten().enumerate() {
            if header.name.is_empty() {
                issues.error(&path.key("fromHeaders").index(i).key("name"), "header name must not be empty");
            }
        }
        non_empty_entries(&path.key("fromParams"), self.from_params.as_ref(), issues);
        non_empty_entries(&path.key("fromCookies"), self.from_cookies.as_ref(), issues);
        for (i, output) in self.output_claim_to_headers.iter().flatten().enumerate() {
            let at = path.key("outputClaimToHeaders").index(i);
            if output.header.is_empty() {
                issues.error(&at.key("header"), "header must not be empty");
            } else if !output.header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                issues.error(
                    &at.key("header"),
                    format!("header {:?} must hold only letters, digits, '-' and '_'", output.header),
                );
            }
            if output.claim.is_empty() {
                issues.error(&at.key("claim"), "claim must not be empty");
            }
        }
        let claims_at = path.key("spaceDelimitedClaims");
        if let Some(claims) = &self.space_delimited_claims
            && claims.len() > MAX_SPACE_DELIMITED_CLAIMS
        {
            issues.error(
                &claims_at,
                format!("at most {MAX_SPACE_DELIMITED_CLAIMS} spaceDelimitedClaims can be set, found {}", claims.len()),
            );
        }
        non_empty_entries(&claims_at, self.space_delimited_claims.as_ref(), issues);
        issues.duration(&path.key("timeout"), self.timeout.as_deref());
    }
}

/// An http(s) URL with a host (and a numeric port, if any), at most 2048 characters.
fn jwks_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("url must not be empty".to_owned());
    }
    if uri.len() > MAX_URI_LEN {
        return Err(format!("url is longer than {MAX_URI_LEN} characters"));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!("url {uri:?} must have scheme http:// or https://"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("url {uri:?} must have scheme http:// or https://"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(format!("url {uri:?} has an unterminated IPv6 address")),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("url {uri:?} must name a host"));
    }
    if let Some(port) = port
        && !port.is_empty()
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
    {
        return Err(format!("url {uri:?} has an invalid port {port:?}"));
    }
    Ok(())
}

/// A JSON Web Key Set: a JSON object with a `keys` array.
fn key_set(jwks: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(jwks).map_err(|err| format!("jwks is not valid JSON: {err}"))?;
    match value.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(()),
        _ => Err("jwks must be a JSON Web Key Set: an object with a keys array".to_owned()),
    }
}

#[cfg(test)]
mod tests;
