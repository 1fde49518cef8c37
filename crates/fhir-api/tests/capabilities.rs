//! `GET /metadata` (FHIR R4 http.html#capabilities), driven through `router(state)` in
//! process: the CapabilityStatement is rendered once per service, base URL, security and
//! view (issue #14), served with an ETag that `If-None-Match` turns into 304, and a
//! service's changed security settings are never answered from the old body. And SMART's
//! `/.well-known/smart-configuration`, built beside it from the same `Security`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use fhir_api::access::Security;
use fhir_api::{router, ApiConfig, AppState};
use fhir_store::Store;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

struct Server {
    app: Router,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    etag: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json")
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(fhir_store_sqlite::SqliteStore::open(dir.path()).expect("open store"));
    store.create_service("default").await.expect("service");
    let app = router(AppState::new(store, ApiConfig::default()));
    Server { app, _dir: dir }
}

impl Server {
    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        security: Option<Security>,
    ) -> Answer {
        let mut req = Request::builder().uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::empty()).expect("request");
        if let Some(s) = security {
            req.extensions_mut().insert(s);
        }
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let text = |h: header::HeaderName| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, content_type) = (text(header::ETAG), text(header::CONTENT_TYPE));
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            etag,
            content_type,
            body: body.to_vec(),
        }
    }
}

fn security(issuer: &str) -> Security {
    Security {
        issuer: issuer.into(),
        audience: "https://default.fhir.example".into(),
        authorize_endpoint: None,
        token_endpoint: Some(format!("{issuer}/token")),
        ..Security::default()
    }
}

