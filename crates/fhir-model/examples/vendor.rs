//! Regenerates `crates/fhir-model/data/` from the official R4 definitions:
//! `cargo run -p fhir-model --example vendor -- /work/shared/data/fhir-r4-core [EXPANSIONS]`,
//! where EXPANSIONS is the `hl7.fhir.r4.expansions` package (default: the `.tgz` in
//! `fhir-r4-expansions/` beside the core folder).

use std::path::{Path, PathBuf};

use fhir_model::vendor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let core = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: vendor <fhir-r4-core dir>")?;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::create_dir_all(&out)?;

    let model = vendor::build_compact_model(&core)?;
    let json = serde_json::to_vec(&model)?;
    let gz = vendor::gzip(&json)?;
    std::fs::write(out.join(vendor::MODEL_FILE), &gz)?;
    println!(
        "{}: {} types, {} resource types, {} B JSON, {} B gzip",
        vendor::MODEL_FILE,
        model.types.len(),
        model.resource_types.len(),
        json.len(),
        gz.len()
    );

    let params = std::fs::read(core.join("search-parameters.json"))?;
    let gz = vendor::gzip(&params)?;
    std::fs::write(out.join(vendor::SEARCH_PARAMETERS_FILE), &gz)?;
    println!("{}: {} B gzip", vendor::SEARCH_PARAMETERS_FILE, gz.len());

    let expansions = std::env::args()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| core.join("../fhir-r4-expansions/hl7.fhir.r4.expansions-4.0.1.tgz"));
    let valuesets = vendor::read_json(&core.join("valuesets.json.gz"))?;
    let terminology = fhir_model::terminology::build(&valuesets, &expansion_package(&expansions)?);
    let json = serde_json::to_vec(&terminology)?;
    let gz = vendor::gzip(&json)?;
    std::fs::write(out.join(fhir_model::terminology::TERMINOLOGY_FILE), &gz)?;
    println!(
        "{}: {} ValueSet expansions, {} code system hierarchies, {} B JSON, {} B gzip",
        fhir_model::terminology::TERMINOLOGY_FILE,
        terminology.value_sets.len(),
        terminology.hierarchies.len(),
        json.len(),
        gz.len()
    );
    Ok(())
}

/// Every JSON resource in an npm-style FHIR package (`package/*.json`).
fn expansion_package(path: &Path) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.ends_with("package.json") {
            continue;
        }
        let mut text = Vec::new();
        entry.read_to_end(&mut text)?;
        if let Ok(v) = serde_json::from_slice(&text) {
            out.push(v);
        }
    }
    Ok(out)
}
