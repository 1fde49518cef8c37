//! Data-driven tests of the FHIRPath evaluator, named after the sections of the FHIRPath N1
//! specification (and FHIR R4 §2.1.9 for the FHIR-specific parts) they exercise.

use fhir_path::{evaluate, parse, Item, PathSegment};
use serde_json::{json, Value};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "example",
        "contained": [{"resourceType": "Organization", "id": "org1", "name": "Acme"}],
        "extension": [
            {"url": "http://example.org/ext/eye-colour", "valueString": "blue"},
            {"url": "http://example.org/ext/height", "valueQuantity": {"value": 180, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}}
        ],
        "active": true,
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"]}
        ],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "deceasedBoolean": false,
        "managingOrganization": {"reference": "#org1"},
        "generalPractitioner": [{"reference": "Practitioner/p1"}, {"reference": "http://example.org/fhir/Organization/o2/_history/3"}]
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": "2016-03-28T09:30:10+01:00",
        "valueQuantity": {"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"},
        "component": [
            {"code": {"text": "systolic"}, "valueQuantity": {"value": 107.0, "code": "mm[Hg]"}},
            {"code": {"text": "note"}, "valueString": "hello"}
        ]
    })
}

/// Renders a result the way the spec's examples write them: primitives by `toString()`,
/// complex nodes as compact JSON.
fn render(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i.to_primitive() {
            Some(p) => p.to_string(),
            None => i.to_json().to_string(),
        })
        .collect()
}

#[track_caller]
fn check(expr: &str, resource: &Value, expected: &[&str]) {
    let e = parse(expr).unwrap_or_else(|err| panic!("parse `{expr}`: {err}"));
    let got = evaluate(&e, resource).unwrap_or_else(|err| panic!("eval `{expr}`: {err}"));
    assert_eq!(render(&got), expected, "`{expr}`");
}

#[track_caller]
fn check_true(expr: &str) {
    check(expr, &patient(), &["true"]);
}

#[track_caller]
fn check_empty(expr: &str) {
    check(expr, &patient(), &[]);
}

#[track_caller]
fn check_paths(expr: &str, resource: &Value, expected: &[&str]) {
    let e = parse(expr).unwrap();
    let got = evaluate(&e, resource).unwrap();
    let paths: Vec<String> = got
        .iter()
        .map(|i| match i.path() {
            Some(p) => p.iter().map(PathSegment::to_string).collect::<String>(),
            None => "<computed>".into(),
        })
        .collect();
    assert_eq!(paths, expected, "`{expr}`");
}

#[track_caller]
fn parse_fails(expr: &str) {
    assert!(parse(expr).is_err(), "`{expr}` should not parse");
}

#[track_caller]
fn eval_fails(expr: &str) {
    let e = parse(expr).unwrap();
    assert!(evaluate(&e, &patient()).is_err(), "`{expr}` should fail");
}

// §3 Path selection, with FHIR JSON arrays flattened.
#[test]
fn s3_path_selection() {
    let p = patient();
    check("Patient.name.given", &p, &["Peter", "James", "Jim"]);
    check("name.given", &p, &["Peter", "James", "Jim"]);
    check("Patient.name.family", &p, &["Chalmers"]);
    check("Observation.status", &p, &[]);
    check("Patient.`gender`", &p, &["male"]);
    check("Resource.id", &p, &["example"]);
    check("DomainResource.id", &p, &["example"]);
}

// The evaluator reports where each node lives, for FHIRPath Patch.
#[test]
fn node_locations() {
    let p = patient();
    check_paths(
        "Patient.name.given",
        &p,
        &[
            ".name[0].given[0]",
            ".name[0].given[1]",
            ".name[1].given[0]",
        ],
    );
    check_paths("Patient.name.where(use = 'usual')", &p, &[".name[1]"]);
    check_paths("Patient.birthDate", &p, &[".birthDate"]);
    check_paths("Patient.deceased", &p, &[".deceasedBoolean"]);
    check_paths(
        "Patient.birthDate.extension",
        &p,
        &["._birthDate.extension[0]"],
    );
    check_paths("Patient", &p, &[""]);
    check_paths(
        "Patient.name.given.first() | 'x'",
        &p,
        &[".name[0].given[0]", "<computed>"],
    );
}

