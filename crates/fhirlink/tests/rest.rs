//! The FHIR R4 REST interactions (http.html) against the real binary: every interaction,
//! header and status the core issue lists.

mod common;

use common::{assert_outcome, json, status_json, Server};
use serde_json::{json, Value};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "active": true,
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25"
    })
}

#[test]
fn capabilities_statement_is_generated_from_what_the_server_supports() {
    let s = Server::start();
    let r = s.get("metadata").send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+json"));
    let cs = json(r);
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

#[test]
fn create_read_keeps_values_exactly_as_sent() {
    let s = Server::start();
    // Key order, 1.50 and a 25-digit decimal must survive byte for byte.
    let body = r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":1.50,"unit":"kg"},"component":[{"code":{"text":"x"},"valueQuantity":{"value":0.1000000000000000000000001}}]}"#;
    let r = s
        .request("POST", "Observation")
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["etag"], "W/\"1\"");
    assert!(r.headers().contains_key("last-modified"));
    let created = r.text().unwrap();
    assert!(created.contains(r#""value":1.50"#), "{created}");
    assert!(created.contains("0.1000000000000000000000001"), "{created}");
    let v: Value = serde_json::from_str(&created).unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(location, s.url(&format!("Observation/{id}/_history/1")));
    assert_eq!(v["meta"]["versionId"], "1");

    let read = s.get(&format!("Observation/{id}")).send().unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "W/\"1\"");
    let text = read.text().unwrap();
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

#[test]
fn create_ignores_a_client_id_and_assigns_its_own() {
    let s = Server::start();
    let mut p = patient();
    p["id"] = json!("chosen-by-client");
    let created = s.create(&p);
    assert_ne!(created["id"], "chosen-by-client");
}

#[test]
fn update_versions_and_update_as_create() {
    let s = Server::start();
    let mut p = patient();
    p["id"] = json!("pat-1");
    let r = s.put_json("Patient/pat-1", &p).send().unwrap();
    assert_eq!(r.status(), 201, "update as create");
    assert_eq!(r.headers()["etag"], "W/\"1\"");
    p["gender"] = json!("female");
    let r = s.put_json("Patient/pat-1", &p).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "W/\"2\"");
    assert_eq!(
        r.headers()["location"],
        s.url("Patient/pat-1/_history/2").as_str()
    );
    let v1 = json(s.get("Patient/pat-1/_history/1").send().unwrap());
    assert_eq!(v1["gender"], "male");
    assert_eq!(v1["meta"]["versionId"], "1");
    let v2 = json(s.get("Patient/pat-1/_history/2").send().unwrap());
    assert_eq!(v2["gender"], "female");
    let (st, oo) = status_json(s.get("Patient/pat-1/_history/3").send().unwrap());
    assert_eq!(st, 404);
    assert_outcome(&oo, "not-found", None);
}

#[test]
fn if_match_rejects_a_stale_version_with_412() {
    let s = Server::start();
    let mut p = patient();
    p["id"] = json!("p");
    s.put_json("Patient/p", &p).send().unwrap();
    s.put_json("Patient/p", &p).send().unwrap();
    let (st, oo) = status_json(
        s.put_json("Patient/p", &p)
            .header("if-match", "W/\"1\"")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 412);
    assert_outcome(&oo, "conflict", None);
    let r = s
        .put_json("Patient/p", &p)
        .header("if-match", "W/\"2\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "W/\"3\"");
    let (st, _) = status_json(
        s.delete("Patient/p")
            .header("if-match", "W/\"2\"")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 412, "a delete with a stale If-Match");
}

#[test]
fn concurrent_updates_never_lose_a_write() {
    let s = Server::start();
    let mut p = patient();
    p["id"] = json!("busy");
    s.put_json("Patient/busy", &p).send().unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..25 {
                    let mut p = patient();
                    p["id"] = json!("busy");
                    p["name"][0]["family"] = json!(format!("T{t}-{i}"));
                    let r = s.put_json("Patient/busy", &p).send().unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });
    let r = s.get("Patient/busy").send().unwrap();
    assert_eq!(r.headers()["etag"], "W/\"201\"");
    let h = json(s.get("Patient/busy/_history?_count=1").send().unwrap());
    assert_eq!(h["total"], 201, "every write is in the history");
}

