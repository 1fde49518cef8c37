//! The FHIR R4 REST interactions (http.html): every interaction, header and status the core
//! issue lists, on each backend. In process the base URL is `http://localhost` (no Host
//! header) and the caller is unrestricted, as `--auth none` makes it in the binary.

use std::sync::Arc;

use fhir_api::ApiConfig;
use serde_json::{json, Value};

use crate::common::{assert_outcome, backends, Server};

const BASE: &str = "http://localhost";
const FHIR: (&str, &str) = ("content-type", "application/fhir+json");
const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "active": true,
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25"
    })
}

#[tokio::test]
async fn capabilities_statement_is_generated_from_what_the_server_supports() {
    for b in backends() {
        let s = Server::start(&b).await;
        let r = s.raw_get("/metadata", &[]).await;
        assert_eq!(r.status, 200, "{}", b.name);
        assert!(r
            .header("content-type")
            .starts_with("application/fhir+json"));
        let cs = r.json();
        assert_eq!(cs["resourceType"], "CapabilityStatement");
        assert_eq!(cs["fhirVersion"], "4.0.1");
        assert_eq!(cs["software"]["name"], "fhirlink");
        assert_eq!(cs["format"], json!(["application/fhir+json", "json"]));
        let resources = cs["rest"][0]["resource"].as_array().unwrap();
        assert_eq!(resources.len(), 146, "every concrete R4 resource type");
        let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
        let codes: Vec<&str> = patient["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        for c in [
            "read",
            "vread",
            "update",
            "patch",
            "delete",
            "history-instance",
            "history-type",
            "create",
        ] {
            assert!(codes.contains(&c), "Patient lacks {c}");
        }
        let system: Vec<&str> = cs["rest"][0]["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            system,
            ["transaction", "batch", "history-system", "search-system"]
        );
    }
}

#[tokio::test]
async fn create_read_keeps_values_exactly_as_sent() {
    for b in backends() {
        let s = Server::start(&b).await;
        // Key order, 1.50 and a 25-digit decimal must survive byte for byte.
        let body = r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":1.50,"unit":"kg"},"component":[{"code":{"text":"x"},"valueQuantity":{"value":0.1000000000000000000000001}}]}"#;
        let r = s.raw("POST", "/Observation", &[FHIR], body).await;
        assert_eq!(r.status, 201, "{}", b.name);
        let location = r.header("location").to_string();
        assert_eq!(r.header("etag"), "W/\"1\"");
        assert!(r.headers.contains_key("last-modified"));
        let created = r.text();
        assert!(created.contains(r#""value":1.50"#), "{created}");
        assert!(created.contains("0.1000000000000000000000001"), "{created}");
        let v: Value = serde_json::from_str(&created).unwrap();
        let id = v["id"].as_str().unwrap();
        assert_eq!(location, format!("{BASE}/Observation/{id}/_history/1"));
        assert_eq!(v["meta"]["versionId"], "1");

        let read = s.raw_get(&format!("/Observation/{id}"), &[]).await;
        assert_eq!(read.status, 200);
        assert_eq!(read.header("etag"), "W/\"1\"");
        let text = read.text();
        assert_eq!(text, created, "read returns the stored bytes");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = parsed
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "resourceType",
                "id",
                "meta",
                "status",
                "code",
                "valueQuantity",
                "component"
            ]
        );
    }
}

#[tokio::test]
async fn create_ignores_a_client_id_and_assigns_its_own() {
    for b in backends() {
        let s = Server::start(&b).await;
        let mut p = patient();
        p["id"] = json!("chosen-by-client");
        let created = s.create(&p).await;
        assert_ne!(created["id"], "chosen-by-client", "{}", b.name);
    }
}

