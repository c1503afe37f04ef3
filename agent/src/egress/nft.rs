//! weft's rules in nftables through the `nftables` crate (libnftables' JSON
//! API, one `nft -j -f -` per batch): rendering [`Rule`]s, reading back what
//! the kernel holds, and replacing it in one transaction.
//!
//! Our table is `inet weft` (IPv4 and IPv6 in one table). A batch adds it,
//! deletes it and adds it again with its chains and rules: the kernel
//! applies a batch atomically, so there is never a moment without rules,
//! and whatever someone added to our table is gone afterwards.
//!
//! An `accept` in one base chain does not stop another table's base chain
//! on the same hook from dropping the packet. Where iptables-nft's
//! `table ip filter` has a `FORWARD` chain (docker sets its policy to
//! drop), weft also keeps its two forward accepts there, tagged with the
//! comment [`FOREIGN_COMMENT`], found and de-duplicated by it (appended, as
//! flannel appends its jump to FLANNEL-FWD).
use std::{borrow::Cow, net::IpAddr};

use nftables::{
    batch::Batch,
    expr::{BinaryOperation, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix},
    helper::{self, NftablesError, DEFAULT_NFT},
    schema::{Chain as NfChain, NfListObject, Nftables, Rule as NfRule, Table},
    stmt::{Match, Operator, Statement, NAT},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};
use serde_json::Value;

use super::rules::{AddrMatch, Chain, Rule, Verdict};

pub const TABLE: &str = "weft";
/// The comment on weft's rules in iptables-nft's `ip filter FORWARD`.
pub const FOREIGN_COMMENT: &str = "weft forward";
const FOREIGN_TABLE: &str = "filter";
const FOREIGN_CHAIN: &str = "FORWARD";

fn table() -> Table<'static> {
    Table { family: NfFamily::INet, name: TABLE.into(), handle: None }
}

fn base_chain(c: Chain) -> NfChain<'static> {
    let (ty, hook, prio) = match c {
        // srcnat (100) and filter (0), nftables' standard priorities.
        Chain::Postrouting => (NfChainType::NAT, NfHook::Postrouting, 100),
        Chain::Forward => (NfChainType::Filter, NfHook::Forward, 0),
    };
    NfChain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: c.name().into(),
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..NfChain::default()
    }
}

fn addr_match(field: &'static str, m: &AddrMatch) -> Statement<'static> {
    let proto = match m.cidr.addr {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    };
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField { protocol: proto.into(), field: field.into() }))),
        right: Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(m.cidr.addr.to_string().into())),
            len: m.cidr.len as u32,
        })),
        op: if m.negated { Operator::NEQ } else { Operator::EQ },
    })
}

/// The statements of one rule, in the order nft lists them.
fn statements(r: &Rule) -> Vec<Statement<'static>> {
    let mut v = Vec::new();
    if let Some(m) = r.mark {
        v.push(Statement::Match(Match {
            left: Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Mark })),
                Expression::Number(m),
            ))),
            right: Expression::Number(m),
            op: Operator::EQ,
        }));
    }
    if let Some(m) = &r.saddr {
        v.push(addr_match("saddr", m));
    }
    if let Some(m) = &r.daddr {
        v.push(addr_match("daddr", m));
    }
    v.push(match r.verdict {
        Verdict::Return => Statement::Return(None),
        Verdict::Accept => Statement::Accept(None),
        Verdict::Masquerade { fully_random: false } => Statement::Masquerade(None),
        Verdict::Masquerade { fully_random: true } => {
            Statement::Masquerade(Some(NAT { addr: None, family: None, port: None, flags: Some([nftables::stmt::NATFlag::FullyRandom].into_iter().collect()) }))
        }
    });
    v
}

fn nf_rule(family: NfFamily, table: &str, chain: &str, r: &Rule, comment: Option<&str>) -> NfRule<'static> {
    NfRule {
        family,
        table: Cow::Owned(table.to_string()),
        chain: Cow::Owned(chain.to_string()),
        expr: statements(r).into(),
        handle: None,
        index: None,
        comment: comment.map(|c| Cow::Owned(c.to_string())),
    }
}

