//! Hostile packets: every program that faces untrusted frames (decap: the
//! wire; encap: the pods) runs under BPF_PROG_TEST_RUN over a
//! corpus of malformed frames kept in the repo (`corpus/hostile.txt`:
//! truncated at every offset, IP options, fragments, non-IPv4, VLAN tags,
//! wrong VNI, bad lengths, TTL 0 and 1, spoofed and unknown senders) and over
//! 1,000,000 random mutations of it (fixed seed). For every frame:
//! - the verdict is pass, drop, or a redirect, and a redirect happens exactly
//!   when an independent model of the acceptance rules (written here from
//!   the wire format, not from the program) says the frame is acceptable;
//!   with a kernel vxlan overlay (`cfg_flags::KERNEL_VXLAN`) decap instead
//!   passes acceptable frames on encapsulated, counted `decap_kernel`
//!   exactly when the model accepts them;
//! - the counters account for it exactly once;
//!
//! and over the whole run the kernel logs no warning (read from /dev/kmsg
//! as it is written).
//!
//! The corpus is regenerated with `WEFT_WRITE_CORPUS=1`.
mod frames;

use frames::*;
use weft_agent::dataplane::Datapath;
use weft_common::{prog_names, stat};

const VXLAN: u16 = 8472;

/// What node B (192.168.77.2, VNI 1, peers A = 10.244.1.0/24 and itself =
/// 10.244.2.0/24) must accept: the model of decapsulation.
fn decap_model(f: &[u8]) -> bool {
    let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]) as usize;
    if f.len() < 14 + 20 + 8 + 8 + 14 + 20 {
        return false;
    }
    let (ip, udp, vx, ieth, iip) = (14, 34, 42, 50, 64);
    let outer_ok = be16(12) == 0x0800
        && f[ip] == 0x45
        && f[ip + 9] == 17
        && f[ip + 6] & 0x3f == 0
        && f[ip + 7] == 0
        && f[ip + 16..ip + 20] == NODE_B
        && be16(udp + 2) == VXLAN as usize;
    let vxlan_ok = f[vx] & 0x08 != 0 && f[vx + 4..vx + 7] == [0, 0, 1];
    let inner_ok = be16(ieth + 12) == 0x0800 && f[iip] >> 4 == 4 && f[iip] & 0xf >= 5;
    let lengths_ok = be16(udp + 4) + 20 == be16(ip + 2) && be16(iip + 2) + 50 <= be16(ip + 2) && 14 + be16(ip + 2) <= f.len();
    let src = &f[ip + 12..ip + 16];
    let inner_src = &f[iip + 12..iip + 15];
    let sender_ok = (src == NODE_A && inner_src == [10, 244, 1]) || (src == NODE_B && inner_src == [10, 244, 2]);
    outer_ok && vxlan_ok && inner_ok && lengths_ok && sender_ok
}

/// Node A's encapsulation (MTU 1500): any IPv4 packet to a leased subnet
/// that fits once encapsulated.
fn encap_model(f: &[u8]) -> bool {
    f.len() >= 34
        && f[12..14] == [0x08, 0x00]
        && f[14] >> 4 == 4
        && f[14] & 0xf >= 5
        && (20..=f.len() - 14).contains(&(u16::from_be_bytes([f[16], f[17]]) as usize))
        && f[30..32] == [10, 244]
        && (f[32] == 1 || f[32] == 2)
        && f.len() - 14 + 50 <= 1500
}

fn valid_vxlan() -> Vec<u8> {
    vxlan_frame(NODE_B, VXLAN, 1, 0x08, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 4000, 5201, 64, 64))
}

fn fix_ip_csum(f: &mut [u8], at: usize) {
    let ihl = ((f[at] & 0xf) as usize * 4).min(f.len() - at);
    f[at + 10] = 0;
    f[at + 11] = 0;
    let c = csum(&f[at..at + ihl]);
    f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
}

