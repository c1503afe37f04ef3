//! Pod egress (flanneld's `--ip-masq` and `--iptables-forward-rules`):
//! flannel's rules ([`rules`]) kept in weft's nftables table ([`nft`]),
//! checked at start, on every netfilter change ([`notify`]) and on the
//! event loop's resync tick, and replaced in one transaction only when
//! what the kernel holds differs from what is wanted. Rules someone else
//! removed come back within a moment; a restarted weftd that finds them in
//! place leaves them alone (no window without masquerading, established
//! connections keep their NAT); `--cleanup-on-exit` removes them.
//!
//! Without nft or without nf_tables/NAT in the kernel, weftd says what is
//! missing and runs on without them (pods still reach each other).
//!
//! Once weft's rules are in place, flanneld's iptables chains they replace
//! go ([`flannel_rules`], off the event loop's thread).
pub mod flannel_rules;
pub mod nft;
pub mod notify;
pub mod rules;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::subnet::{Ipv4Net, Ipv6Net};

/// The node's IPv4 network and subnet (None on an IPv6-only network).
pub type V4 = Option<(Ipv4Net, Ipv4Net)>;

/// A dual-stack or IPv6-only node's IPv6 network and subnet: flannel
/// masquerades IPv6 pod egress with the same rules (ip6tables there, `ip6`
/// matches here).
pub type V6 = Option<(Ipv6Net, Ipv6Net)>;

/// Transactions weftd applied to put its rules in place (at start included).
pub static APPLIED: AtomicU64 = AtomicU64::new(0);
/// Of those, the ones that put back rules someone changed or removed after
/// they were in place.
pub static RESTORED: AtomicU64 = AtomicU64::new(0);
/// Checks of the kernel's rules against the wanted ones.
pub static CHECKS: AtomicU64 = AtomicU64::new(0);
/// 1 while the kernel holds the wanted rules, 0 when the last check or
/// transaction failed; 2 when nothing is wanted (no --ip-masq, no forward rules).
pub static STATE: AtomicU64 = AtomicU64::new(2);
/// flanneld's iptables objects (jumps and chains) weftd removed.
pub static FLANNEL_REMOVED: AtomicU64 = AtomicU64::new(0);

/// The takeover from flanneld's rules ([`flannel_rules`]): waiting for
/// weft's rules, running on a blocking thread, or done.
enum Takeover {
    Waiting(Box<flannel_rules::Takeover>),
    Running(tokio::task::JoinHandle<(Box<flannel_rules::Takeover>, Result<u64, String>)>),
    Done,
}

pub struct Egress {
    rules: Vec<rules::Rule>,
    masquerade: bool,
    /// The state read back after our last transaction (or found equal at
    /// start): a listing nft writes differently from our rendering still
    /// counts as ours, so our own change notifications never loop.
    accepted: Option<nft::State>,
    /// The last error logged (each new one is logged once).
    last_error: Option<String>,
    notify: Option<notify::Notify>,
    takeover: Takeover,
    /// The takeover's last error (each new one is logged once).
    takeover_error: Option<String>,
}

fn cidr(n: &Ipv4Net) -> rules::Cidr {
    rules::Cidr { addr: n.network_addr().into(), len: n.prefix_len() }
}

fn cidr6(n: &Ipv6Net) -> rules::Cidr {
    rules::Cidr { addr: n.network_addr().into(), len: n.prefix_len() }
}