// FHIR R4 §2.1.9.1: choice elements are named without their type suffix.
#[test]
fn fhir_choice_elements() {
    let o = observation();
    check("Observation.value.value", &o, &["185"]);
    check("Observation.value.unit", &o, &["lbs"]);
    check("Observation.value is Quantity", &o, &["true"]);
    check("Observation.value.is(Quantity)", &o, &["true"]);
    check("Observation.value as Quantity", &o, &["185 '[lb_av]'"]);
    check("(Observation.value as String).exists()", &o, &["false"]);
    check("Observation.component.value.ofType(string)", &o, &["hello"]);
    check(
        "Observation.component.value.ofType(Quantity).value",
        &o,
        &["107.0"],
    );
    check(
        "Observation.effective > @2016-01-01T00:00:00Z",
        &o,
        &["true"],
    );
    check("Observation.value > 100 '[lb_av]'", &o, &["true"]);
}

// FHIR JSON §2.6.2.1: primitive extensions in `_x` siblings.
#[test]
fn fhir_primitive_extensions() {
    let p = patient();
    check(
        "Patient.birthDate.extension.url",
        &p,
        &["http://hl7.org/fhir/StructureDefinition/patient-birthTime"],
    );
    check("Patient.birthDate.extension('http://hl7.org/fhir/StructureDefinition/patient-birthTime').value", &p, &["1974-12-25T14:35:45-05:00"]);
    check("Patient.birthDate.hasValue()", &p, &["true"]);
    let only_ext = json!({"resourceType": "Patient", "_gender": {"extension": [{"url": "u", "valueCode": "x"}]}});
    check("Patient.gender.exists()", &only_ext, &["true"]);
    check("Patient.gender.hasValue()", &only_ext, &["false"]);
    check("Patient.gender.extension.value", &only_ext, &["x"]);
    let arr = json!({"resourceType": "Patient", "name": [{"given": ["A", null], "_given": [null, {"id": "g2"}]}]});
    check("Patient.name.given.count()", &arr, &["2"]);
    check("Patient.name.given.id", &arr, &["g2"]);
}

// FHIR R4 §2.1.9.2: extension(url), resolve(), hasValue(), getValue().
#[test]
fn fhir_additional_functions() {
    let p = patient();
    check(
        "Patient.extension('http://example.org/ext/eye-colour').value",
        &p,
        &["blue"],
    );
    check(
        "Patient.extension('http://example.org/ext/height').value.value",
        &p,
        &["180"],
    );
    check("Patient.managingOrganization.resolve().name", &p, &["Acme"]);
    check(
        "Patient.managingOrganization.resolve() is Organization",
        &p,
        &["true"],
    );
    check(
        "Patient.generalPractitioner.select(resolve().is(Practitioner))",
        &p,
        &["true", "false"],
    );
    check(
        "Patient.generalPractitioner.where(resolve() is Organization).reference",
        &p,
        &["http://example.org/fhir/Organization/o2/_history/3"],
    );
    check("Patient.gender.getValue()", &p, &["male"]);
    check("Patient.name.hasValue()", &p, &["false"]);
}

// §4 Literals.
#[test]
fn s4_literals() {
    check_true("true");
    check_true("'a\\'b' = 'a' + '\\'' + 'b'");
    check_true("'\\u0041' = 'A'");
    check("1.50", &patient(), &["1.50"]);
    check(
        "@2015-02-04T14:34:28Z",
        &patient(),
        &["2015-02-04T14:34:28Z"],
    );
    check("@2015-02", &patient(), &["2015-02"]);
    check("@T14:34", &patient(), &["14:34"]);
    check("5 'mg'", &patient(), &["5 'mg'"]);
    check("4 days", &patient(), &["4 day"]);
    check("{}", &patient(), &[]);
    check_true("@2015.is(Date)");
    check_true("@2015T.is(DateTime)");
    check_true("@T10.is(Time)");
}

