//! Taking over from flanneld's iptables rules (issue 24): once weft's own
//! table is in place, flanneld's chains that weft's rules replace go, so a
//! node swapped from flanneld does not keep two sets of masquerade and
//! forward rules. `FLANNEL-POSTRTG` (nat, jumped to from `POSTROUTING`) is
//! replaced by `--ip-masq`, `FLANNEL-FWD` (filter, from `FORWARD`) by
//! weft's forward accepts (`--iptables-forward-rules`, on by default); IPv4
//! and IPv6 each only where weft has rules for that family. A chain whose
//! replacement is off stays, said once.
//!
//! Order: nothing is removed until weft's table is read back as the last
//! [`super::Egress::ensure`] left it, so masquerading and forwarding never
//! lapse; then per chain its jumps go first (from then on the chain is
//! dead code), then its rules and the chain. Established connections keep
//! their NAT: conntrack decided it once, and weft's nat chain keeps the
//! kernel's NAT hooks registered.
//!
//! How: flanneld writes through the `iptables` binary, which on a node is
//! iptables-nft or iptables-legacy.
//! - iptables-nft's rules are nftables objects (tables `ip nat`, `ip
//!   filter`, `ip6 nat`, `ip6 filter`): weftd reads and deletes them with
//!   `nft`, as it handles its own table, so its image needs no iptables;
//!   each chain goes in one transaction (jumps deleted by handle, matched
//!   by their target whatever their comment; the chain flushed and
//!   deleted), which the kernel applies whole or not at all.
//! - Legacy rules live in x_tables, which only the legacy binaries reach
//!   (`iptables-legacy`, or `iptables` when its `--version` says legacy;
//!   the same for ip6tables). weftd runs them only where
//!   `/proc/net/ip{,6}_tables_names` lists the table: listing a table
//!   through the binary would create it. No table there means no legacy
//!   rules; a table but no binary to reach it is said once (a warning:
//!   flannel's legacy rules, if any, stay).
//!
//! A `FLANNEL-FWD` jump goes only from a `FORWARD` chain whose policy is
//! accept or that holds weft's own tagged accepts (iptables-nft's `ip
//! filter FORWARD`, see [`super::nft`]): elsewhere a drop policy (docker
//! sets one) would drop pod traffic flannel's accepts let through.
//!
//! Blocking (runs `nft` and iptables): the caller runs it off the event
//! loop. Errors are returned; what it removed and what it kept it logs
//! itself, each once.
use std::{collections::HashSet, process::Command};

use nftables::{
    batch::Batch,
    schema::{Chain as NfChain, FlushObject, NfCmd, NfListObject, Rule as NfRule},
    types::NfFamily,
};
use serde_json::Value;

use super::nft;

/// One of flannel's chains and the built-in chain that jumps to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlannelChain {
    table: &'static str,
    base: &'static str,
    name: &'static str,
}

const POSTRTG: FlannelChain = FlannelChain { table: "nat", base: "POSTROUTING", name: "FLANNEL-POSTRTG" };
const FWD: FlannelChain = FlannelChain { table: "filter", base: "FORWARD", name: "FLANNEL-FWD" };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn nft(self) -> NfFamily {
        match self {
            Family::V4 => NfFamily::IP,
            Family::V6 => NfFamily::IP6,
        }
    }

    fn nft_name(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The legacy x_tables this network namespace has.
    fn legacy_names(self) -> &'static str {
        match self {
            Family::V4 => "/proc/net/ip_tables_names",
            Family::V6 => "/proc/net/ip6_tables_names",
        }
    }

    fn legacy_bins(self) -> [&'static str; 2] {
        match self {
            Family::V4 => ["iptables-legacy", "iptables"],
            Family::V6 => ["ip6tables-legacy", "ip6tables"],
        }
    }
}

/// Which of flannel's chains weft's rules replace, per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replaces {
    /// `--ip-masq` and a network of that family: FLANNEL-POSTRTG.
    pub masq: [bool; 2],
    /// Forward accepts and a network of that family: FLANNEL-FWD.
    pub fwd: [bool; 2],
}

/// Where a chain was found, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backend {
    Nft,
    /// The legacy binary (`iptables-legacy`, `ip6tables`, ...).
    Legacy(String),
}

/// What [`Takeover::run`] keeps between runs: what weft's rules cover, for
/// the log, and what it said already (each message once per weftd run).
pub struct Takeover {
    replaces: Replaces,
    /// The IPv4 and the IPv6 network weft's rules cover ("" without one).
    networks: [String; 2],
    said: HashSet<String>,
}

