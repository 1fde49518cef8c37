//! Hostile input (issue #15, defects 1 and 3): expressions and patches that used to overflow
//! the stack or run for seconds are refused with a clear error. Every case runs on a thread
//! with a 2 MiB stack, the size of a tokio worker's, so a limit that only holds on a larger
//! stack fails here.

use fhir_path::patch::{apply, PatchError};
use fhir_path::{evaluate, parse, EvalError};
use serde_json::{json, Value};

/// Runs `f` on a thread with a tokio worker's stack (2 MiB); a stack overflow aborts the
/// test binary, which fails the test.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the test thread panicked")
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "birthDate": "1974-12-25"
    })
}

/// A FHIRPath Patch `replace` of `path` with a string.
fn replace_at(path: &str) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": path},
        {"name": "value", "valueString": "x"}
    ]}]})
}

fn patch(path: String) -> Result<Value, PatchError> {
    let mut p = patient();
    apply(&mut p, &replace_at(&path)).map(|()| p)
}

fn assert_too_deep(expr: String) {
    let e = on_small_stack(move || parse(&expr).map(|_| ()).unwrap_err());
    assert!(e.message.contains("nested too deeply"), "{e}");
}

// Regression: issue #15 defect 1, a FHIRPath Patch whose path is `Patient` + `.name` × 40,000
// (200 KB) overflowed the worker's stack and aborted the process.
#[test]
fn regression_15_1_fhirpath_patch_path_of_40000_segments_is_refused() {
    let path = format!("Patient{}", ".name".repeat(40_000));
    assert_eq!(path.len(), 200_007);
    let e = on_small_stack(move || patch(path).unwrap_err());
    assert!(
        e.is_malformed(),
        "a path too deep to parse is a malformed patch: {e}"
    );
    assert!(e.message.contains("nested too deeply"), "{e}");
}

// Regression: issue #15 defect 1, `Patient.name.where(1+1+…+1 = 1)` with 50,000 terms.
#[test]
fn regression_15_1_fhirpath_sum_of_50000_terms_is_refused() {
    let terms = vec!["1"; 50_000].join("+");
    assert_too_deep(format!("Patient.name.where({terms} = 1)"));
}

// Regression: issue #15 defect 1, `true and true and …` × 50,000.
#[test]
fn regression_15_1_fhirpath_50000_ands_are_refused() {
    assert_too_deep(vec!["true"; 50_000].join(" and "));
}

// Regression: issue #15 defect 1, `Patient.name[0][0]…` × 50,000.
#[test]
fn regression_15_1_fhirpath_50000_indexers_are_refused() {
    assert_too_deep(format!("Patient.name{}", "[0]".repeat(50_000)));
}

// The same shapes as patch paths are malformed patches (400), not crashes.
#[test]
fn regression_15_1_fhirpath_patch_paths_of_50000_terms_are_refused() {
    let sum = format!("Patient.name.where({} = 1)", vec!["1"; 50_000].join("+"));
    let ands = format!("Patient.name.where({})", vec!["true"; 50_000].join(" and "));
    let indexers = format!("Patient.name{}", "[0]".repeat(50_000));
    for path in [sum, ands, indexers] {
        let e = on_small_stack(move || patch(path).unwrap_err());
        assert!(e.is_malformed(), "{e}");
        assert!(e.message.contains("nested too deeply"), "{e}");
    }
}

// Regression: issue #15 defect 3, `.select($this.combine($this))` × 20 doubled the collection
// twenty times (a million items, seconds of work); the evaluation budget stops it early.
#[test]
fn regression_15_3_fhirpath_select_combine_20_times_is_refused() {
    let path = format!("Patient{}", ".select($this.combine($this))".repeat(20));
    let e = on_small_stack(move || patch(path).unwrap_err());
    assert!(
        !e.is_malformed(),
        "a well-formed path that is too costly is a 422: {e}"
    );
    assert!(e.message.contains("too costly"), "{e}");
}

// The budget holds for a plain evaluation too: a collection doubled 40 times (a trillion
// items) is refused, not computed.
#[test]
fn regression_15_3_fhirpath_evaluation_budget_holds_without_patch() {
    let expr = parse(&format!(
        "Patient{}",
        ".select($this.combine($this))".repeat(40)
    ))
    .expect("parses");
    let p = patient();
    let e = evaluate(&expr, &p).unwrap_err();
    assert!(matches!(e, EvalError::TooCostly(_)), "{e}");
}

// Strings double as well as collections: `$this & $this` forty times would be a terabyte.
#[test]
fn regression_15_3_fhirpath_string_doubling_is_refused() {
    let expr = parse(&format!(
        "Patient.name.family{}",
        ".select($this & $this)".repeat(40)
    ))
    .expect("parses");
    let p = patient();
    let e = evaluate(&expr, &p).unwrap_err();
    assert!(matches!(e, EvalError::TooCostly(_)), "{e}");
}