#[tokio::test]
async fn update_versions_and_update_as_create() {
    for b in backends() {
        let s = Server::start(&b).await;
        let mut p = patient();
        p["id"] = json!("pat-1");
        let r = s.raw_json("PUT", "/Patient/pat-1", &p, &[]).await;
        assert_eq!(r.status, 201, "{}: update as create", b.name);
        assert_eq!(r.header("etag"), "W/\"1\"");
        p["gender"] = json!("female");
        let r = s.raw_json("PUT", "/Patient/pat-1", &p, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("etag"), "W/\"2\"");
        assert_eq!(
            r.header("location"),
            format!("{BASE}/Patient/pat-1/_history/2")
        );
        let v1 = s.raw_get("/Patient/pat-1/_history/1", &[]).await.json();
        assert_eq!(v1["gender"], "male");
        assert_eq!(v1["meta"]["versionId"], "1");
        let v2 = s.raw_get("/Patient/pat-1/_history/2", &[]).await.json();
        assert_eq!(v2["gender"], "female");
        let (st, oo) = s
            .raw_get("/Patient/pat-1/_history/3", &[])
            .await
            .status_json();
        assert_eq!(st, 404);
        assert_outcome(&oo, "not-found", None);
    }
}

#[tokio::test]
async fn if_match_rejects_a_stale_version_with_412() {
    for b in backends() {
        let s = Server::start(&b).await;
        let mut p = patient();
        p["id"] = json!("p");
        s.raw_json("PUT", "/Patient/p", &p, &[]).await;
        s.raw_json("PUT", "/Patient/p", &p, &[]).await;
        let (st, oo) = s
            .raw_json("PUT", "/Patient/p", &p, &[("if-match", "W/\"1\"")])
            .await
            .status_json();
        assert_eq!(st, 412, "{}", b.name);
        assert_outcome(&oo, "conflict", None);
        let r = s
            .raw_json("PUT", "/Patient/p", &p, &[("if-match", "W/\"2\"")])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("etag"), "W/\"3\"");
        let (st, _) = s
            .raw("DELETE", "/Patient/p", &[("if-match", "W/\"2\"")], "")
            .await
            .status_json();
        assert_eq!(st, 412, "a delete with a stale If-Match");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_updates_never_lose_a_write() {
    for b in backends() {
        let s = Arc::new(Server::start(&b).await);
        let mut p = patient();
        p["id"] = json!("busy");
        s.raw_json("PUT", "/Patient/busy", &p, &[]).await;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.spawn(async move {
                for i in 0..25 {
                    let mut p = patient();
                    p["id"] = json!("busy");
                    p["name"][0]["family"] = json!(format!("T{t}-{i}"));
                    let r = s.raw_json("PUT", "/Patient/busy", &p, &[]).await;
                    assert_eq!(r.status, 200);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer task");
        }
        let r = s.raw_get("/Patient/busy", &[]).await;
        assert_eq!(r.header("etag"), "W/\"201\"", "{}", b.name);
        let h = s
            .raw_get("/Patient/busy/_history?_count=1", &[])
            .await
            .json();
        assert_eq!(h["total"], 201, "every write is in the history");
    }
}

#[tokio::test]
async fn delete_then_read_is_gone_and_history_keeps_the_deletion() {
    for b in backends() {
        let s = Server::start(&b).await;
        let created = s.create(&patient()).await;
        let id = created["id"].as_str().unwrap();
        let path = format!("/Patient/{id}");
        let r = s.raw("DELETE", &path, &[], "").await;
        assert_eq!(r.status, 204, "{}", b.name);
        assert_eq!(r.header("etag"), "W/\"2\"");
        let (st, oo) = s.raw_get(&path, &[]).await.status_json();
        assert_eq!(st, 410);
        assert_outcome(&oo, "deleted", None);
        // Deleting again changes nothing.
        assert_eq!(s.raw("DELETE", &path, &[], "").await.status, 204);
        let h = s.raw_get(&format!("{path}/_history"), &[]).await.json();
        assert_eq!(h["type"], "history");
        assert_eq!(h["total"], 2);
        let e = &h["entry"];
        assert_eq!(e[0]["request"]["method"], "DELETE");
        assert!(e[0].get("resource").is_none());
        assert_eq!(e[1]["request"]["method"], "POST");
        assert_eq!(e[1]["resource"]["id"], id);
        // The old version can still be read.
        assert_eq!(
            s.raw_get(&format!("{path}/_history/1"), &[]).await.status,
            200
        );
        // And the resource can come back.
        let mut p = patient();
        p["id"] = json!(id);
        let r = s.raw_json("PUT", &path, &p, &[]).await;
        assert_eq!(r.status, 201);
        assert_eq!(r.header("etag"), "W/\"3\"");
    }
}

#[tokio::test]
async fn json_patch_applies_and_validates() {
    for b in backends() {
        let s = Server::start(&b).await;
        let created = s.create(&patient()).await;
        let id = created["id"].as_str().unwrap();
        let path = format!("/Patient/{id}");
        let r = s
            .raw(
                "PATCH",
                &path,
                &[JSON_PATCH],
                r#"[{"op":"replace","path":"/gender","value":"female"},{"op":"add","path":"/name/0/given/-","value":"Jim"}]"#,
            )
            .await;
        assert_eq!(r.status, 200, "{}", b.name);
        assert_eq!(r.header("etag"), "W/\"2\"");
        let v = r.json();
        assert_eq!(v["gender"], "female");
        assert_eq!(v["name"][0]["given"], json!(["Peter", "James", "Jim"]));
        // A failing test op cannot be applied: 422, nothing written.
        let (st, oo) = s
            .raw(
                "PATCH",
                &path,
                &[JSON_PATCH],
                r#"[{"op":"test","path":"/gender","value":"male"}]"#,
            )
            .await
            .status_json();
        assert_eq!(st, 422, "{oo}");
        // A patch producing an invalid resource is refused with its path.
        let (st, oo) = s
            .raw(
                "PATCH",
                &path,
                &[JSON_PATCH],
                r#"[{"op":"replace","path":"/birthDate","value":"25/12/1974"}]"#,
            )
            .await
            .status_json();
        assert_eq!(st, 422, "{oo}");
        assert_outcome(&oo, "value", Some("Patient.birthDate"));
        // An If-Match on patch is honoured.
        let (st, _) = s
            .raw(
                "PATCH",
                &path,
                &[JSON_PATCH, ("if-match", "W/\"1\"")],
                r#"[{"op":"replace","path":"/gender","value":"other"}]"#,
            )
            .await
            .status_json();
        assert_eq!(st, 412);
        assert_eq!(s.raw_get(&path, &[]).await.header("etag"), "W/\"2\"");
    }
}

#[tokio::test]
async fn fhirpath_patch_applies() {
    for b in backends() {
        let s = Server::start(&b).await;
        let created = s.create(&patient()).await;
        let id = created["id"].as_str().unwrap();
        let params = json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "operation", "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.birthDate"},
                    {"name": "value", "valueDate": "1975-01-01"}
                ]},
                {"name": "operation", "part": [
                    {"name": "type", "valueCode": "delete"},
                    {"name": "path", "valueString": "Patient.active"}
                ]},
                {"name": "operation", "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "Patient"},
                    {"name": "name", "valueString": "deceasedBoolean"},
                    {"name": "value", "valueBoolean": false}
                ]},
                // telecom repeats: adding the first one makes a list.
                {"name": "operation", "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "Patient"},
                    {"name": "name", "valueString": "telecom"},
                    {"name": "value", "part": [
                        {"name": "system", "valueCode": "phone"},
                        {"name": "value", "valueString": "555-0100"}
                    ]}
                ]}
            ]
        });
        let (st, v) = s
            .raw(
                "PATCH",
                &format!("/Patient/{id}"),
                &[FHIR],
                params.to_string(),
            )
            .await
            .status_json();
        assert_eq!(st, 200, "{}: {v}", b.name);
        assert_eq!(v["birthDate"], "1975-01-01");
        assert!(v.get("active").is_none());
        assert_eq!(v["deceasedBoolean"], false);
        assert_eq!(
            v["telecom"],
            json!([{"system": "phone", "value": "555-0100"}])
        );
    }
}