impl Takeover {
    pub fn new(replaces: Replaces, networks: [String; 2]) -> Takeover {
        Takeover { replaces, networks, said: HashSet::new() }
    }

    fn say(&mut self, warn: bool, msg: String) {
        if self.said.insert(msg.clone()) {
            if warn {
                log::warn!("{msg}");
            } else {
                log::info!("{msg}");
            }
        }
    }

    /// Removes flanneld's chains that weft's rules replace, iptables-nft's
    /// and legacy, IPv4 and IPv6, if `weft_in_place()` says weft's own
    /// table is there. Returns how many objects (jumps and chains) went;
    /// the first error after trying every chain.
    pub fn run(&mut self, weft_in_place: impl Fn() -> Result<bool, String>) -> Result<u64, String> {
        if !weft_in_place()? {
            return Err("weft's own egress rules are not in place: flanneld's rules stay".into());
        }
        let (mut removed, mut first_err) = (0, None);
        for fam in [Family::V4, Family::V6] {
            let mut backends = vec![Backend::Nft];
            match self.legacy_backend(fam) {
                Ok(Some(b)) => backends.push(b),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            for b in &backends {
                for c in [POSTRTG, FWD] {
                    match self.one(fam, b, c) {
                        Ok(n) => removed += n,
                        Err(e) => {
                            first_err.get_or_insert(format!("{} ({}): {e}", c.name, place(fam, b, c)));
                        }
                    }
                }
            }
        }
        match first_err {
            None => Ok(removed),
            Some(e) => Err(e),
        }
    }

    /// The legacy binary to look through, when the namespace has a legacy
    /// table flannel uses; None when it has none (nothing to look for).
    fn legacy_backend(&mut self, fam: Family) -> Result<Option<Backend>, String> {
        let names = std::fs::read_to_string(fam.legacy_names()).unwrap_or_default();
        let tables: Vec<&str> = names.lines().filter(|t| *t == POSTRTG.table || *t == FWD.table).collect();
        if tables.is_empty() {
            return Ok(None);
        }
        for bin in fam.legacy_bins() {
            if let Ok(o) = Command::new(bin).arg("--version").output() {
                if String::from_utf8_lossy(&o.stdout).contains("legacy") {
                    return Ok(Some(Backend::Legacy(bin.to_string())));
                }
            }
        }
        self.say(
            true,
            format!(
                "legacy iptables tables {} exist ({}) but neither {} nor a legacy {} is in PATH: flanneld's legacy rules there, if any, stay (Debian package iptables)",
                tables.join(", "),
                fam.legacy_names(),
                fam.legacy_bins()[0],
                fam.legacy_bins()[1],
            ),
        );
        Ok(None)
    }

    /// Chain `c` of family `fam` in backend `b`: removed when weft replaces
    /// it (its jumps and itself: the count), kept and said otherwise.
    fn one(&mut self, fam: Family, b: &Backend, c: FlannelChain) -> Result<u64, String> {
        let Some(rules) = chain_rules(fam, b, c.table, c.name)? else { return Ok(0) };
        let i = fam as usize;
        let whose = format!("flanneld's {} ({})", c.name, place(fam, b, c));
        let (replaced, flag) = if c == POSTRTG { (self.replaces.masq[i], "--ip-masq") } else { (self.replaces.fwd[i], "--iptables-forward-rules") };
        if !replaced {
            let why = if self.replaces.masq[i] || self.replaces.fwd[i] || fam == Family::V4 {
                format!("weftd runs without {flag}")
            } else {
                "weft has no IPv6 network here".into()
            };
            self.say(false, format!("{whose} left in place: {why}, so flanneld's rules still apply"));
            return Ok(0);
        }
        let jumps = jumps(fam, b, c)?;
        if c == FWD && !jumps.forward_replaced {
            self.say(
                true,
                format!("{whose} left in place: {} {}'s policy is not accept and weft's accepts are not in it, so without flannel's jump pod traffic would be dropped there", c.table, c.base),
            );
            return Ok(0);
        }
        remove(fam, b, c, &jumps)?;
        let what = if c == POSTRTG { "masquerade" } else { "accept forwarding" };
        log::info!(
            "took over from {whose}: weft's nft rules (table inet {}) {what} for {}; removed {} jump{} from {} and the chain with its {rules} rule{}",
            nft::TABLE,
            self.networks[i],
            jumps.count(),
            if jumps.count() == 1 { "" } else { "s" },
            c.base,
            if rules == 1 { "" } else { "s" },
        );
        super::FLANNEL_REMOVED.fetch_add(jumps.count() as u64 + 1, std::sync::atomic::Ordering::Relaxed);
        Ok(jumps.count() as u64 + 1)
    }
}

/// "iptables-nft, ip nat" or "iptables-legacy, nat".
fn place(fam: Family, b: &Backend, c: FlannelChain) -> String {
    match b {
        Backend::Nft => format!("iptables-nft, {} {}", fam.nft_name(), c.table),
        Backend::Legacy(bin) => format!("{bin}, {}", c.table),
    }
}

/// The jumps to one of flannel's chains in its built-in chain.
#[derive(Debug, Default)]
struct Jumps {
    /// nft: rule handles.
    handles: Vec<u64>,
    /// legacy: each jump's rule as `-S` prints it, split into arguments
    /// after the chain name (for `-D <chain> <args>`).
    specs: Vec<Vec<String>>,
    /// For FLANNEL-FWD: the FORWARD chain's policy is accept or it holds
    /// weft's tagged accepts.
    forward_replaced: bool,
}

impl Jumps {
    fn count(&self) -> usize {
        self.handles.len() + self.specs.len()
    }
}

/// The number of rules in chain `name`, None when it does not exist.
fn chain_rules(fam: Family, b: &Backend, table: &str, name: &str) -> Result<Option<usize>, String> {
    match b {
        Backend::Nft => Ok(nft::list(&["chain", fam.nft_name(), table, name])
            .map_err(|e| nft::describe(&e))?
            .map(|objs| objs.iter().filter(|o| o.get("rule").is_some()).count())),
        Backend::Legacy(bin) => {
            let out = legacy(bin, &["-t", table, "-S", name])?;
            Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("-A ")).count()))
        }
    }
}