// Expressions just inside the limits still parse and evaluate on a small stack: long but
// reasonable chains, deep parentheses and function nesting.
#[test]
fn expressions_within_the_limits_still_work() {
    on_small_stack(|| {
        let p = patient();
        let sum = vec!["1"; 100].join("+");
        let e = parse(&format!("{sum} = 100")).expect("100 terms parse");
        assert_eq!(
            evaluate(&e, &p).expect("evaluates")[0].to_json(),
            json!(true)
        );
        let ands = vec!["true"; 100].join(" and ");
        let e = parse(&ands).expect("100 ands parse");
        assert_eq!(
            evaluate(&e, &p).expect("evaluates")[0].to_json(),
            json!(true)
        );
        let nested = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        let e = parse(&nested).expect("100 parentheses parse");
        assert_eq!(evaluate(&e, &p).expect("evaluates")[0].to_json(), json!(1));
        let wheres = format!("Patient.name{}.family", ".where(true)".repeat(60));
        let e = parse(&wheres).expect("60 wheres parse");
        assert_eq!(
            evaluate(&e, &p).expect("evaluates")[0].to_json(),
            json!("Chalmers")
        );
        // At the bound itself: 126 nested calls, each evaluated through the function
        // dispatcher, the deepest recursion the evaluator has per level.
        let iifs = format!("{}1{}", "iif(true, ".repeat(126), ", 0)".repeat(126));
        let e = parse(&iifs).expect("126 nested iif parse");
        assert_eq!(evaluate(&e, &p).expect("evaluates")[0].to_json(), json!(1));
        let selects = format!("Patient{}", ".select($this)".repeat(63));
        let e = parse(&selects).expect("63 selects parse");
        assert_eq!(evaluate(&e, &p).expect("evaluates").len(), 1);
        let indexers = format!("Patient.name{}.family", "[0]".repeat(60));
        let e = parse(&indexers).expect("60 indexers parse");
        assert_eq!(
            evaluate(&e, &p).expect("evaluates")[0].to_json(),
            json!("Chalmers")
        );
    });
}

// A FHIRPath Patch may not nest the resource deeper than a JSON parser reads back
// (serde_json stops at 128 levels): a 100-level value added inside another 100-level value
// added by the operation before would be 200 levels deep.
#[test]
fn regression_15_1_fhirpath_patch_cannot_nest_the_resource_without_bound() {
    let deep = |n: usize| {
        let mut v = json!("x");
        for _ in 0..n {
            v = json!({ "a": v });
        }
        v
    };
    let add = |path: String| {
        json!({"name": "operation", "part": [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": path},
            {"name": "name", "valueString": "a"},
            {"name": "value", "resource": deep(100)}
        ]})
    };
    let doc = json!({"resourceType": "Parameters", "parameter": [
        add("Patient".into()),
        add(format!("Patient{}", ".a".repeat(100))),
    ]});
    let e = on_small_stack(move || {
        let mut p = patient();
        apply(&mut p, &doc).unwrap_err()
    });
    assert!(!e.is_malformed(), "{e}");
    assert!(e.message.contains("deeper"), "{e}");
}

// A patch of more operations than the server applies is refused before any is applied,
// as unprocessable (422), not malformed.
#[test]
fn regression_15_3_fhirpath_patch_of_50000_operations_is_refused() {
    let one = json!({"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "1974-12-25"}
    ]});
    let doc = json!({"resourceType": "Parameters", "parameter": vec![one; 50_000]});
    let mut p = patient();
    let e = apply(&mut p, &doc).unwrap_err();
    assert!(!e.is_malformed(), "{e}");
    assert!(e.message.contains("at most 1000"), "{e}");
    assert_eq!(p, patient(), "nothing was applied");
}

// A patch path that builds strings past the patch's string budget is refused as too costly.
#[test]
fn regression_15_3_fhirpath_patch_path_building_strings_is_refused() {
    let path = format!(
        "Patient.name.where(family{} = 'x')",
        ".select($this & $this)".repeat(30)
    );
    let e = on_small_stack(move || patch(path).unwrap_err());
    assert!(!e.is_malformed(), "{e}");
    assert!(e.message.contains("too costly"), "{e}");
}

// Regression (found by fuzzing, fuzz target `fhirpath`): an integer literal of 106 digits
// made Decimal::parse and Decimal::from_f64 call each other without end (the f64 text of
// 6.66…e105 has 106 digits again) until the stack overflowed and the process aborted; any
// FHIRPath Patch path or search could carry one.
#[test]
fn regression_15_fuzz_a_106_digit_number_literal_does_not_recurse_without_end() {
    on_small_stack(|| {
        let src = format!("'123'.replace('2', {{}}).empty({}) = true", "6".repeat(106));
        // Refused or evaluated, but answered.
        let _ = fhir_path::parse(&src);
        for digits in [37, 40, 106, 400] {
            let n = "9".repeat(digits);
            let _ = fhir_path::parse(&n);
            let _ = fhir_path::parse(&format!("0.{n}"));
            let _ = fhir_path::parse(&format!("{n}.{n}"));
        }
    });
}