#[test]
fn delete_then_read_is_gone_and_history_keeps_the_deletion() {
    let s = Server::start();
    let created = s.create(&patient());
    let id = created["id"].as_str().unwrap();
    let r = s.delete(&format!("Patient/{id}")).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["etag"], "W/\"2\"");
    let (st, oo) = status_json(s.get(&format!("Patient/{id}")).send().unwrap());
    assert_eq!(st, 410);
    assert_outcome(&oo, "deleted", None);
    // Deleting again changes nothing.
    assert_eq!(
        s.delete(&format!("Patient/{id}")).send().unwrap().status(),
        204
    );
    let h = json(s.get(&format!("Patient/{id}/_history")).send().unwrap());
    assert_eq!(h["type"], "history");
    assert_eq!(h["total"], 2);
    let e = &h["entry"];
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none());
    assert_eq!(e[1]["request"]["method"], "POST");
    assert_eq!(e[1]["resource"]["id"], id);
    // The old version can still be read.
    assert_eq!(
        s.get(&format!("Patient/{id}/_history/1"))
            .send()
            .unwrap()
            .status(),
        200
    );
    // And the resource can come back.
    let mut p = patient();
    p["id"] = json!(id);
    let r = s.put_json(&format!("Patient/{id}"), &p).send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "W/\"3\"");
}

#[test]
fn json_patch_applies_and_validates() {
    let s = Server::start();
    let created = s.create(&patient());
    let id = created["id"].as_str().unwrap();
    let r = s
        .request("PATCH", &format!("Patient/{id}"))
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/gender","value":"female"},{"op":"add","path":"/name/0/given/-","value":"Jim"}]"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "W/\"2\"");
    let v = json(r);
    assert_eq!(v["gender"], "female");
    assert_eq!(v["name"][0]["given"], json!(["Peter", "James", "Jim"]));
    // A failing test op cannot be applied: 422, nothing written.
    let (st, oo) = status_json(
        s.request("PATCH", &format!("Patient/{id}"))
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"test","path":"/gender","value":"male"}]"#)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 422, "{oo}");
    // A patch producing an invalid resource is refused with its path.
    let (st, oo) = status_json(
        s.request("PATCH", &format!("Patient/{id}"))
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"replace","path":"/birthDate","value":"25/12/1974"}]"#)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 422, "{oo}");
    assert_outcome(&oo, "value", Some("Patient.birthDate"));
    // An If-Match on patch is honoured.
    let (st, _) = status_json(
        s.request("PATCH", &format!("Patient/{id}"))
            .header("content-type", "application/json-patch+json")
            .header("if-match", "W/\"1\"")
            .body(r#"[{"op":"replace","path":"/gender","value":"other"}]"#)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 412);
    assert_eq!(
        s.get(&format!("Patient/{id}")).send().unwrap().headers()["etag"],
        "W/\"2\""
    );
}

#[test]
fn fhirpath_patch_applies() {
    let s = Server::start();
    let created = s.create(&patient());
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
    let r = s
        .request("PATCH", &format!("Patient/{id}"))
        .header("content-type", "application/fhir+json")
        .body(params.to_string())
        .send()
        .unwrap();
    let (st, v) = status_json(r);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["birthDate"], "1975-01-01");
    assert!(v.get("active").is_none());
    assert_eq!(v["deceasedBoolean"], false);
    assert_eq!(
        v["telecom"],
        json!([{"system": "phone", "value": "555-0100"}])
    );
}

