//! FHIRPath Patch (FHIR R4 fhirpatch.html): each operation type, the spec's own examples,
//! and the errors, with the malformed (400) / unprocessable (422) distinction.

use fhir_path::patch::{apply, apply_with, PatchError};
use serde_json::{json, Value};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": "http://example.org/mrn", "value": "1"},
            {"system": "http://example.org/ssn", "value": "2"},
            {"system": "http://example.org/other", "value": "3"}
        ],
        "active": true,
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://example.org/birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "deceasedBoolean": false,
        "contact": [{"name": {"text": "Mum"}, "telecom": [{"system": "phone", "value": "555"}]}]
    })
}

/// Builds a one-operation Parameters resource from `(name, value-key, value)` parts.
fn op(parts: &[(&str, &str, Value)]) -> Value {
    ops(&[parts])
}

fn ops(list: &[&[(&str, &str, Value)]]) -> Value {
    let params: Vec<Value> = list
        .iter()
        .map(|parts| {
            let parts: Vec<Value> = parts
                .iter()
                .map(|(n, k, v)| {
                    let mut m = serde_json::Map::new();
                    m.insert("name".into(), json!(n));
                    m.insert((*k).into(), v.clone());
                    Value::Object(m)
                })
                .collect();
            json!({"name": "operation", "part": parts})
        })
        .collect();
    json!({"resourceType": "Parameters", "parameter": params})
}

#[track_caller]
fn check(resource: Value, patch: Value, expected: Value) {
    let mut r = resource;
    apply(&mut r, &patch).unwrap_or_else(|e| panic!("patch failed: {e}"));
    assert_eq!(r, expected);
}

#[track_caller]
fn fails(resource: Value, patch: Value, malformed: bool, message_part: &str) -> PatchError {
    let mut r = resource.clone();
    let e = apply(&mut r, &patch).expect_err("patch should fail");
    assert_eq!(e.is_malformed(), malformed, "{e}");
    assert!(
        e.to_string().contains(message_part),
        "`{e}` lacks `{message_part}`"
    );
    assert_eq!(
        r, resource,
        "a failed patch must leave the resource untouched"
    );
    e
}

fn with(mut base: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut base);
    base
}

// fhirpatch.html example "Add": add birthDate to Patient.
#[test]
fn spec_example_add() {
    let r = json!({"resourceType": "Patient", "id": "x"});
    let p = op(&[
        ("type", "valueCode", json!("add")),
        ("path", "valueString", json!("Patient")),
        ("name", "valueString", json!("birthDate")),
        ("value", "valueDate", json!("1930-01-01")),
    ]);
    check(
        r,
        p,
        json!({"resourceType": "Patient", "id": "x", "birthDate": "1930-01-01"}),
    );
}

// fhirpatch.html example "Insert": insert an identifier at index 1.
#[test]
fn spec_example_insert() {
    let p = op(&[
        ("type", "valueCode", json!("insert")),
        ("path", "valueString", json!("Patient.identifier")),
        ("index", "valueInteger", json!(1)),
        (
            "value",
            "valueIdentifier",
            json!({"system": "http://example.org/new", "value": "n"}),
        ),
    ]);
    let expected = with(patient(), |r| {
        r["identifier"]
            .as_array_mut()
            .unwrap()
            .insert(1, json!({"system": "http://example.org/new", "value": "n"}))
    });
    check(patient(), p, expected);
}

// fhirpatch.html example "Delete".
#[test]
fn spec_example_delete() {
    let p = op(&[
        ("type", "valueCode", json!("delete")),
        (
            "path",
            "valueString",
            json!("Patient.identifier.where(system = 'http://example.org/ssn')"),
        ),
    ]);
    let expected = with(patient(), |r| {
        r["identifier"].as_array_mut().unwrap().remove(1);
    });
    check(patient(), p, expected);
}

// fhirpatch.html example "Replace".
#[test]
fn spec_example_replace() {
    let p = op(&[
        ("type", "valueCode", json!("replace")),
        ("path", "valueString", json!("Patient.birthDate")),
        ("value", "valueDate", json!("1930-01-01")),
    ]);
    let expected = with(patient(), |r| r["birthDate"] = json!("1930-01-01"));
    check(patient(), p, expected);
}

// fhirpatch.html example "Move": move identifier 0 to position 2.
#[test]
fn spec_example_move() {
    let p = op(&[
        ("type", "valueCode", json!("move")),
        ("path", "valueString", json!("Patient.identifier")),
        ("source", "valueInteger", json!(0)),
        ("destination", "valueInteger", json!(2)),
    ]);
    let expected = with(patient(), |r| {
        let a = r["identifier"].as_array_mut().unwrap();
        let v = a.remove(0);
        a.insert(2, v);
    });
    check(patient(), p, expected);
}