#[tokio::test]
async fn metadata_has_an_etag_and_if_none_match_gives_304() {
    let s = server().await;
    let first = s.get("/metadata", &[], None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["resourceType"], "CapabilityStatement");
    let etag = first.etag.clone().expect("an ETag");
    let second = s.get("/metadata", &[], None).await;
    assert_eq!(second.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(second.body, first.body);

    let not_modified = s.get("/metadata", &[("if-none-match", &etag)], None).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.etag.as_deref(), Some(etag.as_str()));
    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {weak}");
    assert_eq!(
        s.get("/metadata", &[("if-none-match", &listed)], None)
            .await
            .status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        s.get("/metadata", &[("if-none-match", "\"other\"")], None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_changed_security_or_base_url_is_a_new_statement() {
    let s = server().await;
    let a = s
        .get("/metadata", &[], Some(security("https://a.example")))
        .await;
    let b = s
        .get("/metadata", &[], Some(security("https://b.example")))
        .await;
    assert_ne!(a.etag, b.etag);
    let text = String::from_utf8_lossy(&b.body);
    assert!(text.contains("https://b.example/token") && !text.contains("https://a.example"));
    // The old ETag no longer matches once the settings changed.
    let again = s
        .get(
            "/metadata",
            &[("if-none-match", a.etag.as_deref().unwrap())],
            Some(security("https://b.example")),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, b.body);

    let hosted = s
        .get("/metadata", &[("host", "other.example:8080")], None)
        .await;
    assert_eq!(
        hosted.json()["implementation"]["url"],
        "http://other.example:8080"
    );
    assert_ne!(hosted.etag, s.get("/metadata", &[], None).await.etag);
}

#[tokio::test]
async fn metadata_honours_summary_elements_and_format() {
    let s = server().await;
    let full = s.get("/metadata", &[], None).await;
    let summary = s.get("/metadata?_summary=true", &[], None).await;
    assert_ne!(summary.etag, full.etag);
    let v = summary.json();
    assert_eq!(v["meta"]["tag"][0]["code"], "SUBSETTED");
    assert!(summary.body.len() < full.body.len());
    // CapabilityStatement.rest.resource.searchParam is not a summary element.
    assert!(v["rest"][0]["resource"][0].get("searchParam").is_none());

    let v = s
        .get("/metadata?_elements=software", &[], None)
        .await
        .json();
    // The mandatory elements stay: status, date, kind, fhirVersion, format.
    for k in [
        "software",
        "status",
        "date",
        "kind",
        "fhirVersion",
        "format",
    ] {
        assert!(v.get(k).is_some(), "{k} missing from {v}");
    }
    assert!(v.get("rest").is_none());

    let json = s.get("/metadata?_format=application/json", &[], None).await;
    assert_eq!(json.status, StatusCode::OK);
    assert!(json
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json")));
    assert_ne!(
        json.etag, full.etag,
        "another media type is another representation"
    );
    let accept = s
        .get("/metadata", &[("accept", "application/fhir+json")], None)
        .await;
    assert_eq!(accept.etag, full.etag);

    let pretty = s.get("/metadata?_pretty=true", &[], None).await;
    assert!(pretty.body.len() > full.body.len());
    assert_eq!(pretty.json(), full.json());

    assert_eq!(
        s.get("/metadata?_summary=banana", &[], None).await.status,
        StatusCode::BAD_REQUEST
    );
}

/// SMART App Launch 2.0 §conformance: the document names the issuer (as its discovery
/// document does), the scopes and capabilities honoured, the audience, and the issuer's
/// endpoints as far as they are known; plain JSON whatever the client asks for.
#[tokio::test]
async fn smart_configuration_is_built_from_the_services_security() {
    let s = server().await;
    let discovered = Security {
        issuer: "https://login.example/tenant".into(),
        audience: "https://default.fhir.example".into(),
        authorize_endpoint: Some("https://login.example/tenant/authorize".into()),
        token_endpoint: Some("https://login.example/tenant/token".into()),
        discovered_issuer: Some("https://sts.example/tenant/".into()),
        jwks_uri: Some("https://login.example/tenant/keys".into()),
        grant_types_supported: Some(vec!["authorization_code".into()]),
        code_challenge_methods_supported: Some(vec!["S256".into()]),
        backend_services: false,
    };
    let path = "/.well-known/smart-configuration";
    let answer = s
        .get(path, &[("accept", "text/html")], Some(discovered))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let v = answer.json();
    assert_eq!(
        v,
        serde_json::json!({
            "issuer": "https://sts.example/tenant/",
            "scopes_supported": [
                "openid", "fhirUser", "launch/patient",
                "patient/*.cruds", "user/*.cruds", "system/*.cruds",
                "patient/*.read", "user/*.read", "system/*.read"
            ],
            "capabilities": [
                "permission-v1", "permission-v2", "permission-patient", "permission-user",
                "context-standalone-patient"
            ],
            "audience": "https://default.fhir.example",
            "jwks_uri": "https://login.example/tenant/keys",
            "authorization_endpoint": "https://login.example/tenant/authorize",
            "token_endpoint": "https://login.example/tenant/token",
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"]
        })
    );
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys[..4],
        ["issuer", "scopes_supported", "capabilities", "audience"]
    );

    // fhirlink's own issuer (or an authority not reached): no endpoints to name.
    let local = Security {
        issuer: "fhirlink".into(),
        audience: "https://default.fhir.example".into(),
        ..Security::default()
    };
    let v = s.get(path, &[], Some(local)).await.json();
    assert_eq!(v["issuer"], "fhirlink");
    for absent in ["jwks_uri", "authorization_endpoint", "token_endpoint"] {
        assert!(v.get(absent).is_none(), "{absent} in {v}");
    }

    // fhirlink's own issuer with its token endpoints: SMART Backend Services, at the base
    // the request reached (this test server is plain HTTP).
    let own = Security {
        issuer: "https://default.azurehealthcareapis.com".into(),
        audience: "https://default.fhir.example".into(),
        backend_services: true,
        ..Security::default()
    };
    let v = s
        .get(
            path,
            &[("host", "default.azurehealthcareapis.com:8443")],
            Some(own.clone()),
        )
        .await
        .json();
    assert_eq!(v["issuer"], "https://default.azurehealthcareapis.com");
    assert_eq!(
        v["token_endpoint"],
        "http://default.azurehealthcareapis.com:8443/auth/token"
    );
    assert_eq!(
        v["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
    assert_eq!(
        v["token_endpoint_auth_methods_supported"],
        serde_json::json!(["private_key_jwt"])
    );
    let algs = v["token_endpoint_auth_signing_alg_values_supported"].to_string();
    assert!(algs.contains("RS384") && algs.contains("ES384"), "{algs}");
    assert!(v["capabilities"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("client-confidential-asymmetric")));
    // The CapabilityStatement names the same token endpoint (SMART's oauth-uris).
    let cs = s
        .get(
            "/metadata",
            &[("host", "default.azurehealthcareapis.com:8443")],
            Some(own),
        )
        .await
        .json();
    assert_eq!(
        cs["rest"][0]["security"]["extension"][0]["extension"][0]["valueUri"],
        "http://default.azurehealthcareapis.com:8443/auth/token"
    );

    // Without an authentication layer in front there is no configuration to give.
    assert_eq!(s.get(path, &[], None).await.status, StatusCode::NOT_FOUND);
}
