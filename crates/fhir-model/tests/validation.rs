//! Validation of resource JSON: what FHIR R4 json.html and the StructureDefinitions allow,
//! and the exact `expression` of each issue for what they forbid.

use fhir_model::{r4, Issue, IssueCode};
use serde_json::{json, Value};

fn issues(resource: &Value) -> Vec<Issue> {
    r4().validate(resource)
}

/// The resource is valid.
#[track_caller]
fn valid(resource: Value) {
    let found = issues(&resource);
    assert!(found.is_empty(), "expected valid, got {found:#?}");
}

/// The resource gives exactly these (code, expression) issues, in order.
#[track_caller]
fn check(resource: Value, expected: &[(IssueCode, &str)]) {
    let found = issues(&resource);
    let got: Vec<(IssueCode, &str)> = found
        .iter()
        .map(|i| (i.code, i.expression.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(got, expected, "issues: {found:#?}");
    for i in &found {
        assert!(i.is_error(), "{i:?}");
        assert!(!i.diagnostics.is_empty());
    }
}

/// One issue at `expression` with this code.
#[track_caller]
fn check1(resource: Value, code: IssueCode, expression: &str) {
    check(resource, &[(code, expression)]);
}

fn patient(extra: Value) -> Value {
    let mut p = json!({"resourceType": "Patient", "id": "p1"});
    if let (Value::Object(p), Value::Object(extra)) = (&mut p, extra) {
        p.extend(extra);
    }
    p
}

// ---- resources and resourceType (json.html#resources) ----

#[test]
fn a_resource_is_an_object_with_a_known_resource_type() {
    valid(json!({"resourceType": "Patient"}));
    check1(json!([1]), IssueCode::Invalid, "");
    check1(json!("Patient"), IssueCode::Invalid, "");
    check1(json!({"id": "x"}), IssueCode::Required, "");
    check1(
        json!({"resourceType": 5}),
        IssueCode::Invalid,
        "resourceType",
    );
}

#[test]
fn unknown_resource_type_is_distinguishable() {
    let found = issues(&json!({"resourceType": "Patiente", "id": "x"}));
    assert_eq!(found.len(), 1);
    assert!(found[0].is_unknown_resource_type());
    assert_eq!(found[0].code, IssueCode::Invalid);
    assert_eq!(found[0].diagnostics, "Unknown resource type 'Patiente'");
    // Abstract types are not resource types a server stores.
    assert!(issues(&json!({"resourceType": "DomainResource"}))[0].is_unknown_resource_type());
    // A nested resource of unknown type is an ordinary invalid resource.
    let found = issues(&json!({"resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {"resourceType": "Nope"}}]}));
    assert_eq!(found.len(), 1);
    assert!(!found[0].is_unknown_resource_type());
    assert_eq!(
        found[0].expression.as_deref(),
        Some("Bundle.entry[0].resource.resourceType")
    );
}

#[test]
fn resource_type_is_allowed_only_at_resource_roots() {
    check1(
        patient(json!({"name": [{"family": "X", "resourceType": "HumanName"}]})),
        IssueCode::Structure,
        "Patient.name[0].resourceType",
    );
    // ExampleScenario.instance has an element of that name.
    valid(json!({"resourceType": "ExampleScenario", "status": "draft",
        "instance": [{"resourceId": "a", "resourceType": "Patient"}]}));
}

// ---- property names (json.html#xml: every property is an element) ----

#[test]
fn unknown_elements_are_rejected_where_they_appear() {
    check1(
        patient(json!({"foo": 1})),
        IssueCode::Structure,
        "Patient.foo",
    );
    check1(
        patient(json!({"name": [{"family": "A"}, {"given": ["B"], "nickname": "C"}]})),
        IssueCode::Structure,
        "Patient.name[1].nickname",
    );
    check1(
        patient(json!({"contact": [{"name": {"family": "A"}, "bogus": true}]})),
        IssueCode::Structure,
        "Patient.contact[0].bogus",
    );
}

#[test]
fn choice_elements_take_only_their_allowed_types() {
    let obs = |v: Value| {
        let mut o =
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
        if let (Value::Object(o), Value::Object(v)) = (&mut o, v) {
            o.extend(v);
        }
        o
    };
    valid(obs(json!({"valueQuantity": {"value": 1.5, "unit": "mg"}})));
    valid(obs(json!({"valueString": "x"})));
    valid(obs(
        json!({"valueBoolean": false, "effectiveDateTime": "2020-01-01"}),
    ));
    check1(
        obs(json!({"valueReference": {"reference": "Patient/1"}})),
        IssueCode::Structure,
        "Observation.valueReference",
    );
    check1(
        obs(json!({"value": "x"})),
        IssueCode::Structure,
        "Observation.value",
    );
    check1(
        obs(json!({"valuestring": "x"})),
        IssueCode::Structure,
        "Observation.valuestring",
    );
    check1(
        obs(json!({"valueString": "x", "valueBoolean": true})),
        IssueCode::Structure,
        "Observation.valueBoolean",
    );
}

#[test]
fn content_references_reuse_the_referenced_definition() {
    // Questionnaire.item.item is #Questionnaire.item.
    valid(
        json!({"resourceType": "Questionnaire", "status": "draft", "item": [
            {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "item": [{"linkId": "1.1.1", "type": "display"}]}]}
        ]}),
    );
    check(
        json!({"resourceType": "Questionnaire", "status": "draft", "item": [
            {"linkId": "1", "type": "group", "item": [{"type": "string", "prefix": "a", "colour": "red"}]}
        ]}),
        &[
            (IssueCode::Structure, "Questionnaire.item[0].item[0].colour"),
            (IssueCode::Required, "Questionnaire.item[0].item[0].linkId"),
        ],
    );
}

// ---- cardinality (json.html#arrays, StructureDefinition min/max) ----

#[test]
fn required_elements_must_be_present() {
    check(
        json!({"resourceType": "Observation", "id": "o"}),
        &[
            (IssueCode::Required, "Observation.status"),
            (IssueCode::Required, "Observation.code"),
        ],
    );
    check1(
        json!({"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "x"}]},
               "component": [{"valueString": "x"}]}),
        IssueCode::Required,
        "Observation.component[0].code",
    );
}

#[test]
fn a_primitive_extension_alone_satisfies_a_required_element() {
    valid(json!({"resourceType": "Observation", "code": {"text": "x"},
        "_status": {"extension": [{"url": "http://example.org/why", "valueString": "unknown"}]}}));
}

#[test]
fn repeating_elements_are_arrays_and_single_ones_are_not() {
    check1(
        patient(json!({"name": {"family": "A"}})),
        IssueCode::Structure,
        "Patient.name",
    );
    check1(
        patient(json!({"gender": ["male"]})),
        IssueCode::Structure,
        "Patient.gender",
    );
    check1(
        patient(json!({"name": [{"given": "A"}]})),
        IssueCode::Structure,
        "Patient.name[0].given",
    );
}

#[test]
fn empty_objects_arrays_strings_and_nulls_are_invalid() {
    check1(
        patient(json!({"maritalStatus": {}})),
        IssueCode::Structure,
        "Patient.maritalStatus",
    );
    check1(
        patient(json!({"name": []})),
        IssueCode::Structure,
        "Patient.name",
    );
    check1(
        patient(json!({"gender": ""})),
        IssueCode::Value,
        "Patient.gender",
    );
    check1(
        patient(json!({"gender": null})),
        IssueCode::Structure,
        "Patient.gender",
    );
    check1(
        patient(json!({"name": [{"given": ["A", null]}]})),
        IssueCode::Structure,
        "Patient.name[0].given[1]",
    );
    check1(
        patient(json!({"name": [null]})),
        IssueCode::Structure,
        "Patient.name[0]",
    );
}

// ---- primitive types (json.html#primitive, datatypes.html) ----

#[test]
fn primitives_have_the_json_kind_of_their_type() {
    check1(
        patient(json!({"active": "true"})),
        IssueCode::Structure,
        "Patient.active",
    );
    check1(
        patient(json!({"multipleBirthInteger": "2"})),
        IssueCode::Structure,
        "Patient.multipleBirthInteger",
    );
    check1(
        patient(json!({"gender": 1})),
        IssueCode::Structure,
        "Patient.gender",
    );
    check1(
        patient(json!({"name": [{"family": "A"}, {"given": [7]}]})),
        IssueCode::Structure,
        "Patient.name[1].given[0]",
    );
    check1(
        patient(json!({"maritalStatus": "M"})),
        IssueCode::Structure,
        "Patient.maritalStatus",
    );
    check1(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "1.5"}}),
        IssueCode::Structure,
        "Observation.valueQuantity.value",
    );
}

