//! The fetcher against a real local HTTP server, with timings shortened to milliseconds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use hyper::Response;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use trellis_api::proxy_config::{InboundListener, JwtProvider, Node, ProxyMode};

use super::*;
use crate::index::load;

const KEYS_A: &str = r#"{"keys": [{"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": "AAAA"}]}"#;
const KEYS_B: &str = r#"{"keys": [{"kty": "OKP", "kid": "b", "crv": "Ed25519", "x": "BBBB"}]}"#;
/// Longest wait for something the fetcher should do within milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

fn fast() -> Timing {
    Timing {
        refresh: Duration::from_millis(150),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
    }
}

/// A JWKS server whose answer (status and body) the test changes, counting requests.
#[derive(Clone)]
struct Server {
    answer: Arc<Mutex<(u16, String)>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn new(body: &str) -> Self {
        Self { answer: Arc::new(Mutex::new((200, body.to_owned()))), requests: Arc::default() }
    }

    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().expect("lock") = (status, body.to_owned());
    }

    /// Serves on `listener` until the test ends.
    fn serve(&self, listener: TcpListener) {
        let server = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        server.requests.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = server.answer.lock().expect("lock").clone();
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).expect("a status");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    (listener, addr)
}

fn uri(addr: SocketAddr) -> String {
    format!("http://{addr}/jwks.json")
}

fn wanted(uri: &str) -> Wanted {
    Wanted::from([(uri.to_owned(), None)])
}

