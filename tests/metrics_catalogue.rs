//! docs/metrics.md lists every metric the code registers, and nothing else:
//! every metric name in the source is in the catalogue, every catalogue
//! entry is in the source, and everything a live instance (with Redis)
//! exports is catalogued with the type the catalogue says.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn catalogue() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("`chorus_")?.strip_suffix('`')?;
            Some((format!("chorus_{name}"), cells.get(2)?.to_string()))
        })
        .collect()
}

fn names_in_source(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // The eBPF program's and maps' names (chorus_forward, chorus_fwd)
        // are not metrics.
        if path.is_dir() && path.ends_with("offload") {
            continue;
        }
        if path.is_dir() {
            names_in_source(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("\"chorus_").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if piece[name.len()..].starts_with('"') {
                    out.insert(format!("chorus_{name}"));
                }
            }
        }
    }
}

#[test]
fn the_catalogue_and_the_source_name_the_same_metrics() {
    let cat = catalogue();
    assert!(cat.len() > 20, "catalogue parsed: {cat:?}");
    let mut src = BTreeSet::new();
    names_in_source(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut src);
    let documented: BTreeSet<String> = cat.keys().cloned().collect();
    let undocumented: Vec<_> = src.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&src).collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from docs/metrics.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "docs/metrics.md lists metrics the code does not have: {stale:?}"
    );
}

#[tokio::test]
async fn what_a_live_instance_exports_is_catalogued_with_its_type() {
    let redis = common::redis_server::RedisServer::start();
    let args = redis.chorus_args("catalogue");
    let d = common::Daemon::start(84, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let text = d.metrics().await;
    let cat = catalogue();
    let mut seen = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let documented = cat
            .get(name)
            .unwrap_or_else(|| panic!("{name} is exported but not in docs/metrics.md"));
        assert_eq!(documented, kind, "{name}");
        seen += 1;
    }
    assert!(seen > 20, "{text}");
}