/// The chains `rules` need, in a fixed order (no nat chain without
/// masquerade rules, so forward rules alone need no NAT in the kernel).
fn chains(rules: &[Rule]) -> Vec<Chain> {
    [Chain::Postrouting, Chain::Forward].into_iter().filter(|c| rules.iter().any(|r| r.chain == *c)).collect()
}

/// What the kernel holds of weft's rules, as comparable values (no
/// handles): our table's chains and rules, and our tagged rules in
/// `ip filter FORWARD` (None: that chain does not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub table: Option<Vec<Value>>,
    pub foreign: Option<Vec<Value>>,
}

/// Handles of our tagged rules in `ip filter FORWARD` (to delete them).
#[derive(Debug, Clone, Default)]
pub struct ForeignHandles(pub Vec<u32>);

/// Values of flags that nft lists as one string when there is one.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "flags" {
                    if let Value::Array(a) = x {
                        if a.len() == 1 {
                            *x = a[0].clone();
                        }
                    }
                }
                normalize(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn chain_key(c: &Value) -> Value {
    let mut k = serde_json::json!({"chain": {"name": c["name"], "type": c["type"], "hook": c["hook"], "prio": c["prio"], "policy": c["policy"]}});
    normalize(&mut k);
    k
}

fn rule_key(r: &Value) -> Value {
    let mut k = serde_json::json!({"rule": {"chain": r["chain"], "expr": r["expr"], "comment": r["comment"]}});
    normalize(&mut k);
    k
}

/// The state `rules` should leave (`foreign_exists`: whether `ip filter
/// FORWARD` exists, so whether our tagged copies belong there).
pub fn wanted(rules: &[Rule], foreign_exists: bool) -> State {
    let mut table = Vec::new();
    for c in chains(rules) {
        table.push(chain_key(&to(&base_chain(c))));
    }
    for r in rules {
        table.push(rule_key(&to(&nf_rule(NfFamily::INet, TABLE, r.chain.name(), r, None))));
    }
    let foreign = foreign_exists.then(|| {
        rules
            .iter()
            .filter(|r| r.chain == Chain::Forward)
            .map(|r| rule_key(&to(&nf_rule(NfFamily::IP, FOREIGN_TABLE, FOREIGN_CHAIN, r, Some(FOREIGN_COMMENT)))))
            .collect()
    });
    State { table: (!rules.is_empty()).then_some(table), foreign }
}

fn to<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap_or_default()
}

/// Why nft could not do what weft asked, in words naming what is missing.
pub fn describe(e: &NftablesError) -> String {
    match e {
        NftablesError::NftExecution { inner, .. } if inner.kind() == std::io::ErrorKind::NotFound => {
            "the nft binary was not found in PATH (Debian package nftables)".into()
        }
        NftablesError::NftFailed { stderr, hint, .. } => format!("nft failed while {hint}: {}", stderr.trim()),
        e => e.to_string(),
    }
}

