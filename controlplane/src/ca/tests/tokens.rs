use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::ca::auth::{TOKENS_DIR, identity_of_review};

#[tokio::test]
async fn a_minted_token_authenticates_its_workload_and_no_other_token_does() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = mint_token(dir.path(), &shop_inventory()).expect("minted");
    assert_eq!(path, dir.path().join(TOKENS_DIR).join("shop.inventory.token"));
    assert_eq!(path, token_path(dir.path(), &shop_inventory()));
    assert_eq!(std::fs::metadata(&path).expect("written").permissions().mode() & 0o777, 0o600);
    mint_token(dir.path(), &Identity::new("shop", "orders.v2").expect("valid")).expect("minted");
    let token = std::fs::read_to_string(&path).expect("readable");
    assert_eq!(token.len(), 64, "32 random bytes in hex");

    let authenticator = Authenticator::LocalTokens(dir.path().join(TOKENS_DIR));
    assert_eq!(authenticator.authenticate(&token).await.expect("known"), shop_inventory());
    for unknown in ["", "0000", &"f".repeat(64)] {
        let err = authenticator.authenticate(unknown).await.expect_err("unknown");
        assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
    }
    let orders = std::fs::read_to_string(dir.path().join(TOKENS_DIR).join("shop.orders.v2.token")).expect("readable");
    let identity = authenticator.authenticate(&orders).await.expect("known");
    assert_eq!((identity.namespace.as_str(), identity.service_account.as_str()), ("shop", "orders.v2"));

    mint_token(dir.path(), &shop_inventory()).expect("minted again");
    let err = authenticator.authenticate(&token).await.expect_err("replaced");
    assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
    let newer = std::fs::read_to_string(&path).expect("readable");
    assert_eq!(authenticator.authenticate(&newer).await.expect("known"), shop_inventory());
}

#[tokio::test]
async fn without_a_tokens_folder_every_token_is_refused() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let authenticator = Authenticator::LocalTokens(dir.path().join("absent"));
    let err = authenticator.authenticate("abc").await.expect_err("nothing known");
    assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
}

#[test]
fn names_that_would_change_the_shape_of_the_spiffe_uri_are_refused() {
    assert_eq!(shop_inventory().spiffe_id("cluster.local"), "spiffe://cluster.local/ns/shop/sa/inventory");
    for (ns, sa) in [("", "a"), ("shop", ""), ("a/b", "c"), ("shop", "x/sa/admin"), ("Shop", "a"), ("shop", "a..b")] {
        assert!(Identity::new(ns, sa).is_err(), "{ns:?} {sa:?}");
    }
}

#[test]
fn a_token_review_names_a_service_account_only_when_authenticated_for_the_audience() {
    let review = |status: serde_json::Value| -> k8s_openapi::api::authentication::v1::TokenReview {
        serde_json::from_value(serde_json::json!({"spec": {}, "status": status})).expect("a TokenReview")
    };
    let good = review(serde_json::json!({
        "authenticated": true, "audiences": ["trellis-ca"],
        "user": {"username": "system:serviceaccount:shop:inventory"},
    }));
    assert_eq!(identity_of_review(&good, "trellis-ca").expect("a ServiceAccount"), shop_inventory());
    let user = review(serde_json::json!({
        "authenticated": true, "audiences": ["trellis-ca"], "user": {"username": "alice@example.com"},
    }));
    let err = identity_of_review(&user, "trellis-ca").expect_err("a person");
    assert!(err.to_string().contains("is not a ServiceAccount"), "{err}");
}
