//! One classification: for every interaction the router serves, the interaction it routed
//! to, the one its authorization checked, and the audit action and metric label (which the
//! binary takes from `interaction::classify`) are the same.

use axum::http::{Method, StatusCode};
use fhir_api::access::Rights;
use fhir_api::interaction::{classify, Kind};
use serde_json::json;

use crate::common::{backends, bundle, caller, reader, Server};

/// What an interaction needs: nothing, read, write or delete rights.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    Nothing,
    Read,
    Write,
    Delete,
}

#[tokio::test]
async fn routing_authorization_audit_and_metrics_agree_for_every_interaction() {
    for b in backends() {
        let s = Server::start(&b).await;
        s.put(json!({"resourceType": "Patient", "id": "p1"})).await;
        s.put(
            json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
        )
        .await;
        let patient = json!({"resourceType": "Patient", "id": "p1", "active": true});
        let new_patient = json!({"resourceType": "Patient", "active": true});
        let patch = json!([{"op": "add", "path": "/active", "value": false}]);
        let batch = bundle("batch", &[]);
        use Kind as K;
        use Needs as N;
        type Case<'a> = (Method, &'a str, Option<&'a serde_json::Value>, Kind, Needs);
        let cases: Vec<Case> = vec![
            (Method::GET, "/metadata", None, K::Capabilities, N::Nothing),
            (
                Method::POST,
                "/",
                Some(&batch),
                K::BatchTransaction,
                N::Nothing,
            ),
            (
                Method::GET,
                "/?_type=Patient",
                None,
                K::SearchSystem,
                N::Read,
            ),
            (Method::POST, "/_search", None, K::SearchSystem, N::Read),
            (Method::GET, "/_history", None, K::HistorySystem, N::Read),
            (Method::GET, "/Patient", None, K::SearchType, N::Read),
            (
                Method::POST,
                "/Patient/_search",
                None,
                K::SearchType,
                N::Read,
            ),
            (
                Method::GET,
                "/Patient/_history",
                None,
                K::HistoryType,
                N::Read,
            ),
            (Method::GET, "/Patient/p1", None, K::Read, N::Read),
            (Method::HEAD, "/Patient/p1", None, K::Read, N::Read),
            (
                Method::GET,
                "/Patient/p1/_history",
                None,
                K::HistoryInstance,
                N::Read,
            ),
            (
                Method::GET,
                "/Patient/p1/_history/1",
                None,
                K::Vread,
                N::Read,
            ),
            (
                Method::GET,
                "/Patient/p1/Observation",
                None,
                K::SearchCompartment,
                N::Read,
            ),
            (
                Method::POST,
                "/Patient/p1/Observation/_search",
                None,
                K::SearchCompartment,
                N::Read,
            ),
            (
                Method::POST,
                "/Patient",
                Some(&new_patient),
                K::Create,
                N::Write,
            ),
            (
                Method::PUT,
                "/Patient/p1",
                Some(&patient),
                K::Update,
                N::Write,
            ),
            (
                Method::PUT,
                "/Patient?_id=p1",
                Some(&patient),
                K::Update,
                N::Write,
            ),
            (
                Method::PATCH,
                "/Patient/p1",
                Some(&patch),
                K::Patch,
                N::Write,
            ),
            (
                Method::PATCH,
                "/Patient?_id=p1",
                Some(&patch),
                K::Patch,
                N::Write,
            ),
            (
                Method::DELETE,
                "/Observation?_id=o1",
                None,
                K::Delete,
                N::Delete,
            ),
            (
                Method::DELETE,
                "/Observation/o1",
                None,
                K::Delete,
                N::Delete,
            ),
        ];
        let nobody = caller(Rights::default(), &[], None);
        let only_reader = caller(reader(), &[], None);
        for (method, path, body, kind, needs) in &cases {
            let what = format!("{} {method} {path}", b.name);
            let headers: &[(&str, &str)] = match (body, method) {
                (None, _) => &[],
                (Some(_), &Method::PATCH) => &[("content-type", "application/json-patch+json")],
                (Some(_), _) => &[("content-type", "application/fhir+json")],
            };
            // Refused first (so that nothing is written before the refusal is checked).
            let refused = s
                .send_raw(method.clone(), path, *body, Some(&nobody), headers)
                .await;
            assert_eq!(refused.kind, Some(*kind), "{what}: routed");
            match needs {
                N::Nothing => assert_ne!(refused.status, StatusCode::FORBIDDEN, "{what}"),
                _ => assert_eq!(
                    refused.status,
                    StatusCode::FORBIDDEN,
                    "{what}: {}",
                    refused.body
                ),
            }
            let as_reader = s
                .send_raw(method.clone(), path, *body, Some(&only_reader), headers)
                .await;
            assert_eq!(as_reader.kind, Some(*kind), "{what}");
            assert_eq!(
                as_reader.status == StatusCode::FORBIDDEN,
                matches!(needs, N::Write | N::Delete),
                "{what}: a reader: {} {}",
                as_reader.status,
                as_reader.body
            );
            let served = s.send_raw(method.clone(), path, *body, None, headers).await;
            assert!(
                served.status.is_success(),
                "{what}: {} {}",
                served.status,
                served.body
            );
            assert_eq!(served.kind, Some(*kind), "{what}");
            // The audit record's action and the metric label.
            let path_only = path.split('?').next().unwrap_or(path);
            let audited = classify(method, path_only);
            assert_eq!(audited.kind, *kind, "{what}: audited");
            assert_eq!(audited.kind.as_str(), kind.as_str());
        }
        // Every kind is served but the operations and bulk export's jobs (a router
        // without a bulk engine answers them 501: fhirlink/tests/bulk.rs serves them), the
        // token endpoint (served by the authentication layer in front:
        // fhirlink/tests/backend_services.rs) and Unknown.
        let served: std::collections::BTreeSet<Kind> = cases.iter().map(|c| c.3).collect();
        for k in Kind::ALL {
            assert!(
                served.contains(&k)
                    || matches!(
                        k,
                        Kind::Operation
                            | Kind::JobStatus
                            | Kind::JobFile
                            | Kind::Token
                            | Kind::Unknown
                    ),
                "{k:?} has no case"
            );
        }
        // What the router refuses is classified the same way too.
        let a = s.send(Method::POST, "/Patient/p1", None, None, &[]).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(a.kind, Some(Kind::Unknown));
        assert_eq!(classify(&Method::POST, "/Patient/p1").kind, Kind::Unknown);
        let a = s.get("/$export", None).await;
        assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED, "{}", a.body);
        assert_eq!(a.kind, Some(Kind::Operation));
        assert_eq!(classify(&Method::GET, "/$export").kind, Kind::Operation);
        let a = s.get("/$everything", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        for (method, path, kind) in [
            (Method::GET, "/_operations/export/j1", Kind::JobStatus),
            (Method::DELETE, "/_operations/export/j1", Kind::JobStatus),
            (
                Method::GET,
                "/_operations/export/j1/Patient-1.ndjson",
                Kind::JobFile,
            ),
        ] {
            let a = s.send(method.clone(), path, None, None, &[]).await;
            assert_eq!(
                a.status,
                StatusCode::NOT_IMPLEMENTED,
                "{method} {path}: {}",
                a.body
            );
            assert_eq!(a.kind, Some(kind), "{method} {path}");
            assert_eq!(classify(&method, path).kind, kind, "{method} {path}");
        }
    }
}
