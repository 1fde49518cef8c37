//! Regenerates `crates/fhir-model/data/` from the official R4 definitions:
//! `cargo run -p fhir-model --example vendor -- /work/shared/data/fhir-r4-core`.

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
    Ok(())
}