/// Whether nft rule `r` jumps (or goes) to `target`.
fn nft_jumps_to(r: &Value, target: &str) -> bool {
    r["expr"].as_array().into_iter().flatten().any(|s| ["jump", "goto"].iter().any(|k| s[*k]["target"] == target))
}

fn jumps(fam: Family, b: &Backend, c: FlannelChain) -> Result<Jumps, String> {
    let mut j = Jumps::default();
    match b {
        Backend::Nft => {
            let objs = nft::list(&["chain", fam.nft_name(), c.table, c.base]).map_err(|e| nft::describe(&e))?.unwrap_or_default();
            let policy_accept = objs.iter().filter_map(|o| o.get("chain")).any(|ch| ch["policy"] == "accept");
            let rules: Vec<&Value> = objs.iter().filter_map(|o| o.get("rule")).collect();
            j.handles = rules.iter().filter(|r| nft_jumps_to(r, c.name)).filter_map(|r| r["handle"].as_u64()).collect();
            j.forward_replaced = policy_accept || rules.iter().any(|r| r["comment"] == nft::FOREIGN_COMMENT);
        }
        Backend::Legacy(bin) => {
            let out = legacy(bin, &["-t", c.table, "-S", c.base])?;
            if !out.status.success() {
                return Err(format!("{bin} -t {} -S {}: {}", c.table, c.base, String::from_utf8_lossy(&out.stderr).trim()));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            j.forward_replaced = text.lines().any(|l| l == format!("-P {} ACCEPT", c.base));
            j.specs = text.lines().filter_map(|l| legacy_jump(l, c.base, c.name)).collect();
        }
    }
    Ok(j)
}

/// The arguments after `-A <base>` of `-S` line `line` when it jumps (or
/// goes) to `target`.
fn legacy_jump(line: &str, base: &str, target: &str) -> Option<Vec<String>> {
    let words = save_words(line);
    let rest = match words.as_slice() {
        [a, b, rest @ ..] if a == "-A" && b == base => rest,
        _ => return None,
    };
    rest.windows(2).any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == target).then(|| rest.to_vec())
}

/// Splits a line of `iptables -S` into arguments: words separated by
/// spaces, `"..."` quoting with `\"` and `\\` escapes inside (how iptables
/// prints a comment).
fn save_words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `<bin> -w 5 <args>` (waiting for the xtables lock as flanneld does).
fn legacy(bin: &str, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new(bin).args(["-w", "5"]).args(args).output().map_err(|e| format!("running {bin}: {e}"))
}