/// The corpus: named frames for decap (`d`) and encap (`e`).
fn generate() -> Vec<(String, char, Vec<u8>)> {
    let mut out = vec![];
    let v = valid_vxlan();
    out.push(("valid VXLAN from A".into(), 'd', v.clone()));
    for cut in 14..v.len() {
        out.push((format!("VXLAN truncated to {cut}"), 'd', v[..cut].to_vec()));
    }
    let mut opts = v.clone();
    opts.splice(34..34, [1, 1, 1, 0]);
    opts[14] = 0x46;
    let tl = (u16::from_be_bytes([opts[16], opts[17]]) + 4).to_be_bytes();
    opts[16..18].copy_from_slice(&tl);
    fix_ip_csum(&mut opts, 14);
    out.push(("outer IP options".into(), 'd', opts));
    for (name, b20, b21) in [("outer MF fragment", 0x20, 0), ("outer fragment offset 8", 0, 1), ("outer last fragment", 0x00, 0x40)] {
        let mut f = v.clone();
        f[20] = b20;
        f[21] = b21;
        fix_ip_csum(&mut f, 14);
        out.push((name.into(), 'd', f));
    }
    let mut vlan = v.clone();
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    out.push(("VLAN tag before IPv4".into(), 'd', vlan));
    let mut arp = v.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    out.push(("ARP ethertype".into(), 'd', arp));
    let mut v6 = v.clone();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    out.push(("IPv6 ethertype".into(), 'd', v6));
    for (name, vni, flags) in [("wrong VNI", 2u32, 0x08u8), ("VNI 0", 0, 0x08), ("no I flag", 1, 0x00)] {
        out.push((name.into(), 'd', vxlan_frame(NODE_B, VXLAN, vni, flags, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 10))));
    }
    for (name, at, val) in [
        ("UDP length short", 38usize, 0u16),
        ("UDP length long", 38, 0xffff),
        ("outer total length short", 16, 40),
        ("outer total length long", 16, 0xffff),
        ("inner total length huge", 66, 0xffff),
    ] {
        let mut f = v.clone();
        f[at..at + 2].copy_from_slice(&val.to_be_bytes());
        if at == 16 {
            fix_ip_csum(&mut f, 14);
        }
        out.push((name.into(), 'd', f));
    }
    for ttl in [0u8, 1] {
        let mut f = v.clone();
        f[22] = ttl;
        fix_ip_csum(&mut f, 14);
        out.push((format!("outer TTL {ttl}"), 'd', f));
        out.push((format!("inner TTL {ttl}"), 'd', vxlan_frame(NODE_B, VXLAN, 1, 0x08, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, ttl, 10))));
    }
    let mut stranger = v.clone();
    stranger[26..30].copy_from_slice(&[192, 168, 77, 99]);
    fix_ip_csum(&mut stranger, 14);
    out.push(("from an address without a lease".into(), 'd', stranger));
    out.push((
        "inner source in B's own subnet, from A".into(),
        'd',
        vxlan_frame(NODE_B, VXLAN, 1, 0x08, &ipv4_udp([10, 244, 2, 9], [10, 244, 2, 3], 1, 2, 64, 10)),
    ));
    out.push(("inner IPv6 in VXLAN".into(), 'd', {
        let mut f = v.clone();
        f[62..64].copy_from_slice(&[0x86, 0xdd]);
        f
    }));
    // Encap: what pods may send.
    let p = eth(MAC_A, POD_SRC_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 100));
    out.push(("valid pod packet".into(), 'e', p.clone()));
    for cut in 14..p.len() {
        out.push((format!("pod packet truncated to {cut}"), 'e', p[..cut].to_vec()));
    }
    for ttl in [0u8, 1] {
        out.push((format!("pod packet TTL {ttl}"), 'e', eth(MAC_A, POD_SRC_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, ttl, 10))));
    }
    let mut frag = p.clone();
    frag[20] = 0x20;
    fix_ip_csum(&mut frag, 14);
    out.push(("pod fragment".into(), 'e', frag));
    let mut pvlan = p.clone();
    pvlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    out.push(("pod VLAN tag".into(), 'e', pvlan));
    out.push(("pod packet to no lease".into(), 'e', eth(MAC_A, POD_SRC_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 99, 0, 3], 1, 2, 64, 10))));
    out.push(("pod packet one byte too big".into(), 'e', eth(MAC_A, POD_SRC_MAC, 0x0800, &ipv4_udp([10, 244, 1, 2], [10, 244, 2, 3], 1, 2, 64, 1451 - 28))));
    out
}

const POD_SRC_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 9];

fn corpus_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/hostile.txt")
}

fn load_corpus() -> Vec<(String, char, Vec<u8>)> {
    if std::env::var_os("WEFT_WRITE_CORPUS").is_some() {
        let text: String = generate().iter().map(|(n, k, f)| format!("{k} {} # {n}\n", f.iter().map(|b| format!("{b:02x}")).collect::<String>())).collect();
        std::fs::write(corpus_path(), format!("# weft's hostile-packet corpus: <program d=decap e=encap> <frame hex> # what it is\n{text}")).unwrap();
    }
    let text = std::fs::read_to_string(corpus_path()).expect("tests/corpus/hostile.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (head, name) = l.split_once(" # ").unwrap_or((l, ""));
            let mut it = head.split_whitespace();
            let kind = it.next().unwrap().chars().next().unwrap();
            let hex = it.next().unwrap_or("");
            let frame = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
            (name.to_string(), kind, frame)
        })
        .collect()
}

