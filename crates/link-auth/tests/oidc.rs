//! External OIDC issuers end to end against a local issuer on 127.0.0.1: discovery, RS256 and
//! ES256 keys from its JWKS, key rotation, the refresh rate limit, and every way the issuer
//! can fail — each of which must refuse the token (OIDC Discovery §4, OIDC Core §10.1.1).

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use link_auth::identity::{unix_now, LocalIssuer, TokenRequest};
use link_auth::jwt::{Identity, TokenError};
use link_auth::oidc::{Authority, IssuerMetadata, OidcConfig, OidcError, OidcIssuer, OidcIssuers};
use link_auth::tls::{self, ServerIdentity};
use serde_json::json;

fn config() -> OidcConfig {
    OidcConfig {
        fetch_timeout: Duration::from_secs(5),
        min_refresh_interval: Duration::ZERO,
        ..OidcConfig::default()
    }
}

fn issuer(oidc: &LocalOidc, config: OidcConfig) -> OidcIssuer {
    OidcIssuer::new(&oidc.issuer(), config).unwrap()
}

async fn verify(issuer: &OidcIssuer, token: &str) -> Result<Identity, TokenError> {
    issuer.verify_for(token, NOW, &[FHIR_AUD]).await
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_their_claims() {
    let rsa = Signer::rsa(RSA_A, "rsa-a");
    let ec = Signer::ec("ec-1");
    let big = Signer::rsa(RSA_4096, "rsa-4096");
    let oidc = LocalOidc::start(jwks(&[&rsa, &ec, &big])).await;
    // A trailing slash on the configured authority is not part of the issuer.
    let issuer = OidcIssuer::new(&format!("{}/", oidc.issuer()), config()).unwrap();
    let p = payload(&oidc.issuer());
    for signer in [&rsa, &ec, &big] {
        let id = verify(&issuer, &signer.sign(&p)).await.unwrap();
        assert_eq!(
            id,
            Identity {
                subject: "user-1".into(),
                issuer: oidc.issuer(),
                audience: FHIR_AUD.into(),
                object_id: Some("8f1c4a9e-1d5b-4a6e-9a43-0f2f6d2b9c11".into()),
                client_id: Some("smart-app".into()),
                scopes: vec![
                    "launch/patient".into(),
                    "patient/Observation.rs".into(),
                    "patient/Patient.r".into()
                ],
                roles: vec!["FHIR.Reader".into()],
                patient: Some("p-42".into()),
                fhir_user: Some("Patient/p-42".into()),
                expires: p["exp"].as_i64().unwrap(),
                not_before: p["nbf"].as_i64(),
            },
            "{}",
            signer.kid()
        );
    }
    // Discovered once, fetched once: the keys are cached.
    assert_eq!((oidc.discovery_hits(), oidc.jwks_hits()), (1, 1));
    assert_eq!(issuer.jwks_fetches(), 1);
    // The audience is chosen per call: the same token is not one for the management API.
    assert_eq!(
        issuer
            .verify_for(&rsa.sign(&p), NOW, &["https://management.azure.com/"])
            .await,
        Err(TokenError::WrongAudience)
    );
    assert_eq!(
        issuer.verify_for(&rsa.sign(&p), NOW, &[]).await,
        Err(TokenError::WrongAudience)
    );
}

#[tokio::test]
async fn https_issuer_with_its_ca_trusted() {
    let key = Signer::rsa(RSA_A, "k1");
    let data = tempfile::tempdir().unwrap();
    let server = ServerIdentity::generated(data.path(), "127.0.0.1".parse().unwrap(), &[])
        .unwrap()
        .server_config()
        .unwrap();
    let oidc = LocalOidc::start_with(jwks(&[&key]), Some(server)).await;
    assert!(oidc.issuer().starts_with("https://127.0.0.1:"));
    let trusting = |ca: &std::path::Path| OidcConfig {
        tls: Some(Arc::new(
            tls::client_config(&ca.join("tls/ca.pem")).unwrap(),
        )),
        ..config()
    };
    let token = key.sign(&payload(&oidc.issuer()));
    let issuer = OidcIssuer::new(&oidc.issuer(), trusting(data.path())).unwrap();
    assert!(verify(&issuer, &token).await.is_ok());

    // Another CA: the TLS handshake fails, and so does the token.
    let other = tempfile::tempdir().unwrap();
    ServerIdentity::generated(other.path(), "127.0.0.1".parse().unwrap(), &[]).unwrap();
    let issuer = OidcIssuer::new(&oidc.issuer(), trusting(other.path())).unwrap();
    let result = verify(&issuer, &token).await;
    assert!(
        matches!(
            &result,
            Err(TokenError::IssuerUnreachable(OidcError::Unreachable { reason, .. }))
                if reason.starts_with("TLS")
        ),
        "{result:?}"
    );
    // The operating system's roots (the default) do not include a data folder's CA either.
    let issuer = OidcIssuer::new(&oidc.issuer(), config()).unwrap();
    let result = verify(&issuer, &token).await;
    assert!(
        matches!(
            &result,
            Err(TokenError::IssuerUnreachable(
                OidcError::Unreachable { .. } | OidcError::NoRoots(_)
            ))
        ),
        "{result:?}"
    );
    assert_eq!(oidc.discovery_hits(), 1);
}

#[tokio::test]
async fn key_rotation_new_kid_is_fetched_removed_kid_is_refused() {
    let old = Signer::rsa(RSA_A, "2026-11");
    let new = Signer::rsa(RSA_B, "2026-12");
    let oidc = LocalOidc::start(jwks(&[&old])).await;
    let issuer = issuer(
        &oidc,
        OidcConfig {
            refresh_after: Duration::from_millis(1000),
            ..config()
        },
    );
    let p = payload(&oidc.issuer());
    assert!(verify(&issuer, &old.sign(&p)).await.is_ok());
    assert_eq!(oidc.jwks_hits(), 1);

    // The issuer publishes the next key ahead of using it, then signs with it: the unknown kid
    // makes the verifier fetch the JWKS again and retry, once.
    oidc.set_keys(&[&old, &new]);
    assert!(verify(&issuer, &new.sign(&p)).await.is_ok());
    assert_eq!(oidc.jwks_hits(), 2);
    assert!(verify(&issuer, &old.sign(&p)).await.is_ok());
    assert!(verify(&issuer, &new.sign(&p)).await.is_ok());
    assert_eq!(oidc.jwks_hits(), 2, "known kids need no fetch");
    // Discovery is not repeated while its jwks_uri keeps working.
    assert_eq!(oidc.discovery_hits(), 1);

    // The old key is retired. Once the cached set is refreshed (here by age), a token signed
    // with it is refused, even though its signature is mathematically fine.
    oidc.set_keys(&[&new]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        verify(&issuer, &old.sign(&p)).await,
        Err(TokenError::UnknownKey)
    );
    assert!(verify(&issuer, &new.sign(&p)).await.is_ok());
    // Rotation from RSA to EC works the same way.
    let ec = Signer::ec("2027-01");
    oidc.set_keys(&[&ec]);
    assert!(verify(&issuer, &ec.sign(&p)).await.is_ok());
    assert_eq!(
        verify(&issuer, &new.sign(&p)).await,
        Err(TokenError::UnknownKey)
    );
}

#[tokio::test]
async fn unknown_kids_do_not_hammer_the_issuer() {
    let key = Signer::rsa(RSA_A, "k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let issuer = Arc::new(issuer(
        &oidc,
        OidcConfig {
            min_refresh_interval: Duration::from_secs(60),
            ..config()
        },
    ));
    let p = payload(&oidc.issuer());
    assert!(verify(&issuer, &key.sign(&p)).await.is_ok());
    assert_eq!(oidc.jwks_hits(), 1);

    // 200 tokens with made-up kids, concurrently: all refused as unknown keys, and none gets
    // the JWKS fetched again within the interval.
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let bogus = Signer::rsa(RSA_B, &format!("bogus-{i}"));
        let token = bogus.sign(&p);
        let issuer = issuer.clone();
        flood.spawn(async move { verify(&issuer, &token).await });
    }
    while let Some(result) = flood.join_next().await {
        assert_eq!(result.unwrap(), Err(TokenError::UnknownKey));
    }
    assert_eq!(oidc.jwks_hits(), 1);
    assert_eq!(issuer.jwks_fetches(), 1);
    // Good tokens keep working meanwhile.
    assert!(verify(&issuer, &key.sign(&p)).await.is_ok());
}

