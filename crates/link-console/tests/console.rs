//! The console in process: the real management router (`link_api`, on a SQLite store in a
//! temporary folder) behind a bearer layer that stands in for the binary's token
//! verification, the console beside it, driven with `oneshot`. What the console may do is
//! what ARM lets the session's principal do; sign-in codes work once; CSRF and forged
//! cookies are refused. (crates/fhirlink/tests/console_browser.rs runs the same in a browser
//! against the real binary and its real token verification.)

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use fhir_store::Store;
use fhir_store_sqlite::SqliteStore;
use http::{header, StatusCode};
use http_body_util::BodyExt;
use link_api::ControlPlane;
use link_console::{ConsoleConfig, Sessions, CODE_PATH, COOKIE};
use link_model::Principal;
use serde_json::{json, Value};
use tower::ServiceExt;

const SUB: &str = "00000000-0000-0000-0000-000000000000";

struct Env {
    _dir: tempfile::TempDir,
    cp: Arc<ControlPlane>,
    app: Router,
    store: Arc<dyn Store>,
}

/// `Authorization: Bearer test:<principal>` → that principal; anything else 401, as the
/// binary's verifier answers a bad token.
async fn bearer(mut req: Request, next: Next) -> Response {
    let who = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer test:"))
        .map(str::to_owned);
    match who {
        Some(id) => {
            req.extensions_mut().insert(Principal {
                id,
                issuer: "test".into(),
            });
            next.run(req).await
        }
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let cp = Arc::new(
        ControlPlane::open(store.clone(), "admin")
            .await
            .expect("control plane"),
    );
    let api = link_api::router(cp.clone())
        .merge(link_console::code_router(Sessions::new(store.clone())))
        .layer(axum::middleware::from_fn(bearer));
    let app = link_console::router(ConsoleConfig {
        api: api.clone(),
        mint: Arc::new(|p: &str| Ok(format!("test:{p}"))),
        store: store.clone(),
        changes: cp.subscribe(),
        subscription: SUB.into(),
    })
    .merge(api);
    Env {
        _dir: dir,
        cp,
        app,
        store,
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn send(env: &Env, req: http::Request<Body>) -> Answer {
    let resp = env.app.clone().oneshot(req).await.expect("router");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// An ARM call as `who`, as an SDK would make it.
async fn arm(env: &Env, who: &str, method: &str, path: &str, version: &str, body: Value) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{path}?api-version={version}"))
        .header(header::AUTHORIZATION, format!("Bearer test:{who}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(env, req).await
}

/// The sign-in path `fhirlink console` would print for `who`.
async fn code_for(env: &Env, who: &str) -> String {
    let req = http::Request::builder()
        .method("POST")
        .uri(CODE_PATH)
        .header(header::AUTHORIZATION, format!("Bearer test:{who}"))
        .body(Body::empty())
        .expect("request");
    let a = send(env, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v: Value = serde_json::from_str(&a.body).expect("json");
    v["path"].as_str().expect("path").to_owned()
}

fn get(path: &str, cookie: Option<&str>) -> http::Request<Body> {
    let mut b = http::Request::builder().uri(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, format!("{COOKIE}={c}"));
    }
    b.body(Body::empty()).expect("request")
}

fn post(path: &str, cookie: &str, form: &[(&str, &str)]) -> http::Request<Body> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    http::Request::builder()
        .method("POST")
        .uri(path)
        .header(header::COOKIE, format!("{COOKIE}={cookie}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request")
}

/// Signs `who` in: (session cookie value, CSRF token from the page).
async fn sign_in(env: &Env, who: &str) -> (String, String) {
    let path = code_for(env, who).await;
    let a = send(env, get(&path, None)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let set = a.headers[header::SET_COOKIE].to_str().expect("cookie");
    let value = set
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|r| r.split(';').next())
        .expect("session cookie")
        .to_owned();
    let page = send(env, get("/", Some(&value))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf field")
        .to_owned();
    (value, csrf)
}

fn group_count(env: &Env) -> usize {
    env.cp
        .snapshot()
        .of_kind(link_model::Kind::ResourceGroup)
        .count()
}

#[tokio::test]
async fn a_sign_in_code_works_once_and_sets_a_strict_cookie() {
    let env = env().await;
    let path = code_for(&env, "admin").await;
    let first = send(&env, get(&path, None)).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(
        first.headers[header::LOCATION],
        "/",
        "the code leaves the URL"
    );
    let cookie = first.headers[header::SET_COOKIE].to_str().expect("cookie");
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    let again = send(&env, get(&path, None)).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.body.contains("was used already"), "{}", again.body);
    assert!(
        !again.headers.contains_key(header::SET_COOKIE),
        "no session for a used code"
    );
    // A guessed code, or none.
    for bad in [
        "/console/signin?code=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/console/signin",
        "/console/signin?code=%00",
    ] {
        assert_eq!(
            send(&env, get(bad, None)).await.status,
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn an_expired_code_is_refused_and_codes_are_not_stored_in_the_clear() {
    let env = env().await;
    let sessions = Sessions::new(env.store.clone());
    let now = chrono::Utc::now().timestamp();
    let code = sessions
        .create_code("admin", now - 121)
        .await
        .expect("code");
    let docs = env
        .store
        .list_documents(link_console::session::CODE_COLLECTION)
        .await
        .expect("codes");
    assert_eq!(docs.len(), 1);
    assert!(!docs[0].key.contains(&code) && !docs[0].body.to_string().contains(&code));
    assert!(sessions
        .exchange(&code, now)
        .await
        .expect("exchange")
        .is_none());
    // A live one works, and the session is found by its id only.
    let code = sessions.create_code("admin", now).await.expect("code");
    let (id, session) = sessions
        .exchange(&code, now)
        .await
        .expect("ok")
        .expect("session");
    assert_eq!(
        sessions.find(&id, now).await.expect("find"),
        Some(session.clone())
    );
    assert_eq!(
        sessions.find(&id, session.expires).await.expect("find"),
        None,
        "a session ends at its expiry"
    );
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy_and_no_token() {
    let env = env().await;
    let (cookie, _) = sign_in(&env, "admin").await;
    let page = send(&env, get("/", Some(&cookie))).await;
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(
        !page.body.contains(&cookie),
        "the session id is not in the page"
    );
    assert!(
        !page.body.contains("test:admin"),
        "no bearer token in the page"
    );
    assert!(!page.body.contains("<script>"), "no inline script");
}

#[tokio::test]
async fn a_forged_or_missing_cookie_gets_no_page_and_changes_nothing() {
    let env = env().await;
    let before = group_count(&env);
    let forged = "A".repeat(43);
    assert_eq!(
        send(&env, get("/", None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&env, get("/", Some(&forged))).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = send(
        &env,
        post(
            "/console/do/group-create",
            &forged,
            &[("csrf", &forged), ("name", "rg9"), ("location", "westus2")],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(group_count(&env), before);
}

#[tokio::test]
async fn a_mutation_without_the_sessions_csrf_token_is_refused() {
    let env = env().await;
    let (cookie, csrf) = sign_in(&env, "admin").await;
    let (_, other_csrf) = sign_in(&env, "admin").await;
    let before = group_count(&env);
    for token in ["", "wrong", other_csrf.as_str()] {
        let a = send(
            &env,
            post(
                "/console/do/group-create",
                &cookie,
                &[("csrf", token), ("name", "rg1"), ("location", "westus2")],
            ),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "csrf {token:?}");
    }
    assert_eq!(group_count(&env), before, "nothing was created");
    // A cross-site form, even with the right token.
    let mut req = post(
        "/console/do/group-create",
        &cookie,
        &[("csrf", &csrf), ("name", "rg1"), ("location", "westus2")],
    );
    req.headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().expect("value"));
    assert_eq!(send(&env, req).await.status, StatusCode::FORBIDDEN);
    // The same form from the console's page goes through.
    let ok = send(
        &env,
        post(
            "/console/do/group-create",
            &cookie,
            &[
                ("csrf", &csrf),
                ("back", "/"),
                ("name", "rg1"),
                ("location", "westus2"),
            ],
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(group_count(&env), before + 1);
}

#[tokio::test]
async fn a_reader_sees_but_cannot_change_and_keeps_what_was_typed() {
    let env = env().await;
    let rg = format!("/subscriptions/{SUB}/resourceGroups/rg1");
    let made = arm(
        &env,
        "admin",
        "PUT",
        &rg,
        "2025-04-01",
        json!({"location": "westus2"}),
    )
    .await;
    assert!(made.status.is_success(), "{}", made.body);
    let reader = format!(
        "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{}",
        link_model::READER
    );
    let assignment = format!(
        "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/7f0e7c2a-1d2b-4c3d-8e4f-5a6b7c8d9e0f"
    );
    let a = arm(
        &env,
        "admin",
        "PUT",
        &assignment,
        "2022-04-01",
        json!({"properties": {"roleDefinitionId": reader, "principalId": "viewer"}}),
    )
    .await;
    assert!(a.status.is_success(), "{}", a.body);

    let (cookie, csrf) = sign_in(&env, "viewer").await;
    let page = send(&env, get(&format!("/console/r{rg}"), Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<h1>rg1</h1>"),
        "the Reader sees the group"
    );
    let before = group_count(&env);
    let a = send(
        &env,
        post(
            "/console/do/group-create",
            &cookie,
            &[
                ("csrf", &csrf),
                ("form", "group-create"),
                ("back", "/"),
                ("name", "readers-group"),
                ("location", "westus2"),
            ],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(
        a.body.contains("AuthorizationFailed"),
        "ARM's error is shown: {}",
        a.body
    );
    assert!(
        a.body.contains("value=\"readers-group\""),
        "the typed name is kept"
    );
    assert!(a.body.contains("aria-invalid=\"true\""), "beside a field");
    assert_eq!(group_count(&env), before, "nothing changed");
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let env = env().await;
    let (cookie, csrf) = sign_in(&env, "admin").await;
    let out = send(&env, post("/console/signout", &cookie, &[("csrf", &csrf)])).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .contains("Max-Age=0"));
    assert_eq!(
        send(&env, get("/", Some(&cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn console_paths_leave_arm_paths_to_the_management_api() {
    let env = env().await;
    // An ARM read through the merged router still reaches link-api (with its own auth).
    let a = arm(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/resourcegroups"),
        "2025-04-01",
        Value::Null,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let no_token = send(
        &env,
        get(
            &format!("/subscriptions/{SUB}/resourcegroups?api-version=2025-04-01"),
            None,
        ),
    )
    .await;
    assert_eq!(
        no_token.status,
        StatusCode::UNAUTHORIZED,
        "a console cookie is no ARM credential"
    );
}