/// Waits until the cache holds `body` for `uri`.
async fn until_holds(cache: &JwksCache, uri: &str, body: &str) {
    let mut generations = cache.subscribe();
    let wait = async {
        while cache.get(uri).as_deref() != Some(body) {
            generations.changed().await.expect("the cache lives");
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("{uri} never held {body}"));
}

#[tokio::test]
async fn a_wanted_key_set_is_fetched_and_announced() {
    let (listener, addr) = listen().await;
    Server::new(KEYS_A).serve(listener);
    let cache = JwksCache::new(fast());
    let generations = cache.subscribe();
    assert_eq!(cache.get(&uri(addr)), None);
    cache.set_wanted(&wanted(&uri(addr)));
    until_holds(&cache, &uri(addr), KEYS_A).await;
    assert!(generations.has_changed().expect("the cache lives"), "the generation moved");
}

#[tokio::test]
async fn an_unreachable_uri_is_retried_until_it_answers() {
    // A port that was free a moment ago: nothing listens there yet.
    let (listener, addr) = listen().await;
    drop(listener);
    let cache = JwksCache::new(fast());
    cache.set_wanted(&wanted(&uri(addr)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get(&uri(addr)), None, "nothing arrives while nothing answers");
    let listener = TcpListener::bind(addr).await.expect("the same port again");
    Server::new(KEYS_A).serve(listener);
    until_holds(&cache, &uri(addr), KEYS_A).await;
}

#[tokio::test]
async fn a_rotated_key_set_is_picked_up_on_refresh() {
    let (listener, addr) = listen().await;
    let server = Server::new(KEYS_A);
    server.serve(listener);
    let cache = JwksCache::new(fast());
    cache.set_wanted(&wanted(&uri(addr)));
    until_holds(&cache, &uri(addr), KEYS_A).await;
    server.answer(200, KEYS_B);
    until_holds(&cache, &uri(addr), KEYS_B).await;
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_key_set() {
    let (listener, addr) = listen().await;
    let server = Server::new(KEYS_A);
    server.serve(listener);
    let cache = JwksCache::new(fast());
    cache.set_wanted(&wanted(&uri(addr)));
    until_holds(&cache, &uri(addr), KEYS_A).await;
    server.answer(200, "<html>maintenance</html>");
    let before = server.requests.load(Ordering::SeqCst);
    tokio::time::timeout(PATIENCE, async {
        while server.requests.load(Ordering::SeqCst) < before + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the fetcher keeps asking");
    assert_eq!(cache.get(&uri(addr)).as_deref(), Some(KEYS_A), "a body that is no key set is not kept");
    server.answer(503, KEYS_B);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get(&uri(addr)).as_deref(), Some(KEYS_A), "an error status is not kept");
}

#[tokio::test]
async fn a_uri_no_longer_wanted_is_forgotten_and_no_longer_fetched() {
    let (listener, addr) = listen().await;
    let server = Server::new(KEYS_A);
    server.serve(listener);
    let cache = JwksCache::new(fast());
    cache.set_wanted(&wanted(&uri(addr)));
    until_holds(&cache, &uri(addr), KEYS_A).await;
    cache.set_wanted(&Wanted::new());
    assert_eq!(cache.get(&uri(addr)), None);
    let after = server.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.requests.load(Ordering::SeqCst), after, "its task stopped");
}

#[tokio::test]
async fn fill_puts_fetched_key_sets_into_providers_without_inline_keys() {
    let (listener, addr) = listen().await;
    Server::new(KEYS_A).serve(listener);
    let cache = JwksCache::new(fast());
    cache.set_wanted(&wanted(&uri(addr)));
    until_holds(&cache, &uri(addr), KEYS_A).await;
    let provider = |jwks: Option<&str>, jwks_uri: &str| JwtProvider {
        issuer: "https://issuer.example.com".into(),
        audiences: Vec::new(),
        jwks: jwks.map(str::to_owned),
        jwks_uri: Some(jwks_uri.to_owned()),
        from_headers: Vec::new(),
        from_params: Vec::new(),
        from_cookies: Vec::new(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        space_delimited_claims: Vec::new(),
    };
    let node = Node {
        id: "pricing-1.shop".into(),
        namespace: "shop".into(),
        service_account: "pricing".into(),
        identity: String::new(),
        labels: Default::default(),
    };
    let mut config = ProxyConfig::new("1", node, ProxyMode::Sidecar);
    config.inbound.push(InboundListener {
        port: 8080,
        protocol: Default::default(),
        mtls: Default::default(),
        authorization: Vec::new(),
        jwt: vec![
            provider(None, &uri(addr)),
            provider(Some(KEYS_B), &uri(addr)),
            provider(None, "http://127.0.0.1:1/never-fetched"),
        ],
        rate_limits: Vec::new(),
    });
    cache.fill(&mut config);
    let filled: Vec<Option<&str>> = config.inbound[0].jwt.iter().map(|p| p.jwks.as_deref()).collect();
    assert_eq!(filled, [Some(KEYS_A), Some(KEYS_B), None]);
}

const POLICIES: &str = "\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: a, namespace: shop}
spec:
  jwtRules:
    - {issuer: https://a.example.com, jwksUri: 'https://a.example.com/keys', timeout: 3s}
    - {issuer: https://b.example.com, jwks_uri: 'https://b.example.com/keys'}
    - {issuer: https://c.example.com, jwks: '{\"keys\": []}'}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: b, namespace: other}
spec:
  jwtRules:
    - {issuer: https://a.example.com, jwksUri: 'https://a.example.com/keys', timeout: 1500ms}
    - {issuer: 'https://d.example.com/'}
    - {issuer: not-a-url}
";

#[test]
fn the_wanted_uris_are_the_jwks_uris_and_for_rules_without_keys_the_issuers_openid_configuration() {
    let loaded = load::yaml("policies.yaml", POLICIES);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let mut index = Index::default();
    index.apply_all(loaded.changes);
    let uris: Vec<String> = wanted_uris(&index).into_keys().collect();
    assert_eq!(
        uris,
        [
            "https://a.example.com/keys",
            "https://b.example.com/keys",
            "https://d.example.com/.well-known/openid-configuration"
        ],
        "an issuer that is not a URL cannot be discovered"
    );
    let wanted = wanted_uris(&index);
    assert_eq!(wanted["https://a.example.com/keys"], Some(Duration::from_millis(1500)), "the shortest rule timeout");
    assert_eq!(wanted["https://b.example.com/keys"], None, "no rule timeout: the fetcher's default");
}

#[tokio::test]
async fn a_rules_timeout_cuts_a_fetch_from_a_server_that_never_answers() {
    let (listener, addr) = listen().await;
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    // The fetcher's own limit (2 s) would allow one attempt in the next second; the rule's 100 ms
    // cuts each attempt short, so it retries (after 50, 100, 200 ms) on new connections.
    let cache = JwksCache::new(fast());
    cache.set_wanted(&Wanted::from([(uri(addr), Some(Duration::from_millis(100)))]));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let seen = connections.load(Ordering::SeqCst);
    assert!(seen >= 3, "each attempt gave up after the rule's timeout and tried again: {seen} connection(s)");
    assert_eq!(cache.get(&uri(addr)), None);
}

#[tokio::test]
async fn a_rule_without_keys_gets_them_by_openid_discovery_from_its_issuer() {
    let (listener, addr) = listen().await;
    let base = format!("http://{addr}");
    let discovery = format!(r#"{{"issuer": "{base}", "jwks_uri": "{base}/keys"}}"#);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let discovery = discovery.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = match request.uri().path() {
                        OPENID_CONFIGURATION_PATH => discovery.clone(),
                        "/keys" => KEYS_A.to_owned(),
                        _ => "{}".to_owned(),
                    };
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    let rule: JwtRule = serde_json::from_value(serde_json::json!({"issuer": format!("{base}/")})).expect("a rule");
    let source = key_source(&rule).expect("discovered");
    assert_eq!(source, format!("{base}{OPENID_CONFIGURATION_PATH}"));
    let cache = JwksCache::new(fast());
    cache.set_wanted(&wanted(&source));
    until_holds(&cache, &source, KEYS_A).await;
}

#[test]
fn a_document_is_a_key_set_or_an_openid_configuration_and_nothing_else() {
    assert_eq!(parse_source(KEYS_A), Ok(Source::KeySet));
    let discovery = r#"{"issuer": "https://x", "jwks_uri": "https://x/keys"}"#;
    assert_eq!(parse_source(discovery), Ok(Source::Discovery("https://x/keys".to_owned())));
    let err = parse_source(r#"{"issuer": "https://x"}"#).expect_err("neither");
    assert!(err.contains("neither a JSON Web Key Set"), "{err}");
}

#[tokio::test]
async fn following_an_index_fetches_its_uris_and_moves_the_generation_when_keys_arrive() {
    let (listener, addr) = listen().await;
    drop(listener);
    let index = SharedIndex::default();
    let cache = JwksCache::new(fast());
    let mut generations = cache.follow(index.clone());
    let policy = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: a, namespace: shop}}\n\
         spec: {{jwtRules: [{{issuer: https://a.example.com, jwksUri: '{}'}}]}}\n",
        uri(addr)
    );
    let loaded = load::yaml("policy.yaml", &policy);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    index.apply(loaded.changes);
    tokio::time::timeout(PATIENCE, generations.changed()).await.expect("moves").expect("the follower lives");
    let after_index = *generations.borrow_and_update();
    let listener = TcpListener::bind(addr).await.expect("the same port again");
    Server::new(KEYS_A).serve(listener);
    until_holds(&cache, &uri(addr), KEYS_A).await;
    tokio::time::timeout(PATIENCE, generations.changed()).await.expect("moves").expect("the follower lives");
    assert!(*generations.borrow() > after_index, "the keys' arrival moved the generation");
}

/// The proxy's test key and key set (proxy/src/jwt/testdata).
const RSA_KEY: &str = include_str!("../../../proxy/src/jwt/testdata/rsa.pem");
const RSA_JWKS: &str = include_str!("../../../proxy/src/jwt/testdata/jwks.json");

#[tokio::test]
async fn a_token_is_refused_while_its_jwks_is_unreachable_and_accepted_once_it_is_fetched() {
    use trellis_proxy::jwt::{JwtAuthenticator, JwtError};

    let (listener, addr) = listen().await;
    drop(listener);
    let issuer = "https://issuer.example.com";
    let provider = JwtProvider {
        issuer: issuer.into(),
        audiences: Vec::new(),
        jwks: None,
        jwks_uri: Some(uri(addr)),
        from_headers: vec![trellis_api::proxy_config::JwtHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }],
        from_params: Vec::new(),
        from_cookies: Vec::new(),
        forward_original_token: false,
        output_payload_to_header: None,
        output_claim_to_headers: Vec::new(),
        space_delimited_claims: Vec::new(),
    };
    let node = Node {
        id: "a".into(),
        namespace: "shop".into(),
        service_account: "a".into(),
        identity: String::new(),
        labels: Default::default(),
    };
    let mut config = ProxyConfig::new("1", node, ProxyMode::Sidecar);
    config.inbound.push(InboundListener {
        port: 8080,
        protocol: Default::default(),
        mtls: Default::default(),
        authorization: Vec::new(),
        jwt: vec![provider],
        rate_limits: Vec::new(),
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("the test key");
    let header =
        jsonwebtoken::Header { kid: Some("rsa".into()), ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256) };
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() + 600;
    let claims = serde_json::json!({"iss": issuer, "sub": "alice", "exp": exp});
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("signed");
    let request = Request::get("/").header("authorization", format!("Bearer {token}")).body(()).expect("a request");
    let (parts, ()) = request.into_parts();
    let judge = |config: &ProxyConfig| {
        JwtAuthenticator::compile(&config.inbound[0].jwt).expect("compiles").authenticate(&parts)
    };

    let cache = JwksCache::new(fast());
    cache.set_wanted(&wanted(&uri(addr)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut unfetched = config.clone();
    cache.fill(&mut unfetched);
    assert_eq!(judge(&unfetched), Err(JwtError::JwksUnavailable(issuer.into())), "a 401 while unreachable");

    let listener = TcpListener::bind(addr).await.expect("the same port again");
    Server::new(RSA_JWKS).serve(listener);
    until_holds(&cache, &uri(addr), RSA_JWKS).await;
    cache.fill(&mut config);
    let verified = judge(&config).expect("valid").expect("a token");
    assert_eq!(verified.principal.as_deref(), Some("https://issuer.example.com/alice"));
}
