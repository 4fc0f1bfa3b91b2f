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

/// Settings that `CHORUS_<KEY>` may set, read from src/config.rs.
fn env_keys() -> Vec<String> {
    let src = std::fs::read_to_string(root().join("src/config.rs")).unwrap();
    let block = src.split("const ENV_KEYS").nth(1).unwrap().split("];").next().unwrap();
    block
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|k| format!("CHORUS_{}", k.to_uppercase()))
        .collect()
}

/// Runs a Python check over deploy/ (PyYAML: scripts/test installs it);
/// it prints one line per problem.
fn python_check(script: &str, args: &[String]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(root())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const YAML_CHECK: &str = r#"
import sys, yaml, glob, re
known = set(sys.argv[1:])
problems = []
def env_names(env):
    if isinstance(env, dict):
        return list(env)
    return [e["name"] for e in env or []]
def check_env(where, names):
    for n in names:
        if n.startswith("CHORUS_") and n != "CHORUS_LOG" and n not in known:
            problems.append(f"{where}: {n} is not a chorus setting")
files = sorted(glob.glob("deploy/**/*.yaml", recursive=True) + glob.glob("deploy/**/*.yml", recursive=True))
docs = {}
for f in files:
    try:
        docs[f] = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    except Exception as e:
        problems.append(f"{f}: {e}")
compose = docs["deploy/compose.yaml"][0]["services"]
for s in ["redis", "chorus-a", "chorus-b", "kamailio", "prometheus", "grafana"]:
    if s not in compose:
        problems.append(f"compose.yaml has no {s}")
for name, svc in compose.items():
    check_env(f"compose {name}", env_names(svc.get("environment")))
kinds = {}
for f in ["deploy/kubernetes/chorus.yaml", "deploy/kubernetes/redis.yaml"]:
    for d in docs[f]:
        for k in ["apiVersion", "kind", "metadata"]:
            if k not in d:
                problems.append(f"{f}: a document without {k}")
        kinds[d["kind"]] = d
ds = kinds.get("DaemonSet")
if not ds:
    problems.append("no DaemonSet for chorus")
else:
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    if not pod.get("hostNetwork"):
        problems.append("chorus pods must use the host network for media")
    if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
        problems.append("probes must be /readyz and /healthz")
    check_env("DaemonSet", env_names(c.get("env")))
    if pod["terminationGracePeriodSeconds"] <= int(c["args"][c["args"].index("--drain-timeout") + 1]):
        problems.append("the grace period must exceed the drain timeout")
if "PodDisruptionBudget" not in kinds:
    problems.append("no PodDisruptionBudget")
docker = open("deploy/docker/Dockerfile").read()
check_env("Dockerfile", re.findall(r"(CHORUS_[A-Z_]+)=", docker))
if "USER 10001" not in docker:
    problems.append("the image must run as a non-root user")
print("\n".join(problems))
"#;

#[test]
fn compose_kubernetes_and_docker_files_parse_and_use_real_settings() {
    let problems = python_check(YAML_CHECK, &env_keys());
    assert_eq!(problems.trim(), "", "deploy/ problems:\n{problems}");
}

#[test]
fn the_dashboard_loads_and_plots_real_metrics() {
    let text = std::fs::read_to_string(root().join("deploy/grafana/dashboards/chorus.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            for n in metric_names(expr) {
                assert!(
                    catalogued(&n),
                    "panel {} plots {n}, which docs/metrics.md does not list",
                    p["title"]
                );
            }
        }
    }
    let cfg = root().join("deploy/prometheus/prometheus.yml");
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_kamailio_configuration_passes_its_own_check_in_both_forms() {
    let cfg = root().join("deploy/kamailio/kamailio.cfg");
    for defines in [&[][..], &["-A", "CHORUS_PAIR"][..]] {
        let out = Command::new("kamailio")
            .args(defines)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("kamailio runs (scripts/test installs it)");
        assert!(
            out.status.success(),
            "{defines:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