#[tokio::test]
async fn prefer_return_shapes_the_write_response() {
    for b in backends() {
        let s = Server::start(&b).await;
        let r = s
            .raw_json(
                "POST",
                "/Patient",
                &patient(),
                &[("prefer", "return=minimal")],
            )
            .await;
        assert_eq!(r.status, 201, "{}", b.name);
        assert!(r.headers.contains_key("location"));
        assert!(r.bytes.is_empty());
        let r = s
            .raw_json(
                "POST",
                "/Patient",
                &patient(),
                &[("prefer", "return=OperationOutcome")],
            )
            .await;
        assert_eq!(r.status, 201);
        let v = r.json();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["severity"], "information");
        let r = s
            .raw_json(
                "POST",
                "/Patient",
                &patient(),
                &[("prefer", "return=representation")],
            )
            .await;
        assert_eq!(r.json()["resourceType"], "Patient");
    }
}

#[tokio::test]
async fn read_with_format_pretty_summary_and_elements() {
    for b in backends() {
        let s = Server::start(&b).await;
        let mut p = patient();
        p["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter</div>"});
        p["contact"] = json!([{"name": {"family": "X"}}]);
        let id = s.create(&p).await["id"].as_str().unwrap().to_string();
        let path = format!("/Patient/{id}");

        let r = s.raw_get(&format!("{path}?_format=json"), &[]).await;
        assert_eq!(r.status, 200, "{}", b.name);
        let r = s
            .raw_get(
                &format!("{path}?_format=application/fhir%2Bjson&_pretty=true"),
                &[],
            )
            .await;
        let text = r.text();
        assert!(text.contains("\n  \"resourceType\""), "pretty: {text}");

        let v = s
            .raw_get(&format!("{path}?_summary=true"), &[])
            .await
            .json();
        assert_eq!(v["name"][0]["family"], "Chalmers");
        assert!(
            v.get("contact").is_none(),
            "contact is not a summary element"
        );
        assert!(v.get("text").is_none());
        assert!(v["meta"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["code"] == "SUBSETTED"));

        let v = s
            .raw_get(&format!("{path}?_summary=data"), &[])
            .await
            .json();
        assert!(v.get("text").is_none());
        assert!(v.get("contact").is_some());

        let v = s
            .raw_get(&format!("{path}?_summary=text"), &[])
            .await
            .json();
        assert!(v.get("text").is_some());
        assert!(v.get("name").is_none());

        let v = s
            .raw_get(&format!("{path}?_elements=gender,birthDate"), &[])
            .await
            .json();
        assert_eq!(v["gender"], "male");
        assert_eq!(v["birthDate"], "1974-12-25");
        assert!(v.get("name").is_none());
        assert_eq!(v["id"], id.as_str());

        let (st, oo) = s
            .raw_get(&format!("{path}?_summary=maybe"), &[])
            .await
            .status_json();
        assert_eq!(st, 400);
        assert_outcome(&oo, "invalid", Some("_summary"));
    }
}