fn legacy_ok(bin: &str, args: &[&str]) -> Result<(), String> {
    let out = legacy(bin, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{bin} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Removes chain `c` and its `jumps`: one nft transaction, or the legacy
/// binary's jumps first, then flush and delete.
fn remove(fam: Family, b: &Backend, c: FlannelChain, jumps: &Jumps) -> Result<(), String> {
    match b {
        Backend::Nft => nft::apply(&removal_batch(fam, c, &jumps.handles)).map_err(|e| nft::describe(&e)),
        Backend::Legacy(bin) => {
            for spec in &jumps.specs {
                let mut args = vec!["-t", c.table, "-D", c.base];
                args.extend(spec.iter().map(String::as_str));
                legacy_ok(bin, &args)?;
            }
            legacy_ok(bin, &["-t", c.table, "-F", c.name])?;
            legacy_ok(bin, &["-t", c.table, "-X", c.name])
        }
    }
}

/// One transaction: the jumps (by handle) out of `c.base`, then `c`
/// flushed and deleted.
fn removal_batch(fam: Family, c: FlannelChain, handles: &[u64]) -> nftables::schema::Nftables<'static> {
    let mut b = Batch::new();
    for h in handles {
        b.delete(NfListObject::Rule(NfRule {
            family: fam.nft(),
            table: c.table.into(),
            chain: c.base.into(),
            expr: Vec::new().into(),
            handle: u32::try_from(*h).ok(),
            index: None,
            comment: None,
        }));
    }
    let chain = NfChain { family: fam.nft(), table: c.table.into(), name: c.name.into(), ..NfChain::default() };
    b.add_cmd(NfCmd::Flush(FlushObject::Chain(chain.clone())));
    b.delete(NfListObject::Chain(chain));
    b.to_nftables()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_words_keep_quoted_comments() {
        assert_eq!(
            save_words(r#"-A POSTROUTING -m comment --comment "flanneld \"masq\" x" -j FLANNEL-POSTRTG"#),
            ["-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld \"masq\" x", "-j", "FLANNEL-POSTRTG"]
        );
    }

    #[test]
    fn legacy_jumps_by_target_whatever_the_comment() {
        let spec = legacy_jump(r#"-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG"#, "POSTROUTING", "FLANNEL-POSTRTG");
        assert_eq!(spec.unwrap(), ["-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"]);
        assert_eq!(legacy_jump("-A POSTROUTING -g FLANNEL-POSTRTG", "POSTROUTING", "FLANNEL-POSTRTG").unwrap(), ["-g", "FLANNEL-POSTRTG"]);
        assert!(legacy_jump("-A POSTROUTING -j KUBE-POSTROUTING", "POSTROUTING", "FLANNEL-POSTRTG").is_none());
        assert!(legacy_jump("-A FLANNEL-POSTRTG -j RETURN", "POSTROUTING", "FLANNEL-POSTRTG").is_none());
        assert!(legacy_jump("-P POSTROUTING ACCEPT", "POSTROUTING", "FLANNEL-POSTRTG").is_none());
    }

    /// What nft 1.0.6 lists for iptables-nft's jump (its comment an xt match).
    #[test]
    fn nft_jumps_by_target() {
        let r: Value = serde_json::from_str(
            r#"{"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 4, "expr": [{"xt": {"type": "match", "name": "comment"}}, {"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "FLANNEL-POSTRTG"}}]}"#,
        )
        .unwrap();
        assert!(nft_jumps_to(&r, "FLANNEL-POSTRTG"));
        assert!(!nft_jumps_to(&r, "FLANNEL-FWD"));
    }

    #[test]
    fn one_transaction_per_chain_jumps_first() {
        let cmds = nft::batch_commands(&removal_batch(Family::V6, FWD, &[7, 9]), |body| {
            format!(
                "{} {} {}",
                body["family"],
                body.get("chain").or(body.get("name")).unwrap_or(&Value::Null),
                body.get("handle").map(|h| h.to_string()).unwrap_or_default()
            )
        });
        assert_eq!(
            cmds,
            [
                r#"delete rule "ip6" "FORWARD" 7"#,
                r#"delete rule "ip6" "FORWARD" 9"#,
                r#"flush chain "ip6" "FLANNEL-FWD""#,
                r#"delete chain "ip6" "FLANNEL-FWD""#,
            ]
        );
    }
}
