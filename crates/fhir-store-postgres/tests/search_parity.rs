//! Search on PostgreSQL answers as search on SQLite does: the five Synthea patients of
//! `testdata/synthea` are written to both stores in the same order, and each query below —
//! every parameter kind, prefixes, modifiers, chains, `_has`, composites, sorting, includes,
//! paging — must give the same matches in the same order, page by page, the same totals and
//! the same included resources. The SQLite store is the oracle: its search is the reference
//! implementation the PostgreSQL one was ported from.

include!("../../../testdata/locate.rs.in");

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use fhir_store::{Method, SearchPage, Store};
use fhir_store_postgres::scratch::ScratchDatabase;
use fhir_store_postgres::{PgConfig, PgStore};
use fhir_store_sqlite::SqliteStore;
use serde_json::Value;

/// The resources of one bundle, with `urn:uuid:` references rewritten to `Type/id`, as a
/// transaction Bundle's processing would store them.
fn bundle_resources(path: &std::path::Path) -> Vec<(String, String, Value)> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("fixture"))
        .read_to_end(&mut text)
        .expect("gunzip");
    let bundle: Value = serde_json::from_slice(&text).expect("bundle JSON");
    let entries = bundle["entry"].as_array().expect("entries");
    let mut local: HashMap<String, String> = HashMap::new();
    for e in entries {
        let r = &e["resource"];
        if let (Some(url), Some(t), Some(id)) = (
            e["fullUrl"].as_str(),
            r["resourceType"].as_str(),
            r["id"].as_str(),
        ) {
            local.insert(url.to_owned(), format!("{t}/{id}"));
        }
    }
    fn rewrite(v: &mut Value, local: &HashMap<String, String>) {
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    if k == "reference" {
                        if let Some(to) = x.as_str().and_then(|s| local.get(s)) {
                            *x = Value::String(to.clone());
                            continue;
                        }
                    }
                    rewrite(x, local);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|x| rewrite(x, local)),
            _ => {}
        }
    }
    entries
        .iter()
        .map(|e| {
            let mut r = e["resource"].clone();
            rewrite(&mut r, &local);
            let t = r["resourceType"].as_str().expect("type").to_owned();
            let id = r["id"].as_str().expect("id").to_owned();
            (t, id, r)
        })
        .collect()
}

async fn load(store: &dyn Store, bundles: &[Vec<(String, String, Value)>]) {
    store.create_service("s").await.expect("service");
    for resources in bundles {
        let mut tx = store.begin("s").await.expect("begin");
        for (t, id, r) in resources {
            tx.put(t, id, r.clone(), Method::Put)
                .await
                .unwrap_or_else(|e| panic!("{t}/{id}: {e}"));
        }
        tx.commit().await.expect("commit");
    }
    // A few changes after loading, so that only current versions must match: one patient
    // deleted, one observation updated.
    let mut tx = store.begin("s").await.expect("begin");
    let (t, id, _) = &bundles[0]
        .iter()
        .find(|r| r.0 == "Patient")
        .expect("patient");
    tx.delete(t, id).await.expect("delete");
    let (t, id, r) = bundles[1]
        .iter()
        .find(|r| r.0 == "Observation")
        .expect("observation");
    let mut changed = r.clone();
    changed["status"] = Value::String("amended".into());
    tx.put(t, id, changed, Method::Put).await.expect("update");
    tx.commit().await.expect("commit");
}

fn parse(rtype: Option<&str>, query: &str) -> fhir_search::SearchQuery {
    let params: Vec<(String, String)> = form_pairs(query);
    fhir_search::parse(rtype, &params, &fhir_search::ParseOptions::default())
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

/// What a search showed: the matches of each page, the first page's total, and every
/// included resource.
#[derive(Debug, PartialEq)]
struct Seen {
    pages: Vec<Vec<String>>,
    total: Option<u64>,
    includes: Vec<String>,
}

fn refs(page: &SearchPage) -> (Vec<String>, Vec<String>) {
    let m = page
        .matches
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    let mut i: Vec<String> = page
        .includes
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    i.sort();
    (m, i)
}

async fn run(store: &dyn Store, rtype: Option<&str>, query: &str) -> Seen {
    let mut q = parse(rtype, query);
    let mut seen = Seen {
        pages: Vec::new(),
        total: None,
        includes: Vec::new(),
    };
    for n in 0..100 {
        let page = store
            .search("s", &q)
            .await
            .unwrap_or_else(|e| panic!("{rtype:?}?{query}: {e}"));
        if n == 0 {
            seen.total = page.total;
        }
        let (m, i) = refs(&page);
        seen.pages.push(m);
        seen.includes.extend(i);
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => return seen,
        }
    }
    panic!("{query}: paging does not end");
}