/// The rules weftd's flags ask for, for our IPv4 subnet in the IPv4
/// network, and on a dual-stack node the same list for IPv6 after them (the
/// rule that leaves kube-proxy's marked packets alone matches both
/// families, once); an IPv6-only node has the IPv6 list only.
pub fn rules_for(args: &crate::cli::Args, v4: V4, v6: V6) -> Vec<rules::Rule> {
    let params = |network, subnet| rules::Params {
        network,
        subnet,
        masquerade: args.ip_masq,
        fully_random: !args.ip_masq_fully_random_disable,
        forward: args.iptables_forward_rules,
    };
    let mut out = match v4 {
        Some((network, own)) => rules::rules(&params(cidr(&network), cidr(&own))),
        None => vec![],
    };
    if let Some((net6, own6)) = v6 {
        for r in rules::rules(&params(cidr6(&net6), cidr6(&own6))) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

/// `weftd status`'s line: whether the kernel holds the rules `args` ask
/// for, for the network and subnets of the node's subnet.env.
pub fn status(args: &crate::cli::Args, v4: V4, v6: V6) -> String {
    let rules = rules_for(args, v4, v6);
    if rules.is_empty() {
        return "none wanted (no --ip-masq, --iptables-forward-rules=false)".into();
    }
    let masq = if args.ip_masq { "masquerading" } else { "not masquerading (no --ip-masq)" };
    match nft::read() {
        Ok((have, _)) if have == nft::wanted(&rules, have.foreign.is_some()) => format!("in place: table inet {}, {} rules, {masq}", nft::TABLE, rules.len()),
        Ok((have, _)) if have.table.is_none() => format!("MISSING: no table inet {} (masquerading is off)", nft::TABLE),
        Ok(_) => format!("table inet {} differs from the wanted rules (weftd restores them while it runs)", nft::TABLE),
        Err(e) => format!("unknown, masquerading is off: {}", nft::describe(&e)),
    }
}

impl Egress {
    /// The rules for our lease `own` in `network`; None when the flags want
    /// none (no --ip-masq and --iptables-forward-rules=false).
    pub fn new(args: &crate::cli::Args, v4: V4, v6: V6) -> Option<Egress> {
        let rules = rules_for(args, v4, v6);
        if rules.is_empty() {
            return None;
        }
        let notify = match notify::Notify::open() {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("egress rules: no netfilter change notifications ({e:#}); rules someone removes come back at the next resync");
                None
            }
        };
        let takeover = Takeover::Waiting(Box::new(flannel_rules::Takeover::new(replaces(args, v4, v6), networks(v4, v6))));
        Some(Egress { rules, masquerade: args.ip_masq, accepted: None, last_error: None, notify, takeover, takeover_error: None })
    }

    /// Compares the kernel's rules with the wanted ones and replaces them in
    /// one transaction if they differ. Errors are logged (once each) and
    /// leave weftd running.
    pub fn ensure(&mut self) {
        CHECKS.fetch_add(1, Relaxed);
        match self.try_ensure() {
            Ok(changed) => {
                if self.last_error.take().is_some() || changed {
                    log::info!(
                        "egress rules in place (table inet {}: {} rules{})",
                        nft::TABLE,
                        self.rules.len(),
                        if self.masquerade { ", masquerading" } else { "" }
                    );
                }
                STATE.store(1, Relaxed);
                self.take_over();
            }
            Err(e) => {
                STATE.store(0, Relaxed);
                let what = if self.masquerade { "--ip-masq: pods' traffic to the outside is NOT masqueraded" } else { "forward rules not installed" };
                let msg = format!("{what}: {e}");
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    log::error!("{msg}; weft keeps forwarding between pods and retries every resync");
                    self.last_error = Some(msg);
                }
            }
        }
    }

    /// Ok(true) when a transaction ran.
    fn try_ensure(&mut self) -> Result<bool, String> {
        let (have, handles) = nft::read().map_err(|e| nft::describe(&e))?;
        let want = nft::wanted(&self.rules, have.foreign.is_some());
        if have == want || self.accepted.as_ref() == Some(&have) {
            self.accepted = Some(have);
            return Ok(false);
        }
        let batch = nft::replace_batch(&self.rules, have.foreign.is_some(), &handles);
        nft::apply(&batch).map_err(|e| {
            let d = nft::describe(&e);
            if self.masquerade && d.contains("nft failed") {
                format!("{d} (does the kernel have nf_tables with NAT: nft_chain_nat, nft_masq?)")
            } else {
                d
            }
        })?;
        APPLIED.fetch_add(1, Relaxed);
        if self.accepted.is_some() {
            RESTORED.fetch_add(1, Relaxed);
            log::warn!("egress rules were changed by someone else: restored (table inet {})", nft::TABLE);
        }
        let (after, _) = nft::read().map_err(|e| nft::describe(&e))?;
        if after != nft::wanted(&self.rules, after.foreign.is_some()) {
            log::debug!("nft lists our rules differently from how weft renders them: {after:?}");
        }
        self.accepted = Some(after);
        Ok(true)
    }

    /// With weft's rules in place: starts the takeover from flanneld's
    /// rules on a blocking thread (it runs `nft` and iptables), or collects
    /// a finished one; a failed one starts again at the next check with
    /// the rules in place (the resync tick), its error logged once.
    fn take_over(&mut self) {
        self.takeover = match std::mem::replace(&mut self.takeover, Takeover::Done) {
            Takeover::Done => Takeover::Done,
            Takeover::Running(h) if !h.is_finished() => Takeover::Running(h),
            Takeover::Running(h) => match futures::FutureExt::now_or_never(h) {
                Some(Ok((t, r))) => self.took_over(t, r),
                Some(Err(e)) => {
                    log::warn!("taking over from flanneld's rules: {e}; flanneld's rules stay");
                    Takeover::Done
                }
                None => Takeover::Done,
            },
            Takeover::Waiting(mut t) => {
                let (rules, accepted) = (self.rules.clone(), self.accepted.clone());
                let in_place = move || in_place(&rules, accepted.as_ref());
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => Takeover::Running(rt.spawn_blocking(move || {
                        let r = t.run(in_place);
                        (t, r)
                    })),
                    Err(_) => {
                        let r = t.run(in_place);
                        self.took_over(t, r)
                    }
                }
            }
        };
    }

    fn took_over(&mut self, t: Box<flannel_rules::Takeover>, r: Result<u64, String>) -> Takeover {
        match r {
            Ok(_) => {
                self.takeover_error = None;
                Takeover::Done
            }
            Err(e) => {
                if self.takeover_error.as_deref() != Some(e.as_str()) {
                    log::warn!("taking over from flanneld's iptables rules: {e}; weft's rules are in place, flanneld's stay until the next try");
                    self.takeover_error = Some(e);
                }
                Takeover::Waiting(t)
            }
        }
    }

    /// Resolves when netfilter changed (never without notifications).
    pub async fn changed(&mut self) {
        match &mut self.notify {
            Some(n) => n.changed().await,
            None => std::future::pending().await,
        }
    }

    /// `--cleanup-on-exit`: our table and our tagged FORWARD rules go.
    pub fn cleanup(&mut self) {
        remove();
    }
}