// fhirpatch.html: complex values are given as nested parts (adding a contact).
#[test]
fn spec_complex_value_as_parts() {
    let patch = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "contact"},
        {"name": "value", "part": [
            {"name": "name", "valueHumanName": {"text": "a name"}},
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "1"}},
            {"name": "telecom", "valueContactPoint": {"system": "email", "value": "a@b"}}
        ]}
    ]}]});
    let expected = with(patient(), |r| {
        r["contact"].as_array_mut().unwrap().push(json!({
            "name": {"text": "a name"},
            "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]
        }))
    });
    check(patient(), patch, expected);
}

#[test]
fn add_to_repeating_element_appends() {
    let p = op(&[
        ("type", "valueCode", json!("add")),
        ("path", "valueString", json!("Patient.name[0]")),
        ("name", "valueString", json!("given")),
        ("value", "valueString", json!("Jim")),
    ]);
    let expected = with(patient(), |r| {
        r["name"][0]["given"]
            .as_array_mut()
            .unwrap()
            .push(json!("Jim"))
    });
    check(patient(), p, expected);
}

#[test]
fn add_uses_is_array_hook_for_new_lists() {
    let p = op(&[
        ("type", "valueCode", json!("add")),
        ("path", "valueString", json!("Patient")),
        ("name", "valueString", json!("telecom")),
        (
            "value",
            "valueContactPoint",
            json!({"system": "phone", "value": "9"}),
        ),
    ]);
    let mut seen = std::cell::RefCell::new(Vec::new());
    let mut r = patient();
    apply_with(&mut r, &p, &|path| {
        seen.borrow_mut().push(path.to_string());
        path == "Patient.telecom"
    })
    .unwrap();
    assert_eq!(r["telecom"], json!([{"system": "phone", "value": "9"}]));
    assert_eq!(seen.get_mut().as_slice(), ["Patient.telecom"]);
}

#[test]
fn add_to_non_repeating_existing_element_is_unprocessable() {
    let p = op(&[
        ("type", "valueCode", json!("add")),
        ("path", "valueString", json!("Patient")),
        ("name", "valueString", json!("birthDate")),
        ("value", "valueDate", json!("2000-01-01")),
    ]);
    fails(patient(), p, false, "already has a value");
}

#[test]
fn insert_into_missing_list_at_zero_creates_it() {
    let r = json!({"resourceType": "Patient", "name": [{"family": "X"}]});
    let p = op(&[
        ("type", "valueCode", json!("insert")),
        ("path", "valueString", json!("Patient.name[0].given")),
        ("index", "valueInteger", json!(0)),
        ("value", "valueString", json!("A")),
    ]);
    check(
        r,
        p,
        json!({"resourceType": "Patient", "name": [{"family": "X", "given": ["A"]}]}),
    );
}

#[test]
fn insert_out_of_range_is_unprocessable() {
    let p = op(&[
        ("type", "valueCode", json!("insert")),
        ("path", "valueString", json!("Patient.identifier")),
        ("index", "valueInteger", json!(7)),
        ("value", "valueIdentifier", json!({"value": "x"})),
    ]);
    let e = fails(patient(), p, false, "outside the list");
    assert_eq!(e.operation, Some(0));
    assert_eq!(e.path.as_deref(), Some("Patient.identifier"));
}

#[test]
fn delete_nothing_is_a_no_op_and_many_is_an_error() {
    let none = op(&[
        ("type", "valueCode", json!("delete")),
        (
            "path",
            "valueString",
            json!("Patient.identifier.where(system = 'nope')"),
        ),
    ]);
    check(patient(), none, patient());
    let many = op(&[
        ("type", "valueCode", json!("delete")),
        ("path", "valueString", json!("Patient.identifier")),
    ]);
    fails(patient(), many, false, "selects 3 elements");
}

#[test]
fn delete_removes_primitive_extension_and_prunes_empty_containers() {
    let p = op(&[
        ("type", "valueCode", json!("delete")),
        ("path", "valueString", json!("Patient.birthDate")),
    ]);
    let expected = with(patient(), |r| {
        let o = r.as_object_mut().unwrap();
        o.shift_remove("birthDate");
        o.shift_remove("_birthDate");
    });
    check(patient(), p, expected);

    // Deleting the only extension of a primitive removes the emptied `_birthDate`.
    let p = op(&[
        ("type", "valueCode", json!("delete")),
        ("path", "valueString", json!("Patient.birthDate.extension")),
    ]);
    let expected = with(patient(), |r| {
        r.as_object_mut().unwrap().shift_remove("_birthDate");
    });
    check(patient(), p, expected);

    // Deleting the only telecom of the only contact leaves {name} (not empty), then deleting
    // the name leaves an empty contact, which is pruned with its list.
    let patch = ops(&[
        &[
            ("type", "valueCode", json!("delete")),
            ("path", "valueString", json!("Patient.contact.telecom")),
        ],
        &[
            ("type", "valueCode", json!("delete")),
            ("path", "valueString", json!("Patient.contact.name")),
        ],
    ]);
    let expected = with(patient(), |r| {
        r.as_object_mut().unwrap().shift_remove("contact");
    });
    check(patient(), patch, expected);
}