// §6 Operations: precedence and associativity.
#[test]
fn s6_precedence() {
    check("1 + 2 * 3", &patient(), &["7"]);
    check("(1 + 2) * 3", &patient(), &["9"]);
    check("10 - 4 - 3", &patient(), &["3"]);
    check("-2.abs()", &patient(), &["-2"]);
    check("(-2).abs()", &patient(), &["2"]);
    check_true("1 < 2 and 2 < 3");
    check_true("1 | 2 = 1 | 2");
    check_true("true or false and false");
    check_true("false implies false");
    check_true("(true xor false) = true");
    check("7 div 2", &patient(), &["3"]);
    check("7 mod 2", &patient(), &["1"]);
    check("7 / 2", &patient(), &["3.5"]);
    check("1 / 3", &patient(), &["0.33333333"]);
    check("0.1 + 0.2", &patient(), &["0.3"]);
    check_empty("5 / 0");
    check("'a' & {} & 'b'", &patient(), &["ab"]);
    check_empty("'a' + {}");
    check_true("Patient.name.given.count() > 2 and Patient.active");
}

// §6.1 Equality and equivalence.
#[test]
fn s6_1_equality() {
    check_true("1 = 1.0");
    check_true("'abc' != 'ABC'");
    check_true("'abc' ~ 'ABC'");
    check_true("' a  b ' ~ 'a b'");
    check_true("1.2 ~ 1.23");
    check_true("(1.2 ~ 1.3) = false");
    check_true("1.0 ~ 1");
    check_true("@2012-04-15 = @2012-04-15");
    check_empty("@2012-04-15 = @2012-04-15T10:00");
    check_true("(@2012-04-15 ~ @2012-04-15T10:00) = false");
    check_true("@2012-04-15T15:00:00+02:00 = @2012-04-15T13:00:00Z");
    check_true("4 'g' = 4000 'mg'");
    check_true("{} ~ {}");
    check_empty("{} = {}");
    check_true("Patient.name[0] = Patient.name.first()");
    check_true("Patient.name[0] != Patient.name[1]");
    check_true("Patient.birthDate = @1974-12-25");
}

// §6.2 Comparison, including partial-precision dates.
#[test]
fn s6_2_comparison() {
    check_true("2 > 1.5");
    check_true("'abc' < 'abd'");
    check_true("@2014 < @2015-01-01T00:00");
    check_empty("@2014-01 < @2014-01-05");
    check_true("10 'mg' < 1 'g'");
    check_true("Patient.birthDate < @2000-01-01");
    check_true("@T10:00 < @T11");
    eval_fails("1 < 'a'");
    eval_fails("Patient.name.given > 'a'");
}

// §6.5 Boolean logic: three-valued.
#[test]
fn s6_5_boolean_logic() {
    check_true("(true and {}).empty()");
    check_true("(false and {}) = false");
    check_true("true or {}");
    check_true("({} or false).empty()");
    check_true("{} implies true");
    check_true("({} implies false).empty()");
    check_true("(true xor {}).empty()");
    check_true("Patient.gender and true");
}

// §6.6 Math on quantities and dates.
#[test]
fn s6_6_date_arithmetic() {
    check("@2014-01-31 + 1 month", &patient(), &["2014-02-28"]);
    check("@2016-02-29 + 1 year", &patient(), &["2017-02-28"]);
    check(
        "@2014-01-01T10:00:00Z - 90 minutes",
        &patient(),
        &["2014-01-01T08:30:00Z"],
    );
    check("@2014-01-01 + 7.9 days", &patient(), &["2014-01-08"]);
    check("@2014-01-01 + 2 'wk'", &patient(), &["2014-01-15"]);
    check("@T23:30 + 1 hour", &patient(), &["00:30"]);
    eval_fails("@2014-01-01 + 1 'mo'");
    check("2 'mg' + 3 'mg'", &patient(), &["5 'mg'"]);
    check("3 'mg' * 2", &patient(), &["6 'mg'"]);
}

