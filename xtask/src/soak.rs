//! `cargo xtask soak`: the reliability tests at their long length
//! (`WEFT_SOAK=1`), one at a time so their figures are not shared with
//! another test's load; their figures (JSON lines the tests append) become
//! docs/reliability.md. `cargo xtask test` runs the same tests short.
use std::path::Path;

use anyhow::{Context, Result};

const TESTS: [&str; 5] = ["node_loss", "churn", "etcd_faults", "restart_without_loss", "kube_subnet_mgr"];

pub fn run(weftd: &Path) -> Result<()> {
    let out = crate::target_dir().join("reliability.jsonl");
    let _ = std::fs::remove_file(&out);
    let t0 = std::time::Instant::now();
    let mut c = crate::cargo();
    c.args(["test", "-p", "weft-tests"]);
    for t in TESTS {
        c.args(["--test", t]);
    }
    c.args(["--", "--test-threads", "1"])
        .env("WEFT_SOAK", "1")
        .env("WEFT_RELIABILITY_OUT", &out)
        .env("WEFTD_BIN", weftd)
        .env("WEFT_CNI_BIN", weftd.with_file_name("weft-cni"))
        .env("RUST_LIB_BACKTRACE", "0");
    crate::status(&mut c)?;
    let lines = std::fs::read_to_string(&out).with_context(|| format!("no figures in {}", out.display()))?;
    let mut md = String::from("| test | figure | value |\n|---|---|---|\n");
    for l in lines.lines() {
        let j: serde_json::Value = serde_json::from_str(l).with_context(|| format!("figure line {l:?}"))?;
        md.push_str(&format!(
            "| {} | {} | {:.2} {} |\n",
            j["test"].as_str().unwrap_or(""),
            j["what"].as_str().unwrap_or(""),
            j["value"].as_f64().unwrap_or(f64::NAN),
            j["unit"].as_str().unwrap_or("")
        ));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let body = format!(
        "# weft reliability\n\nWritten by `cargo xtask soak` ({:.0} min; tests {}; each one at a time, at its long length: \
         churn 60 s, etcd outage 60 s). `cargo xtask test` runs the same tests at their short length (churn 15 s, \
         outage 30 s). Machine: {cores} cores. What each test does and asserts is in its file under `tests/tests/`; where a figure says 0 packets lost, the test fails on any loss.\n\n{md}",
        t0.elapsed().as_secs_f64() / 60.0, TESTS.join(", "));
    let doc = crate::workspace().join("docs/reliability.md");
    std::fs::write(&doc, body).with_context(|| format!("writing {}", doc.display()))?;
    println!("soak: wrote {}", doc.display());
    Ok(())
}