#[test]
fn primitive_values_follow_their_type_rules() {
    let num = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    check1(
        patient(json!({"birthDate": "1990-13-01"})),
        IssueCode::Value,
        "Patient.birthDate",
    );
    check1(
        patient(json!({"birthDate": "1990-02-30"})),
        IssueCode::Value,
        "Patient.birthDate",
    );
    check1(
        patient(json!({"deceasedDateTime": "2020-01-01T10:00:00"})),
        IssueCode::Value,
        "Patient.deceasedDateTime",
    );
    check1(
        patient(json!({"meta": {"lastUpdated": "2020-01-01"}})),
        IssueCode::Value,
        "Patient.meta.lastUpdated",
    );
    check1(
        json!({"resourceType": "Patient", "id": "a_b"}),
        IssueCode::Value,
        "Patient.id",
    );
    check1(
        patient(json!({"implicitRules": "http://a b"})),
        IssueCode::Value,
        "Patient.implicitRules",
    );
    check1(
        patient(json!({"gender": "fe  male"})),
        IssueCode::Value,
        "Patient.gender",
    );
    check1(
        patient(json!({"multipleBirthInteger": num("2147483648")})),
        IssueCode::Value,
        "Patient.multipleBirthInteger",
    );
    check1(
        patient(json!({"multipleBirthInteger": num("2.0")})),
        IssueCode::Value,
        "Patient.multipleBirthInteger",
    );
    check1(
        patient(json!({"photo": [{"data": "not base64!"}]})),
        IssueCode::Value,
        "Patient.photo[0].data",
    );
    check1(
        patient(json!({"photo": [{"size": -1}]})),
        IssueCode::Value,
        "Patient.photo[0].size",
    );
    check1(
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/1"},
               "dosageInstruction": [{"timing": {"repeat": {"frequency": 0}}}]}),
        IssueCode::Value,
        "MedicationRequest.dosageInstruction[0].timing.repeat.frequency",
    );
    valid(patient(
        json!({"birthDate": "1990", "deceasedDateTime": "2020-02-29T23:59:60.5+14:00",
        "meta": {"lastUpdated": "2020-01-01T00:00:00Z", "versionId": "1"}, "multipleBirthInteger": num("-3"),
        "photo": [{"data": "aGVsbG8=", "size": 0}]}),
    ));
}