#[test]
fn prefer_return_shapes_the_write_response() {
    let s = Server::start();
    let r = s
        .post_json("Patient", &patient())
        .header("prefer", "return=minimal")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().contains_key("location"));
    assert!(r.text().unwrap().is_empty());
    let r = s
        .post_json("Patient", &patient())
        .header("prefer", "return=OperationOutcome")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = json(r);
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert_eq!(v["issue"][0]["severity"], "information");
    let r = s
        .post_json("Patient", &patient())
        .header("prefer", "return=representation")
        .send()
        .unwrap();
    assert_eq!(json(r)["resourceType"], "Patient");
}

#[test]
fn read_with_format_pretty_summary_and_elements() {
    let s = Server::start();
    let mut p = patient();
    p["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter</div>"});
    p["contact"] = json!([{"name": {"family": "X"}}]);
    let id = s.create(&p)["id"].as_str().unwrap().to_string();
    let path = format!("Patient/{id}");

    let r = s.get(&format!("{path}?_format=json")).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .get(&format!(
            "{path}?_format=application/fhir%2Bjson&_pretty=true"
        ))
        .send()
        .unwrap();
    let text = r.text().unwrap();
    assert!(text.contains("\n  \"resourceType\""), "pretty: {text}");

    let v = json(s.get(&format!("{path}?_summary=true")).send().unwrap());
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

    let v = json(s.get(&format!("{path}?_summary=data")).send().unwrap());
    assert!(v.get("text").is_none());
    assert!(v.get("contact").is_some());

    let v = json(s.get(&format!("{path}?_summary=text")).send().unwrap());
    assert!(v.get("text").is_some());
    assert!(v.get("name").is_none());

    let v = json(
        s.get(&format!("{path}?_elements=gender,birthDate"))
            .send()
            .unwrap(),
    );
    assert_eq!(v["gender"], "male");
    assert_eq!(v["birthDate"], "1974-12-25");
    assert!(v.get("name").is_none());
    assert_eq!(v["id"], id.as_str());

    let (st, oo) = status_json(s.get(&format!("{path}?_summary=maybe")).send().unwrap());
    assert_eq!(st, 400);
    assert_outcome(&oo, "invalid", Some("_summary"));
}

