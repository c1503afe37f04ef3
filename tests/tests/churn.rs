//! Load with churn: 3 nodes with 8 pods each send all-to-all traffic (every
//! pod asks every pod on the other nodes 10 times a second over UDP, spread
//! evenly, and counts the answers) while two more nodes join and leave every 3 s
//! (weftd started; weftd stopped with --cleanup-on-exit, which deletes its
//! lease). The three nodes never lose their leases, the traffic between them
//! loses (almost) nothing, and once the churn stops every node holds exactly
//! the other two as peers. weftd's CPU time and RSS are reported.
//! 15 s in `cargo xtask test`, 60 s in `cargo xtask soak`.
use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use weft_tests::{cmd, report, subnet_env::Ipv4Subnet, Cluster, Wiring};

/// One pod's side of the mesh: binds at once, answers every question, and
/// from the shared start time (every member's socket is bound by then) asks
/// each peer 10 times a second for `secs`; waits up to `drain` seconds for
/// the last answers; then prints {"sent", "got",
/// "lost_by_peer", "lost_at_s"}.
const MESH: &str = r#"
import json, select, socket, sys, time
me, peers, dur, at, drain = sys.argv[1], sys.argv[2].split(','), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((me, 7777))
s.setblocking(False)
sent = dict.fromkeys(peers, 0); got = dict.fromkeys(peers, 0)
asked = {}
# One question every 0.1 s / len(peers), round robin: each peer 10 times a
# second, spread out rather than in bursts of 16.
gap = 0.1 / len(peers)
start = at; end = start + dur; nxt = start; seq = 0
# After the last question: answers until every one has come, `drain`
# seconds at most (a loaded machine answers late, not never).
while time.time() < end or (asked and time.time() < end + drain):
    now = time.time()
    # A member that was not scheduled for a while skips the questions it
    # missed instead of sending them in one burst (a loaded machine's
    # stall, not weft, would then decide what is lost).
    if nxt < now - 4 * gap:
        nxt = now
    while now < end and now >= nxt:
        p = peers[seq % len(peers)]
        s.sendto(b'Q%d' % seq, (p, 7777)); sent[p] += 1; asked[seq] = now - start
        seq += 1; nxt += gap
    if select.select([s], [], [], max(0.0, min(gap, nxt - now)))[0]:
        while True:
            try:
                data, (a, _) = s.recvfrom(64)
            except BlockingIOError:
                break
            if data[:1] == b'Q':
                s.sendto(b'R' + data[1:], (a, 7777))
            elif a in got:
                got[a] += 1; asked.pop(int(data[1:]), None)
print(json.dumps({"sent": sum(sent.values()), "got": sum(got.values()),
                  "lost_by_peer": {p: sent[p] - got[p] for p in peers if sent[p] != got[p]},
                  "lost_at_s": sorted(round(t, 1) for t in asked.values())}))
"#;

