use std::collections::BTreeMap;

use http::{HeaderMap, Method};
use trellis_api::proxy_config::{
    HeaderOps, Rewrite as RewriteConfig, Route, RouteAction, RouteMatch, StringMatcher, WeightedCluster,
};

use super::*;

fn target(cluster: &str, weight: u32) -> WeightedCluster {
    WeightedCluster {
        cluster: cluster.into(),
        weight,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

fn route(name: &str, matches: Vec<RouteMatch>, action: RouteAction) -> Route {
    Route {
        name: name.into(),
        matches,
        action,
        timeout: None,
        retries: None,
        fault: None,
        mirrors: Vec::new(),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

fn forward(cluster: &str) -> RouteAction {
    RouteAction::Forward { clusters: vec![target(cluster, 100)], rewrite: None }
}

fn index(name: &str) -> Option<usize> {
    ["a", "b", "c"].iter().position(|c| *c == name)
}

fn compile(routes: &[Route]) -> Vec<CompiledRoute> {
    routes.iter().map(|r| compile_route(r, index).expect("compiles")).collect()
}

struct Req {
    method: Method,
    path: &'static str,
    query: Option<&'static str>,
    authority: &'static str,
    headers: HeaderMap,
    port: u16,
    labels: BTreeMap<String, String>,
}

impl Req {
    fn get(path: &'static str) -> Self {
        Req {
            method: Method::GET,
            path,
            query: None,
            authority: "reviews",
            headers: HeaderMap::new(),
            port: 80,
            labels: BTreeMap::new(),
        }
    }
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            path: self.path,
            query: self.query,
            authority: self.authority,
            scheme: "http",
            headers: &self.headers,
            port: self.port,
            source_labels: &self.labels,
        }
    }
}

fn selected(routes: &[CompiledRoute], req: &Req) -> Option<String> {
    select(routes, &req.parts()).map(|r| r.name.clone())
}

#[test]
fn uri_exact_prefix_and_regex_matches_select_their_routes() {
    let routes = compile(&[
        route(
            "exact",
            vec![RouteMatch { uri: Some(StringMatcher::Exact("/login".into())), ..Default::default() }],
            forward("a"),
        ),
        route(
            "regex",
            vec![RouteMatch { uri: Some(StringMatcher::Regex("/api/v[0-9]+/.*".into())), ..Default::default() }],
            forward("b"),
        ),
        route(
            "prefix",
            vec![RouteMatch { uri: Some(StringMatcher::Prefix("/static".into())), ..Default::default() }],
            forward("c"),
        ),
    ]);
    assert_eq!(selected(&routes, &Req::get("/login")).as_deref(), Some("exact"));
    assert_eq!(selected(&routes, &Req::get("/login/x")), None);
    assert_eq!(selected(&routes, &Req::get("/api/v2/things")).as_deref(), Some("regex"));
    assert_eq!(selected(&routes, &Req::get("/x/api/v2/things")), None, "regexes match the whole path");
    assert_eq!(selected(&routes, &Req::get("/static/app.js")).as_deref(), Some("prefix"));
}

#[test]
fn the_first_matching_route_wins() {
    let routes = compile(&[
        route(
            "specific",
            vec![RouteMatch { uri: Some(StringMatcher::Prefix("/api/v1".into())), ..Default::default() }],
            forward("a"),
        ),
        route(
            "general",
            vec![RouteMatch { uri: Some(StringMatcher::Prefix("/api".into())), ..Default::default() }],
            forward("b"),
        ),
        route("catch-all", vec![], forward("c")),
    ]);
    assert_eq!(selected(&routes, &Req::get("/api/v1/x")).as_deref(), Some("specific"));
    assert_eq!(selected(&routes, &Req::get("/api/v2")).as_deref(), Some("general"));
    assert_eq!(selected(&routes, &Req::get("/")).as_deref(), Some("catch-all"));
}

#[test]
fn header_matches_cover_exact_prefix_regex_presence_and_absence() {
    let m = |name: &str, matcher| RouteMatch {
        headers: BTreeMap::from([(name.to_owned(), matcher)]),
        ..Default::default()
    };
    let routes = compile(&[
        route("exact", vec![m("end-user", StringMatcher::Exact("jason".into()))], forward("a")),
        route("prefix", vec![m("x-tier", StringMatcher::Prefix("gold".into()))], forward("a")),
        route("regex", vec![m("x-id", StringMatcher::Regex("[0-9]{3}".into()))], forward("a")),
        route("present", vec![m("x-debug", StringMatcher::Present)], forward("a")),
        route(
            "without",
            vec![RouteMatch {
                without_headers: BTreeMap::from([("x-canary".to_owned(), StringMatcher::Present)]),
                ..Default::default()
            }],
            forward("b"),
        ),
    ]);
    let with = |name: &'static str, value: &'static str| {
        let mut req = Req::get("/");
        req.headers.insert(name, http::HeaderValue::from_static(value));
        req
    };
    assert_eq!(selected(&routes, &with("end-user", "jason")).as_deref(), Some("exact"));
    assert_eq!(selected(&routes, &with("x-tier", "gold-plus")).as_deref(), Some("prefix"));
    assert_eq!(selected(&routes, &with("x-id", "123")).as_deref(), Some("regex"));
    assert_eq!(selected(&routes, &with("x-id", "1234")).as_deref(), Some("without"));
    assert_eq!(selected(&routes, &with("x-debug", "")).as_deref(), Some("present"));
    assert_eq!(selected(&routes, &with("x-canary", "1")), None);
}

#[test]
fn method_query_port_and_source_label_matches_all_must_hold() {
    let routes = compile(&[route(
        "all",
        vec![RouteMatch {
            method: Some(StringMatcher::Exact("POST".into())),
            query_params: BTreeMap::from([("debug".to_owned(), StringMatcher::Exact("1".into()))]),
            port: Some(8080),
            source_labels: BTreeMap::from([("app".to_owned(), "booking".to_owned())]),
            ..Default::default()
        }],
        forward("a"),
    )]);
    let mut req = Req::get("/");
    req.method = Method::POST;
    req.query = Some("x=2&debug=1");
    req.port = 8080;
    req.labels.insert("app".into(), "booking".into());
    assert_eq!(selected(&routes, &req).as_deref(), Some("all"));
    for change in 0..4 {
        let mut other = Req { headers: HeaderMap::new(), labels: req.labels.clone(), ..Req::get("/") };
        other.method = Method::POST;
        other.query = req.query;
        other.port = req.port;
        match change {
            0 => other.method = Method::GET,
            1 => other.query = Some("debug=0"),
            2 => other.port = 80,
            _ => other.labels.clear(),
        }
        assert_eq!(selected(&routes, &other), None, "change {change} must break the match");
    }
}

#[test]
fn any_one_match_block_is_enough() {
    let routes = compile(&[route(
        "either",
        vec![
            RouteMatch { uri: Some(StringMatcher::Exact("/a".into())), ..Default::default() },
            RouteMatch { uri: Some(StringMatcher::Exact("/b".into())), ..Default::default() },
        ],
        forward("a"),
    )]);
    assert!(selected(&routes, &Req::get("/a")).is_some());
    assert!(selected(&routes, &Req::get("/b")).is_some());
    assert!(selected(&routes, &Req::get("/c")).is_none());
}

#[test]
fn ignore_uri_case_matches_paths_in_any_case() {
    let routes = compile(&[route(
        "ci",
        vec![RouteMatch {
            uri: Some(StringMatcher::Prefix("/API".into())),
            ignore_uri_case: true,
            ..Default::default()
        }],
        forward("a"),
    )]);
    assert!(selected(&routes, &Req::get("/api/x")).is_some());
}

#[test]
fn weighted_picks_follow_relative_weights() {
    let routes = compile(&[route(
        "split",
        vec![],
        RouteAction::Forward { clusters: vec![target("a", 9), target("b", 1)], rewrite: None },
    )]);
    let Action::Forward { targets, total_weight, .. } = &routes[0].action else { panic!("forward") };
    assert_eq!(*total_weight, 10);
    let picks: Vec<usize> =
        (0..10).map(|r| pick_weighted(targets, *total_weight, r).map(|t| t.cluster).unwrap_or(9)).collect();
    assert_eq!(picks, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
}

#[test]
fn a_prefix_rewrite_replaces_only_the_matched_prefix() {
    let rewrite = RewriteConfig { uri: Some("/v2/".into()), uri_regex: None, authority: Some("new-host".into()) };
    let routes = compile(&[route(
        "rw",
        vec![RouteMatch { uri: Some(StringMatcher::Prefix("/v1/".into())), ..Default::default() }],
        RouteAction::Forward { clusters: vec![target("a", 1)], rewrite: Some(rewrite) },
    )]);
    let req = Req::get("/v1/items/7");
    assert_eq!(routes[0].rewritten_path(&req.parts()).as_deref(), Some("/v2/items/7"));
}

#[test]
fn a_regex_rewrite_substitutes_capture_groups() {
    let rewrite = RewriteConfig {
        uri: None,
        uri_regex: Some(("^/service/([^/]+)(/.*)$".into(), "${2}/instance/${1}".into())),
        authority: None,
    };
    let routes = compile(&[route(
        "rx",
        vec![],
        RouteAction::Forward { clusters: vec![target("a", 1)], rewrite: Some(rewrite) },
    )]);
    assert_eq!(
        routes[0].rewritten_path(&Req::get("/service/foo/v1/api").parts()).as_deref(),
        Some("/v1/api/instance/foo")
    );
}

#[test]
fn redirects_keep_what_they_do_not_replace() {
    let mut req = Req::get("/old");
    req.query = Some("q=1");
    assert_eq!(redirect_location(&req.parts(), Some("/new"), None, None, None), "http://reviews/new?q=1");
    assert_eq!(
        redirect_location(&req.parts(), None, Some("example.com"), Some("https"), Some(8443)),
        "https://example.com:8443/old?q=1"
    );
    assert_eq!(
        redirect_location(&req.parts(), Some("/search?lang=en"), None, None, None),
        "http://reviews/search?lang=en",
        "a uri with its own query replaces the request's"
    );
}

/// A request for `reviews` whose `Host` header is `host`.
fn with_host(host: &'static str) -> Req {
    let mut req = Req::get("/old");
    req.headers.insert(http::header::HOST, http::HeaderValue::from_static(host));
    req
}

#[test]
fn a_redirect_keeps_the_port_of_the_host_header_unless_it_sets_one() {
    let req = with_host("reviews:8080");
    assert_eq!(redirect_location(&req.parts(), Some("/new"), None, None, None), "http://reviews:8080/new");
    assert_eq!(
        redirect_location(&req.parts(), Some("/new"), None, None, Some(9090)),
        "http://reviews:9090/new",
        "the redirect's port replaces the request's"
    );
    assert_eq!(
        redirect_location(&req.parts(), None, None, Some("https"), None),
        "https://reviews:8080/old",
        "a port that is not the old scheme's default stays when the scheme changes"
    );
    assert_eq!(
        redirect_location(&req.parts(), None, Some("other.example"), None, None),
        "http://other.example/old",
        "an authority is taken as written, as Envoy's host_redirect is"
    );
}

#[test]
fn a_scheme_change_drops_the_old_schemes_default_port() {
    let req = with_host("reviews:80");
    assert_eq!(redirect_location(&req.parts(), None, None, Some("https"), None), "https://reviews/old");
    assert_eq!(redirect_location(&req.parts(), None, None, None, None), "http://reviews:80/old");
}

#[test]
fn an_ipv6_host_stays_bracketed_with_its_port() {
    let mut req = with_host("[fd00::1]:8080");
    req.authority = "fd00::1";
    assert_eq!(redirect_location(&req.parts(), None, None, None, None), "http://[fd00::1]:8080/old");
    req.headers.remove(http::header::HOST);
    assert_eq!(redirect_location(&req.parts(), None, None, None, None), "http://[fd00::1]/old");
}

#[test]
fn header_edits_remove_first_then_set_then_add_as_envoy_does() {
    let edits = HeaderEdits::compile(&HeaderOps {
        set: BTreeMap::from([("x-set".to_owned(), "1".to_owned()), ("x-both".to_owned(), "set".to_owned())]),
        add: BTreeMap::from([("x-add".to_owned(), "2".to_owned()), ("x-both".to_owned(), "added".to_owned())]),
        remove: vec!["x-remove".to_owned(), "x-both".to_owned(), "x-add".to_owned()],
    })
    .expect("valid");
    let mut headers = HeaderMap::new();
    headers.insert("x-set", http::HeaderValue::from_static("old"));
    headers.insert("x-add", http::HeaderValue::from_static("first"));
    headers.insert("x-remove", http::HeaderValue::from_static("gone"));
    headers.insert("x-both", http::HeaderValue::from_static("from-client"));
    headers.insert("x-kept", http::HeaderValue::from_static("untouched"));
    edits.apply(&mut headers);
    let all = |name: &str| headers.get_all(name).iter().map(|v| v.to_str().expect("ascii")).collect::<Vec<_>>();
    assert_eq!(all("x-set"), ["1"], "set overwrites");
    assert!(headers.get("x-remove").is_none(), "remove removes");
    assert_eq!(all("x-add"), ["2"], "a header removed and added has only the added value");
    assert_eq!(all("x-both"), ["set", "added"], "removed, then set, then added to");
    assert_eq!(all("x-kept"), ["untouched"]);
}

#[test]
fn a_bad_regex_is_a_config_error_naming_the_route() {
    let bad = route(
        "broken",
        vec![RouteMatch { uri: Some(StringMatcher::Regex("(".into())), ..Default::default() }],
        forward("a"),
    );
    let err = compile_route(&bad, index).expect_err("bad regex");
    assert!(err.to_string().contains("route broken"), "{err}");
}
