//! Replays every fuzz target's committed seeds (`fuzz/corpus/<target>/`, recorded from
//! real peers by `switchyard-drill record-corpus`) and every input a fuzzer once crashed on
//! (`fuzz/regressions/<target>/`, kept after the fix) through the same bodies the
//! cargo-fuzz targets run, on stable Rust.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect()
}

#[test]
fn every_seed_and_every_kept_crash_input_decodes_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, body) in switchyard::fuzzing::TARGETS {
        let seeds = inputs(&root.join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target} under fuzz/corpus");
        let kept = inputs(&root.join("regressions").join(target));
        for input in seeds.iter().chain(&kept) {
            body(input);
        }
    }
}