// §5.1 Existence.
#[test]
fn s5_1_existence() {
    check_true("Patient.name.exists()");
    check_true("Patient.name.exists(use = 'usual')");
    check_true("Patient.name.given.all($this.length() > 2)");
    check_true("{}.all(false)");
    check_true("(true | false).anyTrue()");
    check_true("(true | true).allTrue()");
    check_true("(false).allFalse()");
    check_true("Patient.name.given.subsetOf(Patient.name.given | 'x')");
    check_true("(1 | 2 | 3).supersetOf(2 | 3)");
    check_true("(1 | 1 | 2).count() = 2");
    check_true("(1).combine(1).isDistinct().not()");
    check(
        "(1).combine(1).combine(2).distinct()",
        &patient(),
        &["1", "2"],
    );
    check_true("Patient.name.given.empty().not()");
}

// §5.2 Filtering and projection, with $this, $index and $total.
#[test]
fn s5_2_filtering() {
    let p = patient();
    check(
        "Patient.name.where(use = 'official').given",
        &p,
        &["Peter", "James"],
    );
    check(
        "Patient.name.given.where($index > 0)",
        &p,
        &["James", "Jim"],
    );
    check("Patient.name.select(given.first())", &p, &["Peter", "Jim"]);
    check("Patient.name.select(given.count())", &p, &["2", "1"]);
    check("(1 | 2 | 3).aggregate($this + $total, 0)", &p, &["6"]);
    check(
        "(2 | 3 | 1).aggregate(iif($total.empty(), $this, iif($this > $total, $this, $total)))",
        &p,
        &["3"],
    );
    let q = json!({"resourceType": "Questionnaire", "item": [{"linkId": "1", "item": [{"linkId": "1.1", "item": [{"linkId": "1.1.1"}]}]}, {"linkId": "2"}]});
    check(
        "Questionnaire.repeat(item).linkId",
        &q,
        &["1", "2", "1.1", "1.1.1"],
    );
    check(
        "Questionnaire.descendants().linkId",
        &q,
        &["1", "2", "1.1", "1.1.1"],
    );
    check("Questionnaire.children().count()", &q, &["2"]);
    check("Patient.children().ofType(HumanName).count()", &p, &["2"]);
}

// §5.3 Subsetting and §5.4 Combining.
#[test]
fn s5_3_subsetting() {
    let p = patient();
    check("Patient.name.given[1]", &p, &["James"]);
    check("Patient.name.given[10]", &p, &[]);
    check("Patient.name.given.first()", &p, &["Peter"]);
    check("Patient.name.given.last()", &p, &["Jim"]);
    check("Patient.name.given.tail()", &p, &["James", "Jim"]);
    check("Patient.name.given.skip(2)", &p, &["Jim"]);
    check("Patient.name.given.take(2)", &p, &["Peter", "James"]);
    check("Patient.gender.single()", &p, &["male"]);
    eval_fails("Patient.name.given.single()");
    check("(1 | 2 | 3).intersect(2 | 3 | 4)", &p, &["2", "3"]);
    check("(1 | 2 | 3).exclude(2)", &p, &["1", "3"]);
    check("(1 | 2).union(2 | 3)", &p, &["1", "2", "3"]);
    check("(1 | 2).combine(2 | 3)", &p, &["1", "2", "2", "3"]);
    check(
        "Patient.name.given.first() | Patient.name.given.first()",
        &p,
        &["Peter"],
    );
}

// §5.5 Conversion.
#[test]
fn s5_5_conversion() {
    let p = patient();
    check("iif(Patient.active, 'yes', 'no')", &p, &["yes"]);
    check("iif({}, 'yes')", &p, &[]);
    check("'1'.toInteger() + 1", &p, &["2"]);
    check("'1.50'.toDecimal()", &p, &["1.50"]);
    check("'abc'.toInteger()", &p, &[]);
    check("'yes'.toBoolean()", &p, &["true"]);
    check("1.toString() + 'x'", &p, &["1x"]);
    check("'2014-01-01'.toDate()", &p, &["2014-01-01"]);
    check(
        "'2014-01-01T10:00:00Z'.toDateTime()",
        &p,
        &["2014-01-01T10:00:00Z"],
    );
    check("'5 \\'mg\\''.toQuantity()", &p, &["5 'mg'"]);
    check("'1 \\'g\\''.toQuantity('mg')", &p, &["1000 'mg'"]);
    check_true("'abc'.convertsToInteger().not() and '12'.convertsToInteger()");
    check_true("'2014'.convertsToDate()");
    check_true("Patient.birthDate.toDate() = @1974-12-25");
}