#[test]
fn churn_under_all_to_all_load() -> Result<()> {
    weft_tests::require_root()?;
    let secs = report::secs(15, 60);
    let mut c = Cluster::builder().weft_nodes(3).build()?;
    c.wait_converged()?;
    let mut pods = Vec::new();
    for n in 1..=3 {
        for _ in 0..8 {
            pods.push(c.add_pod(n, Wiring::Bridge)?);
        }
    }
    c.ping_across_nodes(&[pods[0], pods[8], pods[16]], 1)?;

    let core: Vec<(u32, std::net::Ipv4Addr, String)> =
        (1..=3).map(|n| Ok((n, c.node_env(n)?.v4().addr, c.lease(n)?.context("no lease")?))).collect::<Result<_>>()?;
    let pids: Vec<u32> = (1..=3).map(|n| c.weft_node(n)?.pid().context("weftd not running")).collect::<Result<_>>()?;
    let cpu0: Vec<f64> = pids.iter().map(|&p| report::cpu_rss(p).map(|r| r.0)).collect::<Result<_>>()?;

    // The churn nodes exist before the traffic starts; they come and go during it.
    let churners = [c.add_weft_node()?, c.add_weft_node()?];
    let mut mesh: Vec<Child> = Vec::new();
    let drain = 2 * cmd::patience() as u64;
    // Start asking once all 24 are up and bound.
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64() + 5.0;
    for &p in &pods {
        let me = c.pods[p].ip().to_string();
        let peers: Vec<String> = pods.iter().filter(|&&q| c.pods[q].node != c.pods[p].node).map(|&q| c.pods[q].ip().to_string()).collect();
        mesh.push(
            c.pods[p]
                .ns
                .command(
                    "timeout",
                    &[
                        &(secs + 20 + drain).to_string(),
                        "python3",
                        "-c",
                        MESH,
                        &me,
                        &peers.join(","),
                        &secs.to_string(),
                        &format!("{at:.3}"),
                        &drain.to_string(),
                    ],
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting a mesh member")?,
        );
    }
    std::thread::sleep(Duration::from_secs_f64((at - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64()).max(0.0)));
    let t0 = Instant::now();
    let (mut joins, mut leaves) = (0u32, 0u32);
    let mut k = 0usize;
    while t0.elapsed() < Duration::from_secs(secs) {
        // One joins, the other (if up) leaves.
        let (up, down) = (churners[k % 2], churners[(k + 1) % 2]);
        if c.weft_node_mut(down)?.running() {
            c.weft_node_mut(down)?.stop();
            leaves += 1;
        }
        c.start_weftd_with(up, &["--cleanup-on-exit"])?;
        joins += 1;
        k += 1;
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(3) {
            // The core nodes' leases stay exactly as they were.
            for (n, subnet, value) in &core {
                let now = c.lease(*n)?;
                if now.as_deref() != Some(value.as_str()) {
                    bail!("node {n}'s lease for {subnet} changed under churn: was {value}, is {now:?}");
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for n in churners {
        if c.weft_node_mut(n)?.running() {
            c.weft_node_mut(n)?.stop();
            leaves += 1;
        }
    }
    let stop = Instant::now();
    for (n, _, _) in &core {
        let others: Vec<_> = core.iter().filter(|(m, _, _)| m != n).map(|(_, s, _)| *s).collect();
        c.wait_exact_vxlan_peers(*n, &others, Duration::from_secs(10)).with_context(|| format!("node {n} after the churn"))?;
    }
    let settle = stop.elapsed();
    ensure!(c.leases()?.len() == 3, "stale leases after the churn: {:?}", c.leases()?);
    let (mut sent, mut got) = (0u64, 0u64);
    for m in mesh {
        let out = m.wait_with_output()?;
        ensure!(out.status.success(), "a mesh member failed: {}", String::from_utf8_lossy(&out.stderr));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
        sent += j["sent"].as_u64().unwrap_or(0);
        got += j["got"].as_u64().unwrap_or(0);
        if j["lost_by_peer"].as_object().is_some_and(|o| !o.is_empty()) {
            eprintln!("mesh {}: lost {} at {}", j["sent"], j["lost_by_peer"], j["lost_at_s"]);
        }
    }
    let lost = sent - got.min(sent);
    let mut cpu = 0.0;
    let mut rss = 0;
    for (i, &p) in pids.iter().enumerate() {
        let (c1, r, hwm) = report::cpu_rss(p)?;
        cpu += c1 - cpu0[i];
        rss = rss.max(hwm.max(r));
    }
    let test = "churn";
    report::figure(test, &format!("churn cycles (joins / leaves) in {secs} s"), (joins + leaves) as f64, "events");
    report::figure(test, "all-to-all request/answer pairs sent (24 pods, 16 peers each, 10/s)", sent as f64, "pairs");
    report::figure(test, "pairs lost", lost as f64, "pairs");
    report::figure(test, "after the churn: every node holds exactly its peers", settle.as_secs_f64(), "s");
    report::figure(test, "weftd CPU per node during the run (mean)", cpu / 3.0 / t0.elapsed().as_secs_f64() * 100.0, "% of a core");
    report::figure(test, "weftd peak RSS (max of the 3 nodes)", rss as f64 / 1024.0, "MiB");
    ensure!(sent > 0 && (lost as f64) <= sent as f64 * 0.001, "lost {lost} of {sent} request/answer pairs between the nodes that stayed (more than 0.1%)");
    ensure!(cmd::pid_alive(pids[0]) && cmd::pid_alive(pids[1]) && cmd::pid_alive(pids[2]), "a core weftd died");
    c.pass();
    Ok(())
}