const QUERIES: &[(&str, &str)] = &[
    ("Patient", ""),
    ("Patient", "gender=male"),
    ("Patient", "gender:not=male"),
    ("Patient", "name=an"),
    ("Patient", "name:contains=an"),
    ("Patient", "family:exact=Gottlieb"),
    ("Patient", "birthdate=ge1970"),
    ("Patient", "birthdate=lt1986-06"),
    ("Patient", "birthdate=1989"),
    ("Patient", "birthdate=ne1989-11"),
    ("Patient", "_sort=birthdate"),
    ("Patient", "_sort=-birthdate&_count=2"),
    ("Patient", "_sort=family,-birthdate&_count=1"),
    ("Patient", "address-city=bost"),
    ("Patient", "address-postalcode:missing=true"),
    ("Patient", "deceased:missing=false"),
    ("Patient", "_has:Observation:patient:code=8302-2"),
    ("Patient", "_has:Condition:subject:clinical-status=resolved"),
    ("Patient", "_revinclude=Encounter:patient&_count=2"),
    ("Patient", "_lastUpdated=gt2000-01-01&_count=3"),
    ("Observation", "_count=17"),
    ("Observation", "code=http://loinc.org|8302-2"),
    ("Observation", "code=8302-2,29463-7&_sort=-date"),
    ("Observation", "status=amended"),
    ("Observation", "value-quantity=gt100"),
    ("Observation", "value-quantity=lt50&_sort=value-quantity"),
    ("Observation", "value-quantity=ap70"),
    (
        "Observation",
        "value-quantity=le80|http://unitsofmeasure.org|kg",
    ),
    ("Observation", "date=ge2015-01-01&_sort=-date&_count=7"),
    ("Observation", "date=sa2010&date=eb2020"),
    ("Observation", "category=vital-signs&_count=10"),
    (
        "Observation",
        "category=vital-signs&_count=10&_total=accurate",
    ),
    ("Observation", "subject.gender=male&_count=9"),
    ("Observation", "patient.name=an&_count=9"),
    ("Observation", "subject:Patient.birthdate=lt1980"),
    (
        "Observation",
        "code-value-quantity=http://loinc.org|8302-2$gt150",
    ),
    (
        "Observation",
        "component-code-value-quantity=http://loinc.org|8480-6$gt120",
    ),
    ("Observation", "combo-code=8480-6"),
    ("Observation", "code:text=body"),
    ("Observation", "_sort=value-quantity&code=29463-7"),
    ("Observation", "_sort=-value-quantity,date&_count=4"),
    ("Observation", "_include=Observation:patient&code=8302-2"),
    (
        "Observation",
        "_include=Observation:encounter&_include:iterate=Encounter:patient&_count=5",
    ),
    ("Encounter", "class=AMB"),
    ("Encounter", "date=gt2010-01-01&_sort=date"),
    ("Encounter", "_revinclude=Observation:encounter&_count=3"),
    ("Condition", "clinical-status=active"),
    ("Condition", "clinical-status:not=active"),
    ("Condition", "code:text=acute"),
    ("Condition", "onset-date=le2000"),
    (
        "Condition",
        "clinical-status:in=http://hl7.org/fhir/ValueSet/condition-clinical",
    ),
    (
        "MedicationRequest",
        "status=active&_include=MedicationRequest:patient",
    ),
    ("Immunization", "_sort=-date&_count=5"),
    ("Claim", "use=claim&_count=6"),
    ("ExplanationOfBenefit", "_id=nope"),
    ("Procedure", "subject:missing=false"),
];

const SYSTEM_QUERIES: &[&str] = &[
    "_type=Patient,Condition&_count=4",
    "_type=Patient&gender=female",
    "_count=25",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_search_answers_as_sqlite_search() {
    let bundles: Vec<_> = synthea_fixtures()
        .iter()
        .map(|p| bundle_resources(p))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("sqlite"));
    let db = ScratchDatabase::create()
        .await
        .unwrap_or_else(|e| panic!("scratch database: {e}"));
    let pg: Arc<dyn Store> = Arc::new(
        PgStore::connect(&db.url(), PgConfig::default())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}")),
    );
    load(&*sqlite, &bundles).await;
    load(&*pg, &bundles).await;
    let mut nonempty = 0;
    for (rtype, query) in QUERIES {
        let want = run(&*sqlite, Some(rtype), query).await;
        let got = run(&*pg, Some(rtype), query).await;
        assert_eq!(got, want, "{rtype}?{query}");
        if want.pages.iter().any(|p| !p.is_empty()) {
            nonempty += 1;
        }
    }
    for query in SYSTEM_QUERIES {
        let want = run(&*sqlite, None, query).await;
        let got = run(&*pg, None, query).await;
        assert_eq!(got, want, "?{query}");
    }
    assert!(
        nonempty * 4 >= QUERIES.len() * 3,
        "too few queries match anything ({nonempty} of {}): the fixtures changed?",
        QUERIES.len()
    );
    // Conditional matching inside a transaction decides the same way.
    for (rtype, query) in QUERIES.iter().take(25) {
        let q = parse(Some(rtype), query);
        let mut a = sqlite.begin("s").await.expect("begin");
        let mut b = pg.begin("s").await.expect("begin");
        let want = a.matching(&q, 5).await.expect("sqlite matching");
        let got = b.matching(&q, 5).await.expect("postgres matching");
        assert_eq!(got, want, "matching {rtype}?{query}");
    }
}