// §5.6 String manipulation.
#[test]
fn s5_6_strings() {
    let p = patient();
    check("'abcdef'.indexOf('cd')", &p, &["2"]);
    check("'abcdef'.substring(2, 2)", &p, &["cd"]);
    check("'abcdef'.substring(4)", &p, &["ef"]);
    check("'abcdef'.substring(10)", &p, &[]);
    check_true("'abc'.startsWith('ab') and 'abc'.endsWith('bc') and 'abc'.contains('b')");
    check("'AbC'.upper() + 'AbC'.lower()", &p, &["ABCabc"]);
    check("'a-b-c'.replace('-', '+')", &p, &["a+b+c"]);
    check("'abc'.replace('', 'x')", &p, &["xaxbxcx"]);
    check_true("'2014-01-01'.matches('^[0-9]{4}-')");
    check("'a1b22c'.replaceMatches('[0-9]+', '#')", &p, &["a#b#c"]);
    check("'héllo'.length()", &p, &["5"]);
    check("'abc'.toChars()", &p, &["a", "b", "c"]);
    check("'a,b'.split(',')", &p, &["a", "b"]);
    check("('a' | 'b').join('-')", &p, &["a-b"]);
    check("'  x '.trim()", &p, &["x"]);
    check("Patient.name.given.first().upper()", &p, &["PETER"]);
    eval_fails("'x'.matches('(')");
    eval_fails("Patient.name.startsWith('P')");
}

// §5.7 Math.
#[test]
fn s5_7_math() {
    let p = patient();
    check("(-5).abs()", &p, &["5"]);
    check("(-5.5).abs()", &p, &["5.5"]);
    check("1.1.ceiling()", &p, &["2"]);
    check("(-1.1).floor()", &p, &["-2"]);
    check("3.14159.round(2)", &p, &["3.14"]);
    check("2.5.round()", &p, &["3"]);
    check("16.sqrt()", &p, &["4"]);
    check("0.exp()", &p, &["1"]);
    check("1.ln()", &p, &["0"]);
    check("100.log(10)", &p, &["2"]);
    check("2.power(10)", &p, &["1024"]);
    check("(-1.9).truncate()", &p, &["-1"]);
    check("(-1).sqrt()", &p, &[]);
    check("(1 | 2 | 3).sum()", &p, &["6"]);
}

// §5.9 Utility and §7 variables.
#[test]
fn s5_9_utility_and_variables() {
    let p = patient();
    check_true("now() > @2020-01-01T00:00:00Z");
    check_true("today() > @2020-01-01");
    check_true("today() = now().toDate()");
    check("Patient.name.given.trace('g').count()", &p, &["3"]);
    check("%resource.id", &p, &["example"]);
    check("%context.gender", &p, &["male"]);
    check("%ucum", &p, &["http://unitsofmeasure.org"]);
    check(
        "%`vs-administrative-gender`",
        &p,
        &["http://hl7.org/fhir/ValueSet/administrative-gender"],
    );
    check_true("Patient.active.not() = false");
    eval_fails("%undefined");
    let v = fhir_path::Options::default().variable("who", json!(["a", "b"]));
    let got = fhir_path::evaluate_with(&parse("%who.count()").unwrap(), &p, &v).unwrap();
    assert_eq!(render(&got), ["2"]);
}

// §10 Types and reflection.
#[test]
fn s10_types() {
    let p = patient();
    check_true("Patient is Patient");
    check_true("Patient is DomainResource");
    check_true("Patient.is(Resource)");
    check_true("(Patient is Observation).not()");
    check_true("1 is Integer and 1.0 is Decimal and 'a' is String and true is Boolean");
    check_true("1 is System.Integer");
    check_true("Patient.active is boolean");
    check("Patient.contained.ofType(Organization).name", &p, &["Acme"]);
    check("1.type().name", &p, &["Integer"]);
    check("Patient.type().name", &p, &["Patient"]);
    check("Patient.active.type().namespace", &p, &["FHIR"]);
    eval_fails("Patient.name.as(HumanName)");
    eval_fails("Patient.gender.ofType(notatype)");
}

