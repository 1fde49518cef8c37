//! Validates every resource of FHIR JSON files, gzip'ed or not, or of a `.tar.gz` of them
//! (the Synthea archive), and prints the issues: a quick check of the validator against real
//! data. `cargo run --release -p fhir-model --example validate -- FILE...`.

use std::io::Read;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let defs = fhir_model::r4();
    let (mut files, mut bad) = (0, 0);
    let mut check = |name: &str, bytes: &[u8]| {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            println!("{name}: not JSON");
            return;
        };
        files += 1;
        let issues = defs.validate(&v);
        if !issues.is_empty() {
            bad += 1;
            for i in issues.iter().take(5) {
                println!("{name}: {:?} {}", i.expression, i.diagnostics);
            }
        }
    };
    for arg in std::env::args().skip(1) {
        let path = Path::new(&arg);
        let raw = std::fs::read(path)?;
        if arg.ends_with(".tar.gz") || arg.ends_with(".tgz") {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&raw[..]));
            for entry in archive.entries()? {
                let mut entry = entry?;
                let name = entry.path()?.to_string_lossy().into_owned();
                if name.ends_with(".json") {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes)?;
                    check(&name, &bytes);
                }
            }
        } else if arg.ends_with(".gz") {
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut bytes)?;
            check(&arg, &bytes);
        } else {
            check(&arg, &raw);
        }
    }
    println!("{files} files, {bad} with issues");
    Ok(())
}
