//! The benchmark's own request/response tool (weft-rr, busy-polling ends)
//! between two nodes on the switch: it must report sane percentiles when a
//! server answers, and fail (not report a figure) when none does.
use anyhow::Result;
use weft_tests::{perf, Cluster};

#[test]
fn weft_rr_measures_round_trips_and_fails_without_a_server() -> Result<()> {
    weft_tests::require_root()?;
    let mut c = Cluster::builder().weft_nodes(0).build()?;
    let a = c.add_flannel_node()?;
    let b = c.add_flannel_node()?;
    let (na, nb, ib) = (c.node_ns(a)?, c.node_ns(b)?, c.node_ip(b)?);
    let rt = perf::rr_rtt(na, nb, ib, 1)?;
    eprintln!("weft-rr node to node: p50 {:.1} us, p99 {:.1} us", rt.p50_us, rt.p99_us);
    assert!(rt.p50_us > 0.0 && rt.p50_us <= rt.p99_us, "percentiles out of order: {rt:?}");
    assert!(rt.p50_us < 5_000.0, "p50 of {:.1} us over one veth switch: the tool is not measuring round trips", rt.p50_us);
    // Nobody listens on the address a's own: every request is lost.
    let e = perf::rr_rtt_without_server(na, c.node_ip(a)?, 1).expect_err("weft-rr reported a figure with no server");
    assert!(format!("{e:#}").contains("no answers"), "unexpected error: {e:#}");
    c.pass();
    Ok(())
}