#[tokio::test]
async fn refreshes_are_at_most_one_per_interval() {
    let key = Signer::ec("k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let interval = Duration::from_millis(200);
    let issuer = issuer(
        &oidc,
        OidcConfig {
            min_refresh_interval: interval,
            ..config()
        },
    );
    let bogus = Signer::ec("not-published");
    let token = bogus.sign(&payload(&oidc.issuer()));
    let start = std::time::Instant::now();
    let mut tries = 0;
    while start.elapsed() < Duration::from_secs(1) {
        assert_eq!(verify(&issuer, &token).await, Err(TokenError::UnknownKey));
        tries += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let allowed = 1 + (elapsed.as_millis() / interval.as_millis()) as usize + 1;
    assert!(tries > 20, "{tries}");
    assert!(
        oidc.jwks_hits() <= allowed,
        "{} fetches for {tries} tokens in {elapsed:?}",
        oidc.jwks_hits()
    );
    assert!(oidc.jwks_hits() >= 2, "the kid is looked for again later");
}

#[tokio::test]
async fn discovery_issuer_must_be_the_authority() {
    let key = Signer::rsa(RSA_A, "k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    // An impostor's discovery document vouching for its own issuer name.
    oidc.set_discovery(json!({
        "issuer": "https://login.microsoftonline.com/tenant/v2.0",
        "jwks_uri": format!("{}/jwks", oidc.issuer()),
    }));
    let issuer = issuer(&oidc, config());
    for iss in [
        oidc.issuer(),
        "https://login.microsoftonline.com/tenant/v2.0".into(),
    ] {
        let result = verify(&issuer, &key.sign(&payload(&iss))).await;
        assert!(
            matches!(
                &result,
                Err(TokenError::IssuerUnreachable(OidcError::IssuerMismatch { found, .. }))
                    if found == "https://login.microsoftonline.com/tenant/v2.0"
            ),
            "{result:?}"
        );
    }
    assert_eq!(oidc.jwks_hits(), 0, "the impostor's keys are never fetched");

    // And a token whose iss differs from the discovered issuer is refused as such.
    oidc.set_discovery(json!({
        "issuer": oidc.issuer(),
        "jwks_uri": format!("{}/jwks", oidc.issuer()),
    }));
    let issuer = self::issuer(&oidc, config());
    assert_eq!(
        verify(&issuer, &key.sign(&payload("https://sts.windows.net/t/"))).await,
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        verify(&issuer, &key.sign(&payload(&format!("{}/", oidc.issuer())))).await,
        Err(TokenError::WrongIssuer),
        "iss is compared exactly (OIDC Core §3.1.3.7)"
    );
}

#[tokio::test]
async fn an_entra_v1_authority_takes_its_tenants_sts_issuer() {
    let key = Signer::rsa(RSA_A, "k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let tenant = "abfde7b2-df0f-47e6-aabf-2462b07508dc";
    let other = "0b7c3d2e-1f4a-4b5c-8d9e-0f1a2b3c4d5e";
    let sts = format!("https://sts.windows.net/{tenant}/");
    // What Entra's document at https://login.microsoftonline.com/<tenant> says.
    oidc.set_discovery(json!({
        "issuer": sts,
        "jwks_uri": format!("{}/jwks", oidc.issuer()),
    }));
    let authority = format!("{}/{tenant}", oidc.issuer());
    let issuer = OidcIssuer::new(&authority, config()).unwrap();
    let id = verify(&issuer, &key.sign(&payload(&sts))).await.unwrap();
    assert_eq!(
        (id.subject.as_str(), id.issuer.as_str()),
        ("user-1", sts.as_str())
    );
    // `iss` is still compared exactly with the discovered issuer.
    for iss in [
        authority.clone(),
        format!("https://sts.windows.net/{other}/"),
        format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        sts.trim_end_matches('/').to_owned(),
    ] {
        assert_eq!(
            verify(&issuer, &key.sign(&payload(&iss))).await,
            Err(TokenError::WrongIssuer),
            "{iss}"
        );
    }
    // The same document fetched for an authority of another tenant, or of none, is an
    // impostor's (§4.3).
    for authority in [format!("{}/{other}", oidc.issuer()), oidc.issuer()] {
        let issuer = OidcIssuer::new(&authority, config()).unwrap();
        let result = verify(&issuer, &key.sign(&payload(&sts))).await;
        assert!(
            matches!(
                &result,
                Err(TokenError::IssuerUnreachable(OidcError::IssuerMismatch { found, .. })) if *found == sts
            ),
            "{authority}: {result:?}"
        );
    }
}

#[tokio::test]
async fn metadata_passes_on_the_token_endpoints_and_nothing_malformed() {
    let key = Signer::rsa(RSA_A, "k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let u = oidc.issuer();
    oidc.set_discovery(json!({
        "issuer": u,
        "jwks_uri": format!("{u}/jwks"),
        "authorization_endpoint": format!("{u}/authorize"),
        "token_endpoint": format!("{u}/token"),
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
    }));
    let issuer = issuer(&oidc, config());
    // What is cached is all there is to have without a fetch, and it causes none.
    assert_eq!(issuer.cached_metadata(), None);
    assert_eq!(oidc.discovery_hits(), 0);
    let m = issuer.metadata().await.unwrap();
    assert_eq!(issuer.cached_metadata().as_deref(), Some(&*m));
    assert_eq!(
        *m,
        IssuerMetadata {
            issuer: u.clone(),
            jwks_uri: format!("{u}/jwks"),
            authorization_endpoint: Some(format!("{u}/authorize")),
            token_endpoint: Some(format!("{u}/token")),
            grant_types_supported: Some(vec![
                "authorization_code".into(),
                "client_credentials".into()
            ]),
            code_challenge_methods_supported: Some(vec!["S256".into()]),
        }
    );
    // Fetched with the keys, once: verifying a token afterwards fetches nothing more.
    verify(&issuer, &key.sign(&payload(&u))).await.unwrap();
    assert_eq!((oidc.discovery_hits(), oidc.jwks_hits()), (1, 1));

    // What is not a URL fhirlink would fetch from, or not a short name, is left out.
    oidc.set_discovery(json!({
        "issuer": u,
        "jwks_uri": format!("{u}/jwks"),
        "authorization_endpoint": "javascript:alert(1)",
        "token_endpoint": "http://issuer.example/token",
        "grant_types_supported": [1, "has space", "x".repeat(65), "authorization_code"],
        "code_challenge_methods_supported": "S256",
    }));
    let m = self::issuer(&oidc, config()).metadata().await.unwrap();
    assert_eq!(
        (
            &m.authorization_endpoint,
            &m.token_endpoint,
            &m.grant_types_supported,
            &m.code_challenge_methods_supported
        ),
        (
            &None,
            &None,
            &Some(vec!["authorization_code".to_owned()]),
            &None
        )
    );
    // An issuer that cannot be had has no metadata either.
    oidc.set_discovery(
        json!({"issuer": "https://elsewhere.example", "jwks_uri": format!("{u}/jwks")}),
    );
    assert!(self::issuer(&oidc, config()).metadata().await.is_err());
}

#[tokio::test]
async fn unreachable_issuer_refuses_tokens() {
    let key = Signer::rsa(RSA_A, "k1");
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let authority = format!("http://{closed}");
    let issuer = OidcIssuer::new(&authority, config()).unwrap();
    let result = verify(&issuer, &key.sign(&payload(&authority))).await;
    assert!(
        matches!(
            result,
            Err(TokenError::IssuerUnreachable(OidcError::Unreachable { .. }))
        ),
        "{result:?}"
    );
    assert!(matches!(
        issuer.refresh().await,
        Err(OidcError::Unreachable { .. })
    ));
    // Still refused on the next request, the refresh it may make failing the same way.
    assert!(matches!(
        verify(&issuer, &key.sign(&payload(&authority))).await,
        Err(TokenError::IssuerUnreachable(_))
    ));
}

/// The OIDC detail of an `IssuerUnreachable`.
trait SourceOidc {
    fn source_oidc(self) -> OidcError;
}

impl SourceOidc for TokenError {
    fn source_oidc(self) -> OidcError {
        match self {
            TokenError::IssuerUnreachable(e) => e,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn issuer_failures_refuse_tokens() {
    let key = Signer::rsa(RSA_A, "k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let p = payload(&oidc.issuer());
    let token = key.sign(&p);
    let failing = |check: fn(&OidcError) -> bool, what: &'static str| {
        let issuer = issuer(
            &oidc,
            OidcConfig {
                fetch_timeout: Duration::from_millis(1000),
                max_document_bytes: 4096,
                ..config()
            },
        );
        let token = token.clone();
        async move {
            let e = verify(&issuer, &token).await.unwrap_err().source_oidc();
            assert!(check(&e), "{what}: {e:?}");
        }
    };

    oidc.fail_jwks(Some(StatusCode::INTERNAL_SERVER_ERROR));
    failing(
        |e| matches!(e, OidcError::Status { status: 500, .. }),
        "500",
    )
    .await;
    oidc.fail_jwks(Some(StatusCode::FOUND));
    failing(
        |e| matches!(e, OidcError::Status { status: 302, .. }),
        "redirects are not followed",
    )
    .await;
    oidc.fail_jwks(None);

    oidc.delay_jwks(Some(Duration::from_secs(10)));
    let start = std::time::Instant::now();
    failing(|e| matches!(e, OidcError::Timeout { .. }), "hung").await;
    assert!(start.elapsed() < Duration::from_secs(5));
    oidc.delay_jwks(None);

    let padding = "x".repeat(5000);
    oidc.set_jwks(json!({"keys": [key.jwk()], "padding": padding}));
    failing(|e| matches!(e, OidcError::TooLarge { .. }), "oversized").await;

    oidc.set_jwks(json!({"not": "a jwks"}));
    failing(|e| matches!(e, OidcError::BadDocument { .. }), "not a JWKS").await;
    oidc.set_keys(&[&key]);

    // The discovery document may not point at keys over plain HTTP elsewhere.
    oidc.set_discovery(json!({"issuer": oidc.issuer(), "jwks_uri": "http://203.0.113.7/jwks"}));
    failing(|e| matches!(e, OidcError::Insecure(_)), "http jwks_uri").await;
    oidc.set_discovery(json!({"issuer": oidc.issuer()}));
    failing(
        |e| matches!(e, OidcError::BadDocument { .. }),
        "no jwks_uri",
    )
    .await;
    oidc.set_discovery(json!(["not", "an", "object"]));
    failing(
        |e| matches!(e, OidcError::BadDocument { .. }),
        "not an object",
    )
    .await;

    // A JWKS with nothing usable in it: tokens are signed by an unknown key.
    oidc.set_discovery(
        json!({"issuer": oidc.issuer(), "jwks_uri": format!("{}/jwks", oidc.issuer())}),
    );
    oidc.set_jwks(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "use": "enc"}]}));
    let empty = issuer(&oidc, config());
    assert_eq!(verify(&empty, &token).await, Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn cached_keys_outlive_an_outage_but_not_max_key_age() {
    let key = Signer::ec("k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let issuer = issuer(
        &oidc,
        OidcConfig {
            refresh_after: Duration::from_millis(100),
            max_key_age: Duration::from_millis(1000),
            ..config()
        },
    );
    let token = key.sign(&payload(&oidc.issuer()));
    assert!(verify(&issuer, &token).await.is_ok());
    oidc.fail_jwks(Some(StatusCode::SERVICE_UNAVAILABLE));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Due for a refresh, which fails: the cached keys still serve.
    assert!(verify(&issuer, &token).await.is_ok());
    assert!(oidc.jwks_hits() >= 2);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Too old now: refused, with the reason the last refresh failed.
    assert!(matches!(
        verify(&issuer, &token).await,
        Err(TokenError::IssuerUnreachable(OidcError::Status {
            status: 503,
            ..
        }))
    ));
    // The issuer is back: so are its tokens.
    oidc.fail_jwks(None);
    assert!(verify(&issuer, &token).await.is_ok());
}

#[tokio::test]
async fn a_slow_refresh_stalls_only_the_request_that_makes_it() {
    let key = Signer::ec("k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let issuer = Arc::new(issuer(
        &oidc,
        OidcConfig {
            refresh_after: Duration::from_millis(100),
            ..config()
        },
    ));
    let token = key.sign(&payload(&oidc.issuer()));
    assert!(verify(&issuer, &token).await.is_ok());
    tokio::time::sleep(Duration::from_millis(150)).await;
    oidc.delay_jwks(Some(Duration::from_millis(1500)));
    let slow = {
        let (issuer, token) = (issuer.clone(), token.clone());
        tokio::spawn(async move { verify(&issuer, &token).await })
    };
    // Let the slow request take the refresh.
    while oidc.jwks_hits() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = std::time::Instant::now();
    assert!(verify(&issuer, &token).await.is_ok());
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(slow.await.unwrap().is_ok());
}

#[tokio::test]
async fn garbage_tokens_never_cause_a_fetch() {
    let key = Signer::ec("k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let issuer = issuer(&oidc, config());
    let p = payload(&oidc.issuer());
    for token in [
        String::new(),
        "a.b.c".into(),
        format!(
            "{}.{}.",
            b64(json!({"alg": "none"}).to_string()),
            b64(p.to_string())
        ),
        key.sign_raw(&json!({"alg": "HS256", "kid": "k1"}), &p),
        "x".repeat(10_000),
    ] {
        assert!(verify(&issuer, &token).await.is_err());
    }
    assert_eq!((oidc.discovery_hits(), oidc.jwks_hits()), (0, 0));
}

#[tokio::test]
async fn authority_covers_the_local_issuer_and_oidc_issuers() {
    // fhirlink's own issuer: keys in memory, a data-plane token minted for the service.
    let dir = tempfile::tempdir().unwrap();
    let local = LocalIssuer::load_or_create(dir.path()).unwrap();
    let now = unix_now();
    let token = local
        .mint_with(&TokenRequest {
            subject: "alice".into(),
            audience: FHIR_AUD.into(),
            scopes: vec!["patient/*.rs".into(), "launch/patient".into()],
            patient: Some("p-1".into()),
            now,
            lifetime_secs: 600,
            ..TokenRequest::default()
        })
        .unwrap();
    let authority = Authority::Local(Arc::new(local.verifier()));
    let id = authority
        .verify_for(&token, now, &[FHIR_AUD])
        .await
        .unwrap();
    assert_eq!(
        (id.subject.as_str(), id.patient.as_deref(), id.scopes.len()),
        ("alice", Some("p-1"), 2)
    );
    assert_eq!(
        authority
            .verify_for(&token, now, &["https://other.azurehealthcareapis.com"])
            .await,
        Err(TokenError::WrongAudience)
    );
    // The management API's verifier does not take a data-plane token.
    assert_eq!(
        local.verifier().verify(&token, now),
        Err(TokenError::WrongAudience)
    );

    // An OIDC issuer, shared by every service that names it.
    let key = Signer::rsa(RSA_A, "k1");
    let oidc = LocalOidc::start(jwks(&[&key])).await;
    let registry = OidcIssuers::new(config());
    let a = registry.get(&oidc.issuer()).unwrap();
    let b = registry.get(&format!("{}/", oidc.issuer())).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(matches!(
        registry.get("http://idp.example.com"),
        Err(OidcError::Insecure(_))
    ));
    let authority = Authority::Oidc(a);
    let token = key.sign(&payload(&oidc.issuer()));
    assert!(authority.verify_for(&token, NOW, &[FHIR_AUD]).await.is_ok());
    // A local token is not an OIDC issuer's and the other way round.
    assert!(Authority::Local(Arc::new(local.verifier()))
        .verify_for(&token, NOW, &[FHIR_AUD])
        .await
        .is_err());
    registry.retain(|_| false);
    assert!(!Arc::ptr_eq(&registry.get(&oidc.issuer()).unwrap(), &b));
}

#[test]
fn authority_urls_are_checked_without_fetching() {
    for ok in [
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
        "https://idp.example.com/realms/fhir/",
        "http://127.0.0.1:8080",
        "http://localhost:9000/issuer",
        "http://[::1]:9000",
    ] {
        assert!(OidcIssuer::new(ok, OidcConfig::default()).is_ok(), "{ok}");
    }
    for (bad, insecure) in [
        ("http://login.microsoftonline.com/t/v2.0", true),
        ("http://192.168.1.10/", true),
        ("https://idp.example.com/?tenant=x", false),
        ("login.microsoftonline.com", false),
        ("https://u:p@idp.example.com", false),
    ] {
        let e = OidcIssuer::new(bad, OidcConfig::default()).unwrap_err();
        assert_eq!(matches!(e, OidcError::Insecure(_)), insecure, "{bad}: {e}");
    }
}