// Syntax errors and robustness: no input may panic or overflow the stack.
#[test]
fn syntax_errors_and_limits() {
    parse_fails("");
    parse_fails("1 +");
    parse_fails("Patient.");
    parse_fails("'unterminated");
    parse_fails("(1 + 2");
    parse_fails("1 2");
    parse_fails("@2015-13-01");
    parse_fails("/* open");
    parse_fails("$foo");
    parse_fails("Patient.name[0");
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    parse_fails(&deep);
    let long_neg = format!("{}1", "-".repeat(5000));
    parse_fails(&long_neg);
    // A long flat chain builds a tree as deep as it is long, which evaluating and dropping
    // walk recursively: past 128 levels it is refused (issue #15), below it works.
    let chain = vec!["name"; 3000].join(".");
    parse_fails(&chain);
    let chain = vec!["name"; 100].join(".");
    assert!(parse(&chain).is_ok());
    let _ = evaluate(&parse(&chain).unwrap(), &patient());
    // Every prefix of a realistic expression either parses or errors; none panics.
    let src = "Patient.name.where(use = 'official' and given.exists()).select(given.first() & ' ' & family) | (Observation.value as Quantity).value + 5 'mg' ~ @2012-01-01T10:00:00.000+01:00";
    for i in 0..=src.len() {
        if let Ok(e) = parse(&src[..i]) {
            let _ = evaluate(&e, &patient());
        }
    }
}

#[test]
fn expr_is_send_sync_and_reusable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<fhir_path::Expr>();
    let e = parse("name.given.count()").unwrap();
    assert_eq!(render(&evaluate(&e, &patient()).unwrap()), ["3"]);
    assert_eq!(
        render(&evaluate(&e, &json!({"resourceType": "Patient"})).unwrap()),
        ["0"]
    );
    assert_eq!(e.to_string(), "name.given.count()");
}

// Robustness: random token soup must never panic, in the parser or the evaluator.
#[test]
fn random_expressions_never_panic() {
    const TOKENS: &[&str] = &[
        "Patient",
        "name",
        "given",
        ".",
        ".",
        "(",
        ")",
        "[",
        "]",
        "0",
        "1",
        "2.5",
        "'a'",
        "@2014",
        "@2014-01-01T10:00Z",
        "@T10",
        "+",
        "-",
        "*",
        "/",
        "div",
        "mod",
        "&",
        "|",
        "=",
        "~",
        "!=",
        "<",
        ">=",
        "and",
        "or",
        "xor",
        "implies",
        "is",
        "as",
        "Quantity",
        "in",
        "contains",
        "{}",
        "where(",
        "select(",
        "repeat(",
        "aggregate(",
        "iif(",
        "exists(",
        "all(",
        "first()",
        "count()",
        "substring(",
        "toInteger()",
        "toString()",
        "resolve()",
        "extension(",
        "descendants()",
        "children()",
        "$this",
        "$index",
        "$total",
        "%resource",
        ",",
        "5 'mg'",
        "3 days",
        "true",
        "ofType(",
        "lowBoundary(",
        "sort(",
        "power(",
        "round(",
        "matches(",
        "replaceMatches(",
        "combine(",
        "union(",
        "trace(",
        "'\\u00e9'",
        "`given`",
        "birthDate",
        "value",
        "today()",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let p = patient();
    let o = observation();
    let mut parsed = 0;
    for _ in 0..20_000 {
        let len = 1 + (next() % 12) as usize;
        let expr: Vec<&str> = (0..len)
            .map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize])
            .collect();
        let expr = expr.join(" ");
        if let Ok(e) = parse(&expr) {
            parsed += 1;
            let _ = evaluate(&e, &p);
            let _ = evaluate(&e, &o);
        }
    }
    assert!(parsed > 500, "only {parsed} random expressions parsed");
}