#[test]
fn decimals_keep_their_lexical_form() {
    let obs: Value = serde_json::from_str(
        r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50e-3}}"#,
    )
    .unwrap();
    valid(obs);
}

// ---- primitive extensions (json.html#primitive: `_name`) ----

#[test]
fn primitive_extensions_sit_beside_their_primitive() {
    let ext = json!({"extension": [{"url": "http://example.org/x", "valueString": "y"}]});
    valid(patient(
        json!({"birthDate": "1990", "_birthDate": ext.clone()}),
    ));
    valid(patient(json!({"_birthDate": {"id": "b"}})));
    valid(patient(
        json!({"name": [{"given": ["A", null, "C"], "_given": [null, ext.clone(), null]}]}),
    ));
    valid(patient(json!({"name": [{"_given": [ext.clone()]}]})));
    check1(
        patient(json!({"name": [{"_given": [ext.clone(), null]}]})),
        IssueCode::Structure,
        "Patient.name[0]._given[1]",
    );
    check1(
        patient(json!({"_birthDate": [ext.clone()]})),
        IssueCode::Structure,
        "Patient._birthDate",
    );
    check1(
        patient(json!({"_name": ext.clone()})),
        IssueCode::Structure,
        "Patient._name",
    );
    check1(
        patient(json!({"_birthDate": {"foo": 1}})),
        IssueCode::Structure,
        "Patient._birthDate.foo",
    );
    check1(
        patient(json!({"name": [{"given": ["A", "B"], "_given": [ext.clone()]}]})),
        IssueCode::Structure,
        "Patient.name[0]._given",
    );
    check1(
        patient(json!({"name": [{"given": ["A", null], "_given": [ext, null]}]})),
        IssueCode::Structure,
        "Patient.name[0].given[1]",
    );
}

