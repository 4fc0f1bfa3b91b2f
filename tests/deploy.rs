//! What deploy/ ships is valid: Prometheus rules pass `promtool check
//! rules` (Debian's prometheus package; scripts/test installs it) and only
//! name metrics the catalogue has.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `chorus_*` names in a text, with histogram suffixes taken off.
fn metric_names(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("chorus_"))
        .map(|w| {
            let w = ["_bucket", "_sum", "_count"].iter().fold(w, |w, s| {
                if w.ends_with("_seconds") || w.ends_with("_ratio") {
                    w
                } else {
                    w.strip_suffix(s).unwrap_or(w)
                }
            });
            w.to_string()
        })
        .collect()
}

fn catalogued(name: &str) -> bool {
    let cat = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    cat.contains(&format!("| `{name}` |"))
}

#[test]
fn alert_rules_pass_promtool_and_name_real_metrics() {
    let rules = root().join("deploy/prometheus/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool runs (scripts/test installs Debian's prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    let names = metric_names(&text);
    assert!(names.len() > 10, "{names:?}");
    for n in names {
        assert!(
            catalogued(&n),
            "alerts.yml uses {n}, which docs/metrics.md does not list"
        );
    }
}
