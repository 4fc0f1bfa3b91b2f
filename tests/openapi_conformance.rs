//! The served OpenAPI document describes exactly what the server accepts and
//! answers: Schemathesis (PyPI; scripts/test installs it) generates requests
//! from the document against a running chorus, and fails on a status the
//! document does not list, a schema-valid request refused, a
//! schema-violating one accepted, or a response that breaks its schema.
//! SDP bodies come from tests/sdp (tests/schemathesis/chorus_hooks.py).

mod common;
use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_against_the_served_document() {
    // Through python3, so a fresh pip install works before any PATH shim exists.
    let found = Command::new("python3")
        .args(["-c", "import schemathesis.cli"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "Schemathesis is not installed: run scripts/test, which installs it"
    );
    let d = Daemon::start(77, &[]).await;
    let hooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let out = tokio::task::spawn_blocking({
        let url = format!("{}/openapi.json", d.base);
        move || {
            Command::new("python3")
                .args(["-c", "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'st'; sys.exit(schemathesis())"])
                .args(["run", &url, "--max-examples", "15", "--workers", "1", "--seed", "1"])
                // Event streams (SSE) of a live call or conference never end
                // by themselves: each would wait out a timeout. They are
                // tested end to end in tests/conference.rs and tests/streams.rs.
                .args(["--exclude-path-regex", "/events$"])
                .env("PYTHONPATH", hooks)
                .env("SCHEMATHESIS_HOOKS", "chorus_hooks")
                .env("NO_COLOR", "1")
                .output()
                .expect("st runs")
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}
