//! Reading weftd's `/metrics` from inside a node's namespace.
use anyhow::{ensure, Result};

use crate::netns::Netns;

/// The port the tests give weftd's `--healthz-port`.
pub const PORT: &str = "10256";

/// `GET /metrics` on 127.0.0.1:[`PORT`] inside `ns` (bash's /dev/tcp, 3 s
/// bound): the body, after checking status and content type.
pub fn scrape(ns: &Netns) -> Result<String> {
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{PORT} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3");
    let r = ns.exec("timeout", &["3", "bash", "-c", &script])?;
    ensure!(r.starts_with("HTTP/1.1 200") && r.contains("Content-Type: text/plain; version=0.0.4"), "GET /metrics:\n{r:.400}");
    Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The value of the sample written exactly `name{labels}` (0 if absent).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .next()
        .unwrap_or(0.0)
}

/// `weft_udp_packets_total{what="<what>"}` of node namespace `ns`.
pub fn udp_packets(ns: &Netns, what: &str) -> Result<u64> {
    Ok(sample(&scrape(ns)?, &format!("weft_udp_packets_total{{what=\"{what}\"}}")) as u64)
}