/// Which of flanneld's chains weft's rules replace: FLANNEL-POSTRTG with
/// `--ip-masq`, FLANNEL-FWD with the forward accepts, each family only
/// where weft has a network of it.
fn replaces(args: &crate::cli::Args, v4: V4, v6: V6) -> flannel_rules::Replaces {
    let has = [v4.is_some(), v6.is_some()];
    flannel_rules::Replaces { masq: has.map(|h| h && args.ip_masq), fwd: has.map(|h| h && args.iptables_forward_rules) }
}

/// The IPv4 and IPv6 networks weft's rules cover, for the takeover's log.
fn networks(v4: V4, v6: V6) -> [String; 2] {
    [v4.map(|(n, _)| cidr(&n).to_string()).unwrap_or_default(), v6.map(|(n, _)| cidr6(&n).to_string()).unwrap_or_default()]
}

/// Whether the kernel still holds weft's rules as the last check left them
/// (or as weft renders them): what the takeover needs before it removes
/// anything of flanneld's.
fn in_place(rules: &[rules::Rule], accepted: Option<&nft::State>) -> Result<bool, String> {
    let (have, _) = nft::read().map_err(|e| nft::describe(&e))?;
    Ok(have.table.is_some() && (Some(&have) == accepted || have == nft::wanted(rules, have.foreign.is_some())))
}

/// Removes our table and our tagged rules in `ip filter FORWARD` (also when
/// weftd is stopped before its event loop ran, so no [`Egress`] exists yet
/// but an earlier run's rules may).
pub fn remove() {
    let res = nft::read().and_then(|(have, handles)| nft::apply(&nft::replace_batch(&[], have.foreign.is_some(), &handles)));
    match res {
        Ok(()) => log::info!("removed the egress rules (table inet {})", nft::TABLE),
        Err(e) => log::warn!("removing the egress rules: {}", nft::describe(&e)),
    }
}