/// `nft -j list <what...>`: the listed objects, None when the table or chain
/// does not exist.
pub(super) fn list(what: &[&str]) -> Result<Option<Vec<Value>>, NftablesError> {
    let mut args = vec!["list"];
    args.extend_from_slice(what);
    match helper::get_current_ruleset_raw(DEFAULT_NFT, args.iter().copied()) {
        Ok(out) => {
            let v: Value = serde_json::from_str(&out).map_err(NftablesError::NftInvalidJson)?;
            Ok(Some(v["nftables"].as_array().cloned().unwrap_or_default()))
        }
        Err(NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Our table's chains, then its rules, from `nft -j list table`'s objects.
fn table_state(objs: &[Value]) -> Vec<Value> {
    let mut v: Vec<Value> = objs.iter().filter_map(|o| o.get("chain")).map(chain_key).collect();
    v.extend(objs.iter().filter_map(|o| o.get("rule")).map(rule_key));
    v
}

/// Reads what the kernel holds of weft's rules.
pub fn read() -> Result<(State, ForeignHandles), NftablesError> {
    let table = list(&["table", "inet", TABLE])?.map(|objs| table_state(&objs));
    let mut handles = ForeignHandles::default();
    let foreign = list(&["chain", "ip", FOREIGN_TABLE, FOREIGN_CHAIN])?.map(|objs| {
        let ours: Vec<&Value> = objs.iter().filter_map(|o| o.get("rule")).filter(|r| r["comment"] == FOREIGN_COMMENT).collect();
        handles.0 = ours.iter().filter_map(|r| r["handle"].as_u64()).map(|h| h as u32).collect();
        ours.into_iter().map(rule_key).collect()
    });
    Ok((State { table, foreign }, handles))
}

/// One transaction that leaves exactly `rules`: our table replaced whole
/// (or removed when `rules` is empty), our tagged rules in `ip filter
/// FORWARD` deleted by `handles` and added again when that chain exists.
pub fn replace_batch(rules: &[Rule], foreign_exists: bool, handles: &ForeignHandles) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    if !rules.is_empty() {
        b.add(NfListObject::Table(table()));
        for c in chains(rules) {
            b.add(NfListObject::Chain(base_chain(c)));
        }
        for r in rules {
            b.add(NfListObject::Rule(nf_rule(NfFamily::INet, TABLE, r.chain.name(), r, None)));
        }
    }
    for h in &handles.0 {
        b.delete(NfListObject::Rule(NfRule {
            family: NfFamily::IP,
            table: FOREIGN_TABLE.into(),
            chain: FOREIGN_CHAIN.into(),
            expr: Vec::new().into(),
            handle: Some(*h),
            index: None,
            comment: None,
        }));
    }
    if foreign_exists {
        for r in rules.iter().filter(|r| r.chain == Chain::Forward) {
            b.add(NfListObject::Rule(nf_rule(NfFamily::IP, FOREIGN_TABLE, FOREIGN_CHAIN, r, Some(FOREIGN_COMMENT))));
        }
    }
    b.to_nftables()
}

/// A batch as "<command> <kind> <detail(object)>" lines, for tests.
#[cfg(test)]
pub(super) fn batch_commands(b: &Nftables, detail: impl Fn(&Value) -> String) -> Vec<String> {
    let v = to(b);
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let (cmd, obj) = o.as_object()?.iter().next()?;
            let (kind, body) = obj.as_object()?.iter().next()?;
            Some(format!("{cmd} {kind} {}", detail(body)).trim().to_string())
        })
        .collect()
}

/// Runs one batch (`nft -j -f -`): the kernel applies it whole or not at all.
pub fn apply(batch: &Nftables) -> Result<(), NftablesError> {
    helper::apply_ruleset(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::rules::{rules, Cidr, Params};

    fn params() -> Params {
        let c = |a: &str, len| Cidr { addr: a.parse().unwrap(), len };
        Params { network: c("10.244.0.0", 16), subnet: c("10.244.73.0", 24), masquerade: true, fully_random: true, forward: true }
    }

    /// What nft 1.0.6 (Debian 12) lists for flannel's rules written by hand
    /// in nft syntax: weft's rendering compares equal to it, so a restarted
    /// weftd that finds its rules leaves them alone.
    #[test]
    fn rendering_equals_the_kernels_listing() {
        let listing: Value = serde_json::from_str(include_str!("testdata/nft-list-table-inet-weft.json")).unwrap();
        let objs = listing["nftables"].as_array().unwrap().clone();
        let want = wanted(&rules(&params()), false);
        assert_eq!(Some(table_state(&objs)), want.table);
        assert_eq!(want.foreign, None);
        let mut no_random = params();
        no_random.fully_random = false;
        assert_ne!(Some(table_state(&objs)), wanted(&rules(&no_random), false).table, "fully-random must count");
    }

    /// One batch: add, delete and re-add the table, chains, rules (in that
    /// order); our tagged copies in ip filter FORWARD deleted by handle and
    /// appended again.
    #[test]
    fn one_batch_replaces_the_table() {
        let b = replace_batch(&rules(&params()), true, &ForeignHandles(vec![7, 9]));
        let cmds = batch_commands(&b, |body| body.get("handle").map(|h| h.to_string()).unwrap_or_default());
        let mut want = vec!["add table", "delete table", "add table", "add chain", "add chain"];
        want.extend(["add rule"; 8]);
        want.extend(["delete rule 7", "delete rule 9", "add rule", "add rule"]);
        assert_eq!(cmds, want);
        let removal = serde_json::to_value(replace_batch(&[], false, &ForeignHandles::default())).unwrap();
        assert_eq!(removal["nftables"].as_array().unwrap().len(), 2, "cleanup: add + delete of the table only");
    }
}