#[test]
fn replace_choice_element_changes_type_suffix() {
    let p = op(&[
        ("type", "valueCode", json!("replace")),
        ("path", "valueString", json!("Patient.deceased")),
        ("value", "valueDateTime", json!("2020-01-01")),
    ]);
    let mut r = patient();
    apply(&mut r, &p).unwrap();
    assert_eq!(r.get("deceasedBoolean"), None);
    assert_eq!(r["deceasedDateTime"], json!("2020-01-01"));
}

#[test]
fn replace_requires_exactly_one_target() {
    let p = op(&[
        ("type", "valueCode", json!("replace")),
        ("path", "valueString", json!("Patient.gender")),
        ("value", "valueCode", json!("male")),
    ]);
    fails(patient(), p, false, "selects 0 elements");
}

#[test]
fn move_out_of_range_is_unprocessable() {
    let p = op(&[
        ("type", "valueCode", json!("move")),
        ("path", "valueString", json!("Patient.identifier")),
        ("source", "valueInteger", json!(0)),
        ("destination", "valueInteger", json!(3)),
    ]);
    fails(patient(), p, false, "outside the list");
}

#[test]
fn operations_apply_in_order_and_atomically() {
    let patch = ops(&[
        &[
            ("type", "valueCode", json!("replace")),
            ("path", "valueString", json!("Patient.active")),
            ("value", "valueBoolean", json!(false)),
        ],
        &[
            ("type", "valueCode", json!("delete")),
            ("path", "valueString", json!("Patient.name.given")),
        ],
    ]);
    // The second operation fails (two givens), so the first must not be visible either.
    let e = fails(patient(), patch, false, "selects 2 elements");
    assert_eq!(e.operation, Some(1));
}

#[test]
fn malformed_patches_are_400() {
    fails(
        patient(),
        json!({"resourceType": "Patient"}),
        true,
        "Parameters",
    );
    fails(
        patient(),
        json!({"resourceType": "Parameters", "parameter": [{"name": "op"}]}),
        true,
        "named 'operation'",
    );
    fails(
        patient(),
        op(&[("path", "valueString", json!("Patient"))]),
        true,
        "no 'type'",
    );
    fails(
        patient(),
        op(&[
            ("type", "valueCode", json!("frobnicate")),
            ("path", "valueString", json!("Patient")),
        ]),
        true,
        "unknown operation type",
    );
    fails(
        patient(),
        op(&[("type", "valueCode", json!("delete"))]),
        true,
        "no 'path'",
    );
    fails(
        patient(),
        op(&[
            ("type", "valueCode", json!("delete")),
            ("path", "valueString", json!("Patient.(")),
        ]),
        true,
        "invalid path",
    );
    fails(
        patient(),
        op(&[
            ("type", "valueCode", json!("add")),
            ("path", "valueString", json!("Patient")),
            ("value", "valueString", json!("x")),
        ]),
        true,
        "requires 'name'",
    );
    fails(
        patient(),
        op(&[
            ("type", "valueCode", json!("insert")),
            ("path", "valueString", json!("Patient.identifier")),
            ("value", "valueString", json!("x")),
        ]),
        true,
        "requires 'index'",
    );
    fails(
        patient(),
        op(&[
            ("type", "valueCode", json!("replace")),
            ("path", "valueString", json!("Patient.active")),
        ]),
        true,
        "requires 'value'",
    );
    fails(
        patient(),
        op(&[
            ("type", "valueCode", json!("move")),
            ("path", "valueString", json!("Patient.identifier")),
            ("source", "valueInteger", json!(0)),
        ]),
        true,
        "requires 'destination'",
    );
    fails(
        patient(),
        op(&[
            ("type", "valueCode", json!("move")),
            ("path", "valueString", json!("Patient.identifier")),
            ("source", "valueString", json!("0")),
            ("destination", "valueInteger", json!(1)),
        ]),
        true,
        "integer",
    );
}

#[test]
fn paths_to_computed_values_are_unprocessable() {
    let p = op(&[
        ("type", "valueCode", json!("delete")),
        ("path", "valueString", json!("Patient.active.not()")),
    ]);
    fails(patient(), p, false, "computed value");
}

#[test]
fn empty_patch_changes_nothing() {
    check(patient(), json!({"resourceType": "Parameters"}), patient());
}
