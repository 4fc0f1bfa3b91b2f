//! Replays every fuzz corpus (fuzz/corpus/<target>/) and every input that
//! once crashed chorus (fuzz/crashes/<target>/) through the fuzz targets, so
//! a fixed crash stays fixed and the seeds keep exercising the code. Fast:
//! a few hundred inputs. The coverage-guided runs are `scripts/fuzz`.

use chorus::fuzzing::{run, TARGETS};
use std::path::Path;

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut n = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap();
        let name = target.file_name().into_string().unwrap();
        assert!(TARGETS.contains(&name.as_str()), "{dir}/{name} is not a fuzz target");
        for input in std::fs::read_dir(target.path()).unwrap() {
            let path = input.unwrap().path();
            if path.file_name().is_some_and(|f| f.to_string_lossy().starts_with('.')) {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| run(&name, &data));
            assert!(r.is_ok(), "{} panics", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_corpus_input_runs_clean() {
    let n = replay("corpus");
    assert!(n >= TARGETS.len(), "only {n} corpus inputs");
    for t in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(t);
        assert!(
            dir.read_dir().is_ok_and(|mut d| d.next().is_some()),
            "no seeds for `{t}`"
        );
    }
}

#[test]
fn every_past_crash_stays_fixed() {
    assert!(replay("crashes") >= 1);
}

/// A tool, not part of the default run: `CHORUS_FUZZ_REPLAY=<target>:<dir>
/// cargo test --test fuzz_corpus -- --ignored` replays a fuzzer's findings
/// (e.g. `target/fuzz/rtcp/default/crashes`) and lists those that fail.
#[test]
#[ignore = "replays a findings folder named by CHORUS_FUZZ_REPLAY"]
fn replay_a_findings_folder() {
    let spec = std::env::var("CHORUS_FUZZ_REPLAY").expect("CHORUS_FUZZ_REPLAY=<target>:<dir>");
    let (target, dir) = spec.split_once(':').expect("<target>:<dir>");
    let mut failed = Vec::new();
    for input in std::fs::read_dir(dir).unwrap() {
        let path = input.unwrap().path();
        if path.file_name().is_some_and(|f| f.to_string_lossy().starts_with("id:")) {
            let data = std::fs::read(&path).unwrap();
            if std::panic::catch_unwind(|| run(target, &data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "{} inputs fail: {failed:#?}", failed.len());
}