#[tokio::test]
async fn conditional_read_gives_304() {
    for b in backends() {
        let s = Server::start(&b).await;
        let id = s.create(&patient()).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = format!("/Patient/{id}");
        let r = s.raw_get(&path, &[("if-none-match", "W/\"1\"")]).await;
        assert_eq!(r.status, 304, "{}", b.name);
        let r = s.raw_get(&path, &[("if-none-match", "W/\"7\"")]).await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test]
async fn history_of_instance_type_and_system_with_since_count_and_paging() {
    for b in backends() {
        let s = Server::start(&b).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(
                s.create(&patient()).await["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
        s.create(&obs).await;
        let mid = s.raw_get(&format!("/Patient/{}", ids[2]), &[]).await.json()["meta"]
            ["lastUpdated"]
            .as_str()
            .unwrap()
            .to_string();

        let h = s.raw_get("/Patient/_history", &[]).await.json();
        assert_eq!(h["total"], 5, "{}", b.name);
        let h = s.raw_get("/_history", &[]).await.json();
        assert_eq!(h["total"], 6);
        assert_eq!(
            h["entry"][0]["resource"]["resourceType"], "Observation",
            "newest first"
        );

        let since = url_encode(&mid);
        let h = s
            .raw_get(&format!("/Patient/_history?_since={since}"), &[])
            .await
            .json();
        assert_eq!(h["total"], 3, "ids[2], ids[3], ids[4]");

        // Page through 2 at a time while new versions are added: no entry seen twice or
        // missed.
        let mut seen = Vec::new();
        let mut url = "/Patient/_history?_count=2".to_string();
        let mut added = false;
        loop {
            let page = s.raw_get(&url, &[]).await.json();
            for e in page["entry"].as_array().into_iter().flatten() {
                seen.push(e["resource"]["id"].as_str().unwrap().to_string());
            }
            if !added {
                s.create(&patient()).await;
                added = true;
            }
            let next = page["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_string());
            match next {
                Some(n) => {
                    url = n
                        .strip_prefix(BASE)
                        .unwrap_or_else(|| panic!("a link on this server: {n}"))
                        .to_string()
                }
                None => break,
            }
        }
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(
            seen, expected,
            "the pages list the original five, newest first, once each"
        );

        let (st, oo) = s
            .raw_get("/Patient/_history?_since=yesterday", &[])
            .await
            .status_json();
        assert_eq!(st, 400);
        assert_outcome(&oo, "invalid", Some("_since"));
        let (st, _) = s.raw_get("/Patient/nope/_history", &[]).await.status_json();
        assert_eq!(st, 404);
    }
}

fn url_encode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn errors_are_operation_outcomes_with_the_right_status() {
    for b in backends() {
        // What `--max-body-bytes 2048` sets in the binary.
        let config = ApiConfig {
            max_body_bytes: 2048,
            ..ApiConfig::default()
        };
        let s = Server::start_with(&b, config).await;

        let (st, oo) = s
            .raw("POST", "/Patient", &[FHIR], "{not json")
            .await
            .status_json();
        assert_eq!(st, 400, "{}", b.name);
        assert_outcome(&oo, "structure", None);

        let (st, oo) = s.raw_get("/Unicorn/1", &[]).await.status_json();
        assert_eq!(st, 404);
        assert_outcome(&oo, "not-found", None);

        let (st, oo) = s
            .raw_get("/Patient/does-not-exist", &[])
            .await
            .status_json();
        assert_eq!(st, 404);
        assert_outcome(&oo, "not-found", None);

        let (st, oo) = s
            .raw(
                "POST",
                "/Patient",
                &[("content-type", "application/fhir+xml")],
                "<Patient/>",
            )
            .await
            .status_json();
        assert_eq!(st, 415);
        assert_outcome(&oo, "not-supported", None);
        assert!(oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("XML"));

        let (st, _) = s
            .raw("POST", "/Patient", &[("content-type", "text/plain")], "{}")
            .await
            .status_json();
        assert_eq!(st, 415);

        let (st, oo) = s
            .raw_get("/metadata", &[("accept", "application/fhir+xml")])
            .await
            .status_json();
        assert_eq!(st, 406);
        assert_outcome(&oo, "not-supported", None);
        let (st, _) = s.raw_get("/metadata?_format=xml", &[]).await.status_json();
        assert_eq!(st, 406);

        let r = s.raw("DELETE", "/metadata", &[], "").await;
        assert_eq!(r.status, 405);
        assert!(r.headers.contains_key("allow"));
        assert_outcome(&r.json(), "not-supported", None);

        let mut big = patient();
        big["name"][0]["family"] = json!("x".repeat(4096));
        let (st, oo) = s
            .raw_json("POST", "/Patient", &big, &[])
            .await
            .status_json();
        assert_eq!(st, 413);
        assert_outcome(&oo, "too-long", None);

        let mut p = patient();
        p["id"] = json!("a");
        let (st, oo) = s.raw_json("PUT", "/Patient/b", &p, &[]).await.status_json();
        assert_eq!(st, 400);
        assert_outcome(&oo, "invalid", Some("Patient.id"));

        let (st, _) = s.raw_get("/Patient/bad%20id", &[]).await.status_json();
        assert_eq!(st, 400);

        let (st, oo) = s
            .raw_json("POST", "/Observation", &patient(), &[])
            .await
            .status_json();
        assert_eq!(st, 400, "a Patient posted to /Observation");
        assert_outcome(&oo, "invalid", None);
    }
}

#[tokio::test]
async fn validation_errors_name_the_element_path() {
    for b in backends() {
        let s = Server::start(&b).await;
        let cases: &[(Value, &str, &str)] = &[
            (
                json!({"resourceType": "Patient", "birthDate": "25/12/1974"}),
                "value",
                "Patient.birthDate",
            ),
            (
                json!({"resourceType": "Patient", "favouriteColour": "blue"}),
                "structure",
                "Patient.favouriteColour",
            ),
            (
                json!({"resourceType": "Patient", "name": [{"given": ["A", 3]}]}),
                "structure",
                "Patient.name[0].given[1]",
            ),
            (
                json!({"resourceType": "Patient", "gender": ["male"]}),
                "structure",
                "Patient.gender",
            ),
            (
                json!({"resourceType": "Observation", "code": {"text": "x"}}),
                "required",
                "Observation.status",
            ),
            (
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueFoo": 1}),
                "structure",
                "Observation.valueFoo",
            ),
            (
                json!({"resourceType": "Patient", "deceasedDateTime": "2020-02-30"}),
                "value",
                "Patient.deceasedDateTime",
            ),
            (
                json!({"resourceType": "Patient", "multipleBirthInteger": 3000000000u64}),
                "value",
                "Patient.multipleBirthInteger",
            ),
            (
                json!({"resourceType": "Patient", "id": "a b"}),
                "value",
                "Patient.id",
            ),
            (
                json!({"resourceType": "Patient", "active": "yes"}),
                "structure",
                "Patient.active",
            ),
        ];
        for (resource, code, path) in cases {
            let t = resource["resourceType"].as_str().unwrap();
            let (st, oo) = s
                .raw_json("POST", &format!("/{t}"), resource, &[])
                .await
                .status_json();
            assert_eq!(st, 400, "{}: {resource} → {oo}", b.name);
            assert_outcome(&oo, code, Some(path));
        }
        // Nothing rejected was stored.
        let h = s.raw_get("/_history", &[]).await.json();
        assert_eq!(h["total"], 0);
    }
}

#[tokio::test]
async fn services_are_isolated_and_routed_by_host() {
    for b in backends() {
        let s = Server::start(&b).await;
        // What `--services alpha,beta` makes at start-up.
        for svc in ["alpha", "beta"] {
            s.store.create_service(svc).await.expect("service");
        }
        let alpha = ("host", "alpha.azurehealthcareapis.com");
        let beta = ("host", "beta.azurehealthcareapis.com");
        let mut p = patient();
        p["id"] = json!("same-id");
        let r = s.raw_json("PUT", "/Patient/same-id", &p, &[alpha]).await;
        assert_eq!(r.status, 201, "{}", b.name);
        assert_eq!(s.raw_get("/Patient/same-id", &[alpha]).await.status, 200);
        assert_eq!(s.raw_get("/Patient/same-id", &[beta]).await.status, 404);
        assert_eq!(
            s.raw_get("/Patient/same-id", &[]).await.status,
            404,
            "default"
        );
        let h = s.raw_get("/_history", &[beta]).await.json();
        assert_eq!(h["total"], 0);
        let (st, oo) = s
            .raw_get("/metadata", &[("host", "gamma.azurehealthcareapis.com")])
            .await
            .status_json();
        assert_eq!(st, 404, "a Host naming no service");
        assert_outcome(&oo, "not-found", None);
    }
}