#[test]
fn conditional_read_gives_304() {
    let s = Server::start();
    let id = s.create(&patient())["id"].as_str().unwrap().to_string();
    let r = s
        .get(&format!("Patient/{id}"))
        .header("if-none-match", "W/\"1\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = s
        .get(&format!("Patient/{id}"))
        .header("if-none-match", "W/\"7\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn history_of_instance_type_and_system_with_since_count_and_paging() {
    let s = Server::start();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.create(&patient())["id"].as_str().unwrap().to_string());
    }
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    s.create(&obs);
    let mid = json(s.get(&format!("Patient/{}", ids[2])).send().unwrap())["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();

    let h = json(s.get("Patient/_history").send().unwrap());
    assert_eq!(h["total"], 5);
    let h = json(s.get("_history").send().unwrap());
    assert_eq!(h["total"], 6);
    assert_eq!(
        h["entry"][0]["resource"]["resourceType"], "Observation",
        "newest first"
    );

    let since = url_encode(&mid);
    let h = json(
        s.get(&format!("Patient/_history?_since={since}"))
            .send()
            .unwrap(),
    );
    assert_eq!(h["total"], 3, "ids[2], ids[3], ids[4]");

    // Page through 2 at a time while new versions are added: no entry seen twice or missed.
    let mut seen = Vec::new();
    let mut url = s.url("Patient/_history?_count=2");
    let mut added = false;
    loop {
        let page = json(reqwest::blocking::get(&url).unwrap());
        for e in page["entry"].as_array().into_iter().flatten() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
        }
        if !added {
            s.create(&patient());
            added = true;
        }
        let next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(
        seen, expected,
        "the pages list the original five, newest first, once each"
    );

    let (st, oo) = status_json(s.get("Patient/_history?_since=yesterday").send().unwrap());
    assert_eq!(st, 400);
    assert_outcome(&oo, "invalid", Some("_since"));
    let (st, _) = status_json(s.get("Patient/nope/_history").send().unwrap());
    assert_eq!(st, 404);
}

fn url_encode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[test]
fn errors_are_operation_outcomes_with_the_right_status() {
    let s = Server::start_with(&["--max-body-bytes", "2048"]);
    let fhir = "application/fhir+json";

    let (st, oo) = status_json(
        s.request("POST", "Patient")
            .header("content-type", fhir)
            .body("{not json")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 400);
    assert_outcome(&oo, "structure", None);

    let (st, oo) = status_json(s.get("Unicorn/1").send().unwrap());
    assert_eq!(st, 404);
    assert_outcome(&oo, "not-found", None);

    let (st, oo) = status_json(s.get("Patient/does-not-exist").send().unwrap());
    assert_eq!(st, 404);
    assert_outcome(&oo, "not-found", None);

    let (st, oo) = status_json(
        s.request("POST", "Patient")
            .header("content-type", "application/fhir+xml")
            .body("<Patient/>")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 415);
    assert_outcome(&oo, "not-supported", None);
    assert!(oo["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("XML"));

    let (st, _) = status_json(
        s.request("POST", "Patient")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 415);

    let (st, oo) = status_json(
        s.get("metadata")
            .header("accept", "application/fhir+xml")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 406);
    assert_outcome(&oo, "not-supported", None);
    let (st, _) = status_json(s.get("metadata?_format=xml").send().unwrap());
    assert_eq!(st, 406);

    let r = s.request("DELETE", "metadata").send().unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    assert_outcome(&json(r), "not-supported", None);

    let mut big = patient();
    big["name"][0]["family"] = json!("x".repeat(4096));
    let (st, oo) = status_json(s.post_json("Patient", &big).send().unwrap());
    assert_eq!(st, 413);
    assert_outcome(&oo, "too-long", None);

    let mut p = patient();
    p["id"] = json!("a");
    let (st, oo) = status_json(s.put_json("Patient/b", &p).send().unwrap());
    assert_eq!(st, 400);
    assert_outcome(&oo, "invalid", Some("Patient.id"));

    let (st, _) = status_json(s.get("Patient/bad%20id").send().unwrap());
    assert_eq!(st, 400);

    let (st, oo) = status_json(s.post_json("Observation", &patient()).send().unwrap());
    assert_eq!(st, 400, "a Patient posted to /Observation");
    assert_outcome(&oo, "invalid", None);
}

#[test]
fn validation_errors_name_the_element_path() {
    let s = Server::start();
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
        let (st, oo) = status_json(s.post_json(t, resource).send().unwrap());
        assert_eq!(st, 400, "{resource} → {oo}");
        assert_outcome(&oo, code, Some(path));
    }
    // Nothing rejected was stored.
    let h = json(s.get("_history").send().unwrap());
    assert_eq!(h["total"], 0);
}

#[test]
fn services_are_isolated_and_routed_by_host() {
    let s = Server::start_with(&["--services", "alpha,beta"]);
    let client = reqwest::blocking::Client::new();
    let on = |svc: &str, method: &str, path: &str| {
        client
            .request(method.parse().unwrap(), s.url(path))
            .header("host", format!("{svc}.azurehealthcareapis.com"))
    };
    let mut p = patient();
    p["id"] = json!("same-id");
    let r = on("alpha", "PUT", "Patient/same-id")
        .header("content-type", "application/fhir+json")
        .body(p.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        on("alpha", "GET", "Patient/same-id")
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        on("beta", "GET", "Patient/same-id")
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        s.get("Patient/same-id").send().unwrap().status(),
        404,
        "default"
    );
    let h = json(on("beta", "GET", "_history").send().unwrap());
    assert_eq!(h["total"], 0);
    let (st, oo) = status_json(on("gamma", "GET", "metadata").send().unwrap());
    assert_eq!(st, 404, "a Host naming no service");
    assert_outcome(&oo, "not-found", None);
}
