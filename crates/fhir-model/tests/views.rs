//! The `_summary` and `_elements` views (FHIR R4 §3.1.1.5.10-11 search.html#summary, #elements).

use fhir_model::{r4, Summary};
use serde_json::{json, Value};

const SUBSETTED: &str =
    r#"{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED"}"#;

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "2"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">P</div>"},
        "extension": [{"url": "http://example.org/x", "valueString": "y"}],
        "identifier": [{"value": "1"}],
        "name": [{"family": "Chalmers"}],
        "gender": "male",
        "_gender": {"id": "g"},
        "birthDate": "1974-12-25",
        "contact": [{"name": {"family": "Du Marché"}}],
        "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}]
    })
}

/// The view's keys in order, and its meta.
#[track_caller]
fn check(view: &Value, keys: &[&str], meta: &str) {
    let got: Vec<&str> = view
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(got, keys);
    assert_eq!(view["meta"].to_string(), meta);
}

#[test]
fn summary_true_keeps_summary_elements_and_marks_subsetted() {
    let v = r4().summarize(&patient(), Summary::True);
    check(
        &v,
        &[
            "resourceType",
            "id",
            "meta",
            "identifier",
            "name",
            "gender",
            "_gender",
            "birthDate",
            "link",
        ],
        &format!(r#"{{"versionId":"2","tag":[{SUBSETTED}]}}"#),
    );
    // Backbone elements are summarized too: Patient.link.other and .type are both summary.
    assert_eq!(v["link"], patient()["link"]);
}

#[test]
fn summary_true_recurses_into_backbone_elements() {
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "component": [{"code": {"text": "c"}, "valueString": "v", "interpretation": [{"text": "high"}]}]});
    let v = r4().summarize(&obs, Summary::True);
    // Observation.component.interpretation is not a summary element; code and value[x] are.
    assert_eq!(
        v["component"],
        json!([{"code": {"text": "c"}, "valueString": "v"}])
    );
}

#[test]
fn summary_text_keeps_text_id_meta_and_mandatory_elements() {
    let v = r4().summarize(&patient(), Summary::Text);
    check(
        &v,
        &["resourceType", "id", "meta", "text"],
        &format!(r#"{{"versionId":"2","tag":[{SUBSETTED}]}}"#),
    );
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": "v"});
    let v = r4().summarize(&obs, Summary::Text);
    check(
        &v,
        &["resourceType", "meta", "status", "code"],
        &format!(r#"{{"tag":[{SUBSETTED}]}}"#),
    );
}

#[test]
fn summary_data_drops_text_only() {
    let v = r4().summarize(&patient(), Summary::Data);
    let mut expected = patient();
    expected.as_object_mut().unwrap().shift_remove("text");
    expected["meta"]["tag"] = serde_json::from_str(&format!("[{SUBSETTED}]")).unwrap();
    assert_eq!(v, expected);
}

#[test]
fn summary_false_and_count_return_the_resource_unchanged() {
    assert_eq!(r4().summarize(&patient(), Summary::False), patient());
    assert_eq!(r4().summarize(&patient(), Summary::Count), patient());
}

#[test]
fn elements_keeps_the_listed_top_level_elements_and_the_modifiers() {
    let v = r4().select_elements(&patient(), &["gender".into(), "name".into()]);
    // Patient.link is a modifier (this may not be the main record of the person).
    check(
        &v,
        &[
            "resourceType",
            "id",
            "meta",
            "name",
            "gender",
            "_gender",
            "link",
        ],
        &format!(r#"{{"versionId":"2","tag":[{SUBSETTED}]}}"#),
    );
}

// Regression (issue #14): `Observation?_elements=code` dropped the mandatory `status`, so the
// result was not a valid Observation (search.html#elements: servers SHOULD return all
// mandatory elements and modifiers).
#[test]
fn elements_keeps_mandatory_elements_and_modifiers() {
    let obs = json!({"resourceType": "Observation", "id": "o", "status": "final",
        "category": [{"text": "vital-signs"}], "code": {"text": "x"}, "valueString": "v",
        "modifierExtension": [{"url": "http://example.org/m", "valueBoolean": true}]});
    let v = r4().select_elements(&obs, &["code".into()]);
    check(
        &v,
        &[
            "resourceType",
            "id",
            "meta",
            "status",
            "code",
            "modifierExtension",
        ],
        &format!(r#"{{"tag":[{SUBSETTED}]}}"#),
    );
    assert!(r4().validate(&v).is_empty(), "{:?}", r4().validate(&v));
}

#[test]
fn summary_true_keeps_modifiers_and_mandatory_elements_of_backbone_elements() {
    // Patient.active and .deceased[x] are modifiers; both are summary in R4 as well, which is
    // why R4's isSummary alone nearly sufficed. Observation.component.code is mandatory.
    let p = json!({"resourceType": "Patient", "active": false, "deceasedBoolean": true,
        "contact": [{"name": {"family": "x"}}]});
    let v = r4().summarize(&p, Summary::True);
    check(
        &v,
        &["resourceType", "meta", "active", "deceasedBoolean"],
        &format!(r#"{{"tag":[{SUBSETTED}]}}"#),
    );
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "component": [{"code": {"text": "c"}, "interpretation": [{"text": "high"}]}]});
    let v = r4().summarize(&obs, Summary::True);
    assert_eq!(v["component"], json!([{"code": {"text": "c"}}]));
    assert!(r4().validate(&v).is_empty());
}

#[test]
fn elements_selects_a_choice_by_its_element_name() {
    let obs = json!({"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
        "valueQuantity": {"value": 1}, "effectiveDateTime": "2020"});
    let v = r4().select_elements(&obs, &["value".into()]);
    assert_eq!(v, r4().select_elements(&obs, &["Observation.value".into()]));
    check(
        &v,
        &[
            "resourceType",
            "id",
            "meta",
            "status",
            "code",
            "valueQuantity",
        ],
        &format!(r#"{{"tag":[{SUBSETTED}]}}"#),
    );
}

#[test]
fn subsetted_is_not_added_twice() {
    let once = r4().select_elements(&patient(), &["name".into()]);
    let twice = r4().select_elements(&once, &["name".into()]);
    assert_eq!(once, twice);
}
