//! The management API's guard against callers (issue 18): the client address behind a trusted
//! proxy, and the `Bearer` scheme's spelling.

use herald::tenants::Scope;

use crate::api_v1::token;
use crate::helpers::spawn_app_with;

/// Behind a trusted proxy the 401 budget is the client's, not the proxy's: one client that
/// spends it does not lock the API for the others the proxy speaks for.
#[tokio::test]
async fn behind_a_trusted_proxy_the_401_budget_is_each_clients() {
    let app = spawn_app_with(|s| {
        s.api_rate = 1000;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let acme = app.node.store.create_tenant("Acme").await.unwrap();
    let live = token(&app, &acme.id, &[Scope::AppsRead]).await;
    let from = |client: &'static str, token: &str| {
        app.http
            .get(app.url("/api/v1/apps"))
            .bearer_auth(token.to_owned())
            .header("x-forwarded-for", client)
            .send()
    };
    let budget = herald::api::v1::UNAUTHORIZED_PER_MINUTE as usize;
    for _ in 0..budget {
        let answer = from("203.0.113.7", "hrld_not-a-token").await.unwrap();
        assert_eq!(answer.status().as_u16(), 401);
    }
    let spent = from("203.0.113.7", &live).await.unwrap();
    assert_eq!(spent.status().as_u16(), 429, "that client is out of 401s");
    let other = from("198.51.100.9", &live).await.unwrap();
    assert_eq!(
        other.status().as_u16(),
        200,
        "another client behind the proxy is not"
    );
}

/// The `Bearer` scheme is matched case-insensitively, as HTTP schemes are.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app_with(|s| s.api_rate = 1000).await;
    let acme = app.node.store.create_tenant("Acme").await.unwrap();
    let live = token(&app, &acme.id, &[Scope::AppsRead]).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let answer = app
            .http
            .get(app.url("/api/v1/apps"))
            .header("authorization", format!("{scheme} {live}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{scheme}");
    }
    let answer = app
        .http
        .get(app.url("/api/v1/apps"))
        .header("authorization", format!("Basic {live}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
}
