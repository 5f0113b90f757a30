//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) and every saved
//! crasher (`fuzz/regressions/<target>/`) through the same harness the fuzz target runs, on
//! the stable toolchain: what the fuzzer once explored keeps passing in every test run.

use std::path::Path;

use opsconsole::fuzzing::TARGETS;

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut total = 0;
    for (name, harness) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for path in files {
            let data = std::fs::read(&path).expect("readable corpus file");
            // A panic names the file, so it can be rerun with `cargo fuzz run NAME FILE`.
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(outcome.is_ok(), "{name}: {} fails", path.display());
            total += 1;
        }
    }
    total
}

#[test]
fn every_corpus_file_passes_its_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, _) in TARGETS {
        let dir = root.join(name);
        let count = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        assert!(count > 0, "no corpus for {name} in {}", dir.display());
    }
    assert!(replay("corpus") > 0);
}

#[test]
fn every_saved_crasher_passes_its_harness() {
    replay("regressions");
}
