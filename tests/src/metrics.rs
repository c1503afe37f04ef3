//! Reading weftd's `/metrics` (and other health-port paths) from inside a
//! node's namespace.
use anyhow::{ensure, Result};

use crate::netns::Netns;

/// The port the tests give weftd's `--healthz-port`.
pub const PORT: &str = "10256";

/// weftd arguments that serve the health port (and so `/metrics`) on
/// 127.0.0.1:[`PORT`]; weftd serves nothing by default (port 0, as flanneld).
pub const ARGS: [&str; 4] = ["--healthz-ip", "127.0.0.1", "--healthz-port", PORT];

/// A plain HTTP/1.0 `GET path` on 127.0.0.1:[`PORT`] inside `ns` (bash's
/// /dev/tcp, bound 3 s times the harness's patience): status line, headers and body as one string. One
/// client for every test that talks to the health port.
pub fn get(ns: &Netns, path: &str) -> Result<String> {
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{PORT} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3");
    ns.exec("timeout", &[&(3 * crate::cmd::patience()).to_string(), "bash", "-c", &script])
}

/// `GET /metrics` inside `ns`: the body, after checking status and content type.
pub fn scrape(ns: &Netns) -> Result<String> {
    let r = get(ns, "/metrics")?;
    ensure!(r.starts_with("HTTP/1.1 200") && r.contains("Content-Type: text/plain; version=0.0.4"), "GET /metrics:\n{r:.400}");
    Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The value of the sample written exactly `name{labels}` (0 if absent).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines().filter_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).next().unwrap_or(0.0)
}

/// `weft_udp_packets_total{what="<what>"}` of node namespace `ns`.
pub fn udp_packets(ns: &Netns, what: &str) -> Result<u64> {
    Ok(sample(&scrape(ns)?, &format!("weft_udp_packets_total{{what=\"{what}\"}}")) as u64)
}

/// What this weftd process's reconciles did, from one scrape: how many
/// reconciles ran and the dataplane entries they added/updated and removed
/// (`weft_reconcile_changes_total`). Tests assert on these counters, not on
/// log wording, to prove a reconcile changed (or did not change) anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconciles {
    pub count: u64,
    pub added: u64,
    pub removed: u64,
}

/// [`Reconciles`] of the weftd serving `/metrics` in `ns`.
pub fn reconciles(ns: &Netns) -> Result<Reconciles> {
    let m = scrape(ns)?;
    Ok(Reconciles {
        count: sample(&m, "weft_reconcile_duration_seconds_count") as u64,
        added: sample(&m, "weft_reconcile_changes_total{op=\"added\"}") as u64,
        removed: sample(&m, "weft_reconcile_changes_total{op=\"removed\"}") as u64,
    })
}

/// [`Reconciles`] once they have stood still for a second (waits up to
/// 15 s): the baseline for "this caused no reconcile" checks.
pub fn settled_reconciles(ns: &Netns) -> Result<Reconciles> {
    crate::cmd::poll("the reconciles to settle", std::time::Duration::from_secs(15), std::time::Duration::from_millis(100), || {
        let a = reconciles(ns).map_err(|e| format!("{e:#}"))?;
        std::thread::sleep(std::time::Duration::from_secs(1));
        let b = reconciles(ns).map_err(|e| format!("{e:#}"))?;
        if a == b {
            Ok(Some(b))
        } else {
            Err(format!("{a:?} then {b:?}"))
        }
    })
}

/// `weft_lease_renewals_total` in `ns`: renewals of the existing lease the
/// store accepted (neither its creation nor a re-claim after it was lost).
pub fn lease_renewals(ns: &Netns) -> Result<u64> {
    Ok(sample(&scrape(ns)?, "weft_lease_renewals_total") as u64)
}