/// Counters summed, all reasons: what one frame must add exactly once.
fn total(dp: &Datapath) -> u64 {
    dp.stats().unwrap().iter().map(|c| c.packets).sum::<u64>() - dp.stats().unwrap()[stat::DECAP_TO_POD as usize].packets
}

/// The three datapaths frames run through: node B with an ifb overlay
/// (decap redirects what it accepts), node B with a kernel vxlan overlay
/// (decap leaves it to the kernel's socket), node A (encap).
struct Nodes {
    b: Datapath,
    b_kernel: Datapath,
    a: Datapath,
}

/// Runs one frame through decap (`kernel`: on the kernel vxlan overlay's
/// node) or encap and checks the properties; None when the kernel's test
/// harness refuses the frame (it rejects IPv4-typed frames shorter than an
/// IPv4 header).
fn check(n: &mut Nodes, kind: char, kernel: bool, f: &[u8], what: &str) -> Option<bool> {
    use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
    let mut out = vec![0u8; f.len() + 256];
    let (dp, accept) = match (kind, kernel) {
        ('d', true) => (&mut n.b_kernel, decap_model(f)),
        ('d', false) => (&mut n.b, decap_model(f)),
        _ => (&mut n.a, encap_model(f)),
    };
    let before = total(dp);
    let kernel_before = dp.stats().unwrap()[stat::DECAP_KERNEL as usize].packets;
    let name = if kind == 'd' { prog_names::DECAP } else { prog_names::ENCAP };
    let p: &mut SchedClassifier = dp.program_mut(name).unwrap().try_into().unwrap();
    let rc = p.test_run(TestRunOptions { data_in: Some(f), data_out: Some(&mut out), ..TestRunOptions::new() }).ok()?.return_value;
    let counted = total(dp) - before;
    if kernel {
        // Acceptable frames go on encapsulated, counted decap_kernel; the
        // rest is passed (not ours) or dropped, as without the flag.
        let left = dp.stats().unwrap()[stat::DECAP_KERNEL as usize].packets - kernel_before;
        assert!(rc == TC_ACT_OK || rc == TC_ACT_SHOT, "{what}: TC verdict {rc} on the kernel vxlan overlay's node");
        assert_eq!(left, accept as u64, "{what}: {left} left to the kernel's socket (verdict {rc}, model accepts: {accept}) for {f:02x?}");
        assert_eq!(counted, 1, "{what}: counted {counted} times (verdict {rc}): {f:02x?}");
    } else {
        assert!(rc == TC_ACT_OK || rc == TC_ACT_SHOT || rc == TC_ACT_REDIRECT, "{what}: TC verdict {rc}");
        assert_eq!(rc == TC_ACT_REDIRECT, accept, "{what}: verdict {rc} but the model says acceptable = {accept}: {f:02x?}");
        assert_eq!(counted, 1, "{what}: counted {counted} times (verdict {rc}): {f:02x?}");
    }
    Some(accept)
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A random change of the kinds that break parsers: bytes flipped or set to
/// values that mean something to a parser, cut, grown, header fields moved.
fn mutate(r: &mut XorShift, f: &mut Vec<u8>) {
    const INTERESTING: [u8; 10] = [0x00, 0xff, 0x45, 0x46, 0x4f, 0x08, 0x11, 0x21, 0x40, 0x86];
    for _ in 0..1 + r.below(3) {
        let n = f.len();
        match r.below(6) {
            0 => f[r.below(n)] ^= 1 << r.below(8),
            1 => f[r.below(n)] = INTERESTING[r.below(INTERESTING.len())],
            2 => f[r.below(n)] = r.next() as u8,
            3 if n > 15 => f.truncate(14 + r.below(n - 14)),
            4 => {
                let extra = r.below(64);
                f.extend((0..extra).map(|_| r.next() as u8));
            }
            _ => {
                // A 16-bit length or port field set to a boundary value.
                let at = [16, 36, 38, 66, 12, 62][r.below(6)];
                if at + 1 < n {
                    let v: u16 = [0, 1, 19, 20, 0xffff, 8472, 1400, 1500][r.below(8)];
                    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
}

/// Kernel warnings and BPF complaints logged while the test runs, read from
/// /dev/kmsg as they are written (the ring buffer wraps within the run on a
/// busy machine, so reading dmesg afterwards loses the start). Each watch
/// writes its own start and end markers; not seeing both, or falling behind
/// the ring buffer (EPIPE), fails the test: a check that cannot read the
/// log must not pass.
struct KernelLogWatch {
    end_mark: String,
    reader: std::thread::JoinHandle<Result<Vec<String>, String>>,
}

impl KernelLogWatch {
    fn start() -> KernelLogWatch {
        use std::io::{Read, Seek, SeekFrom};
        let tag = format!("weft hostile_packets {} {:?}", std::process::id(), std::time::SystemTime::now());
        let (start_mark, end_mark) = (format!("{tag} start"), format!("{tag} end"));
        let mut kmsg = std::fs::File::open("/dev/kmsg").expect("opening /dev/kmsg (the test needs root)");
        kmsg.seek(SeekFrom::End(0)).expect("seeking /dev/kmsg to its end");
        let (start, end) = (start_mark.clone(), end_mark.clone());
        let reader = std::thread::spawn(move || {
            let (mut started, mut warnings, mut buf) = (false, vec![], vec![0u8; 16 << 10]);
            loop {
                // One record per read: "prio,seq,usec,flags;text".
                let n = match kmsg.read(&mut buf) {
                    Ok(0) => return Err("/dev/kmsg ended".to_string()),
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                        return Err("fell behind the kernel's ring buffer (EPIPE): messages were lost unread".into())
                    }
                    Err(e) => return Err(format!("reading /dev/kmsg: {e}")),
                };
                let rec = String::from_utf8_lossy(&buf[..n]);
                let text = rec.split_once(';').map(|(_, t)| t).unwrap_or(&rec).trim_end();
                if text.contains(&start) {
                    started = true;
                } else if text.contains(&end) {
                    return if started { Ok(warnings) } else { Err("the end marker came without the start marker".into()) };
                } else if text.contains("WARNING:") || text.contains("BUG:") || text.contains("bpf") && text.contains("warn") {
                    warnings.push(text.to_string());
                }
            }
        });
        std::fs::write("/dev/kmsg", format!("{start_mark}\n")).expect("writing the start marker to /dev/kmsg");
        KernelLogWatch { end_mark, reader }
    }

    /// Ends the watch: the warnings logged since [`KernelLogWatch::start`].
    fn finish(self) -> Vec<String> {
        std::fs::write("/dev/kmsg", format!("{}\n", self.end_mark)).expect("writing the end marker to /dev/kmsg");
        match self.reader.join().expect("the /dev/kmsg reader panicked") {
            Ok(w) => w,
            Err(e) => panic!("could not watch the kernel log: {e}"),
        }
    }
}

#[test]
fn hostile_frames_are_passed_or_dropped_and_counted() {
    let kernel_log = KernelLogWatch::start();
    let corpus = load_corpus();
    assert!(corpus.len() > 250, "corpus too small: {}", corpus.len());
    let mut n = Nodes { b: node(NODE_B, MAC_B, 1500), b_kernel: node_kernel_vxlan(NODE_B, MAC_B, 1500), a: node(NODE_A, MAC_A, 1500) };
    let (mut run, mut refused, mut accepted) = (0u64, 0u64, 0u64);
    for (name, kind, f) in &corpus {
        for kernel in [false, kind == &'d'] {
            match check(&mut n, *kind, kernel, f, name) {
                Some(acc) => {
                    run += 1;
                    accepted += acc as u64;
                }
                None => refused += 1,
            }
            if *kind != 'd' {
                break;
            }
        }
    }
    eprintln!("corpus: {} frames, {run} runs, {accepted} acceptable, {refused} refused by the test harness", corpus.len());
    assert!(accepted >= 2, "the corpus lost its valid frames");

    let mutations: u64 = std::env::var("WEFT_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let seeds: Vec<&(String, char, Vec<u8>)> = corpus
        .iter()
        .filter(|(n, _, _)| n.starts_with("valid") || n.contains("TTL") || n.contains("options") || n.contains("fragment") || n.contains("VNI"))
        .collect();
    let mut r = XorShift(0x005e_ed0f_7765_6674);
    let (mut run, mut refused, mut accepted) = (0u64, 0u64, 0u64);
    let t0 = std::time::Instant::now();
    for i in 0..mutations {
        let (name, kind, seed) = seeds[r.below(seeds.len())];
        let mut f = seed.clone();
        mutate(&mut r, &mut f);
        let kernel = *kind == 'd' && i % 4 == 0;
        match check(&mut n, *kind, kernel, &f, &format!("mutation {i} of '{name}'")) {
            Some(acc) => {
                run += 1;
                accepted += acc as u64;
            }
            None => refused += 1,
        }
    }
    eprintln!("{mutations} mutations in {:.1?}: {run} run, {accepted} acceptable, {refused} refused by the test harness", t0.elapsed());
    assert!(run as f64 > mutations as f64 * 0.9, "too many mutations refused: {refused}");
    assert!(accepted > mutations / 100, "the mutations almost never produce acceptable frames ({accepted}): the model's positive side is untested");
    let warnings = kernel_log.finish();
    assert!(warnings.is_empty(), "the kernel logged warnings during the run (see dmesg): {warnings:#?}");
}