// ---- extensions (extensibility.html) ----

#[test]
fn extensions_need_a_url_and_take_any_value_type() {
    valid(patient(json!({"extension": [
        {"url": "http://example.org/a", "valueHumanName": {"family": "X"}},
        {"url": "http://example.org/b", "extension": [{"url": "c", "valueCode": "d"}]}
    ]})));
    check1(
        patient(json!({"extension": [{"valueString": "x"}]})),
        IssueCode::Required,
        "Patient.extension[0].url",
    );
    check1(
        patient(json!({"modifierExtension": [{"url": "http://example.org/a", "valueFoo": 1}]})),
        IssueCode::Structure,
        "Patient.modifierExtension[0].valueFoo",
    );
}

// ---- nested resources: contained, Bundle.entry.resource, Parameters ----

#[test]
fn contained_resources_are_validated_as_resources() {
    valid(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "contained": [{"resourceType": "Patient", "id": "p"}], "subject": {"reference": "#p"}}),
    );
    check1(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "contained": [{"resourceType": "Medication", "id": "m", "code": "aspirin"}]}),
        IssueCode::Structure,
        "Observation.contained[0].code",
    );
    check1(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "contained": [{"id": "m"}]}),
        IssueCode::Required,
        "Observation.contained[0]",
    );
}

#[test]
fn bundle_entries_are_validated_as_resources() {
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    check1(
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "resource": obs.clone(),
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": 5, "code": {"text": "x"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]}),
        IssueCode::Structure,
        "Bundle.entry[2].resource.status",
    );
    check(
        json!({"resourceType": "Parameters", "parameter": [{"name": "r", "resource": {"resourceType": "Observation"}}]}),
        &[
            (
                IssueCode::Required,
                "Parameters.parameter[0].resource.status",
            ),
            (IssueCode::Required, "Parameters.parameter[0].resource.code"),
        ],
    );
}

// ---- robustness ----

#[test]
fn weird_json_gives_issues_not_panics() {
    let mut deep = json!({"family": "x"});
    for _ in 0..200 {
        deep = json!({"extension": [{"url": "u", "valueHumanName": deep}]});
    }
    assert!(!issues(&patient(json!({"name": [deep]}))).is_empty());
    for v in [
        json!(null),
        json!(1),
        json!({}),
        json!({"resourceType": ""}),
        json!({"resourceType": "Patient", "": 1}),
        json!({"resourceType": "Patient", "_": 1}),
        json!({"resourceType": "Patient", "_id": [[]]}),
        json!({"resourceType": "Patient", "name": [[[]]]}),
        json!({"resourceType": "Patient", "contained": [1, null, {}]}),
    ] {
        assert!(!issues(&v).is_empty(), "{v}");
    }
}

// ---- diagnostics ----

