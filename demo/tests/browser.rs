//! The demo in headless Debian chromium: runs `demo/browser/dashboard.test.mjs` (node's test
//! runner with playwright-core) against the demo binary Cargo built for this test.

use std::path::Path;
use std::process::Command;

#[test]
fn log_in_reload_restart_and_log_out_in_a_real_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix demo/browser` (./scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no chromium at {chromium}: install Debian's package (apt-get install chromium; ./scripts/test.sh does)"
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    let output = Command::new("node")
        .arg("--test")
        .arg("dashboard.test.mjs")
        .current_dir(&browser_dir)
        .env("DEMO_BIN", env!("CARGO_BIN_EXE_cloakroom-demo"))
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS_DIR", &artifacts)
        .output()
        .expect("node runs (Debian's nodejs)");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the browser test failed:\n{report}"
    );
    assert!(report.contains("# pass 1"), "{report}");
    assert!(
        artifacts.join("dashboard.png").is_file(),
        "the dashboard screenshot is kept in artifacts/"
    );
}
