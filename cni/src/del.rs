//! DEL: removes what ADD made, whatever of it is still there, in an order
//! that never frees an address a live interface still has: the veth pair,
//! then the endpoint record, then the address. Missing pieces (a second
//! DEL, no CNI_NETNS, a namespace already gone, no subnet.env) are fine.
use crate::{
    config::NetConf,
    endpoint,
    env::Attachment,
    error::{CniError, Result},
    ipam::Store,
    link::{self, in_netns, LinkState, Netlink},
    naming,
};

/// Whether the node-side link `l` named like the attachment's host veth is
/// the attachment's: its alias says so, or it is an unaliased veth (an ADD
/// that died between creating it and naming it).
pub fn is_ours(l: &LinkState, alias: &str) -> bool {
    l.alias.as_deref() == Some(alias) || (l.alias.as_deref().unwrap_or("").is_empty() && l.kind.as_deref() == Some("veth"))
}

pub fn del(conf: &NetConf, att: &Attachment) -> Result<()> {
    let host = naming::host_veth(&att.container_id, &att.ifname);
    let alias = naming::alias(&conf.name, &att.container_id, &att.ifname);
    let nl = Netlink::new()?;
    let mut found = false;
    if let Some(l) = nl.link_by_name(&host)? {
        if is_ours(&l, &alias) {
            // Deleting one end deletes the pod's end too.
            nl.delete(l.index)?;
            found = true;
        }
    }
    if !found {
        // The pod end without its host end (renamed or moved by someone):
        // remove it, if the namespace is still there and it is a veth.
        if let Some(ns) = att.netns.as_ref().and_then(|p| link::open_netns(p).ok()).filter(|ns| !link::is_own_netns(ns)) {
            in_netns(&ns, |p| {
                if let Some(l) = p.link_by_name(&att.ifname)? {
                    if l.kind.as_deref() == Some("veth") {
                        p.delete(l.index)?;
                    }
                }
                Ok(())
            })?;
        }
    }
    endpoint::remove(&conf.endpoints_dir, &att.container_id, &att.ifname)?;
    if let Some(store) = Store::open(&conf.data_dir, &conf.name, false)? {
        store.release(&att.container_id, &att.ifname).map_err(|e: CniError| e.context("releasing the pod's address"))?;
    }
    Ok(())
}