// Regression: a choice-like key whose suffix starts with a multi-byte character.
#[test]
fn non_ascii_keys_do_not_panic() {
    let r = json!({"resourceType": "Basic", "valueé": 1, "valueΩmega": {"x": 1}, "é": "ok"});
    check("Basic.value", &r, &[]);
    check("Basic.`é`", &r, &["ok"]);
    check("Basic.children().count()", &r, &["3"]);
}

// Arithmetic at the edges returns empty instead of overflowing.
#[test]
fn overflow_yields_empty() {
    check_empty("9223372036854775807 + 1");
    check_empty("(-9223372036854775807 - 1) * -1");
    check_empty("@2014-01-01 + 9999999999 years");
    check_empty("@9999-12-31 + 1 day");
    check(
        "99999999999999999999999999999999999.0 * 1000000",
        &patient(),
        &[],
    );
}

/// A few R4 element definitions, standing in for fhir-model's implementation.
struct StubModel;

impl fhir_path::Model for StubModel {
    fn element(&self, parent: &str, element: &str) -> Option<fhir_path::ElementType> {
        let (types, is_array): (&[&str], bool) = match (parent, element) {
            ("Patient", "gender") => (&["code"], false),
            ("Patient", "birthDate") => (&["date"], false),
            ("Patient", "active") => (&["boolean"], false),
            ("Patient", "name") => (&["HumanName"], true),
            ("Patient", "contact") => (&["Patient.contact"], true),
            ("Patient", "deceased") => (&["boolean", "dateTime"], false),
            ("Patient", "managingOrganization") => (&["Reference"], false),
            ("Patient.contact", "name") => (&["HumanName"], false),
            ("HumanName", "given" | "family") => (&["string"], element == "given"),
            ("HumanName", "use") => (&["code"], false),
            ("Element", "extension") => (&["Extension"], true),
            ("Extension", "url") => (&["uri"], false),
            ("Organization", "name") => (&["string"], false),
            _ => return None,
        };
        Some(fhir_path::ElementType {
            types: types.iter().map(|t| t.to_string()).collect(),
            is_array,
        })
    }
}

#[track_caller]
fn check_typed(expr: &str, resource: &Value, expected: &[&str]) {
    let opts = fhir_path::Options::default().model(&StubModel);
    let got = fhir_path::evaluate_with(&parse(expr).unwrap(), resource, &opts)
        .unwrap_or_else(|e| panic!("eval `{expr}`: {e}"));
    assert_eq!(render(&got), expected, "`{expr}`");
}

// §10 Types with a model: declared FHIR types drive is/as/ofType and date comparison.
#[test]
fn s10_types_with_model() {
    let mut p = patient();
    p["contact"] = json!([{"name": {"text": "Mum"}}]);
    check_typed("Patient.gender.is(code)", &p, &["true"]);
    check_typed("Patient.gender.is(string)", &p, &["true"]);
    check_typed("Patient.gender.is(id)", &p, &["false"]);
    check_typed("Patient.gender.as(string)", &p, &[]);
    check_typed("Patient.gender.ofType(code)", &p, &["male"]);
    check_typed("Patient.birthDate.type().name", &p, &["date"]);
    check_typed(
        "Patient.name.given.type().name",
        &p,
        &["string", "string", "string"],
    );
    check_typed("Patient.contact.type().name", &p, &["BackboneElement"]);
    check_typed("Patient.contact.name.type().name", &p, &["HumanName"]);
    check_typed("Patient.birthDate.extension.url.type().name", &p, &["uri"]);
    check_typed("Patient.deceased.type().name", &p, &["boolean"]);
    check_typed("Patient.contained.name.type().name", &p, &["string"]);
    check_typed("Patient.managingOrganization.resolve().name", &p, &["Acme"]);
    // Dates typed by the model compare with the rules for dates, not strings.
    check_typed("Patient.birthDate < @1975", &p, &["true"]);
    check_typed(
        "(Patient.birthDate < @1974-12-25T10:00).empty()",
        &p,
        &["true"],
    );
}