#[test]
fn diagnostics_name_the_element_and_the_problem() {
    let first = |v: Value| issues(&v).remove(0).diagnostics;
    assert_eq!(
        first(patient(json!({"foo": 1}))),
        "Unknown element 'foo' in Patient"
    );
    assert_eq!(
        first(json!({"resourceType": "Observation", "code": {"text": "x"}})),
        "Missing required element Observation.status (minimum cardinality 1)"
    );
    assert_eq!(
        first(patient(json!({"birthDate": "1990-13-01"}))),
        "Invalid date '1990-13-01' at Patient.birthDate: the value has a month outside 01-12"
    );
    assert_eq!(
        first(patient(json!({"active": "true"}))),
        "Patient.active is a FHIR boolean and must be a JSON boolean (true or false), not a string"
    );
    assert_eq!(
        first(patient(json!({"name": {"family": "A"}}))),
        "Patient.name must be a JSON array (maximum cardinality *), not an object"
    );
    assert_eq!(
        first(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueFoo": 1})
        ),
        "'valueFoo' is not one of the allowed types of the choice element Observation.value[x]"
    );
}

// ---- required bindings (terminologies.html#required) ----

// Regression (issue #15, defect 8): `"gender": "banana"` was stored.
#[test]
fn regression_15_8_required_binding_codes_must_be_in_the_value_set() {
    valid(patient(json!({"gender": "female"})));
    check1(
        patient(json!({"gender": "banana"})),
        IssueCode::CodeInvalid,
        "Patient.gender",
    );
    // In a datatype (ContactPoint.system, HumanName.use) and in a nested resource.
    check(
        patient(
            json!({"telecom": [{"system": "phone"}, {"system": "pager2"}],
            "name": [{"use": "nick"}]}),
        ),
        &[
            (IssueCode::CodeInvalid, "Patient.telecom[1].system"),
            (IssueCode::CodeInvalid, "Patient.name[0].use"),
        ],
    );
    check1(
        json!({"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "gender": "banana"}}]}),
        IssueCode::CodeInvalid,
        "Bundle.entry[0].resource.gender",
    );
    check1(
        json!({"resourceType": "Bundle", "type": "sometimes"}),
        IssueCode::CodeInvalid,
        "Bundle.type",
    );
    let found = issues(&patient(json!({"gender": "banana"})));
    assert!(
        found[0].diagnostics.contains("banana")
            && found[0]
                .diagnostics
                .contains("http://hl7.org/fhir/ValueSet/administrative-gender"),
        "{found:?}"
    );
}

#[test]
fn regression_15_8_required_binding_concepts_need_a_coding_from_the_value_set() {
    let condition = |status: Value| {
        json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
            "clinicalStatus": status})
    };
    let cc = "http://terminology.hl7.org/CodeSystem/condition-clinical";
    valid(condition(
        json!({"coding": [{"system": cc, "code": "active"}]}),
    ));
    // One coding from the value set is enough.
    valid(condition(
        json!({"coding": [{"system": "http://example.org", "code": "x"}, {"system": cc, "code": "resolved"}]}),
    ));
    check1(
        condition(json!({"coding": [{"system": cc, "code": "banana"}]})),
        IssueCode::CodeInvalid,
        "Condition.clinicalStatus",
    );
    check1(
        condition(json!({"coding": [{"system": "http://example.org", "code": "active"}]})),
        IssueCode::CodeInvalid,
        "Condition.clinicalStatus",
    );
    // What cannot be checked exactly is left alone: text only, a coding without a system.
    valid(condition(json!({"text": "active"})));
    valid(condition(
        json!({"coding": [{"code": "banana"}, {"system": cc, "code": "banana"}]}),
    ));
}

#[test]
fn required_bindings_without_a_complete_expansion_are_not_checked() {
    // mimetypes (BCP 13) has no enumerable expansion; units-of-time is drawn from UCUM.
    valid(patient(json!({"photo": [{"contentType": "x-made/up"}]})));
    valid(
        json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/1"},
        "dosageInstruction": [{"timing": {"repeat": {"duration": 1, "durationUnit": "fortnight"}}}]}),
    );
}
