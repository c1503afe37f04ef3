//! GC (spec 1.1.0): removes everything of this network whose attachment is
//! not in `cni.dev/valid-attachments`: host veths carrying this network's
//! alias, endpoint records on this network's bridge, address reservations.
//! It carries on past a failure, removing what it can, and reports every
//! failure at the end.
use crate::{
    config::{NetConf, ValidAttachment},
    endpoint,
    error::{code, CniError, Result},
    ipam::Store,
    link::Netlink,
    naming,
};

fn valid(list: &[ValidAttachment], container_id: &str, ifname: &str) -> bool {
    // An empty ifname: host-local's old reservations hold only the container ID.
    list.iter().any(|v| v.container_id == container_id && (ifname.is_empty() || v.ifname == ifname))
}

pub fn gc(conf: &NetConf) -> Result<()> {
    let list = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "invalid network config: GC needs cni.dev/valid-attachments (an empty list if none is valid)"))?;
    let mut errors: Vec<CniError> = Vec::new();

    match Netlink::new().and_then(|nl| Ok((nl.links()?, nl))) {
        Ok((links, nl)) => {
            for l in links {
                let Some((net, cid, ifname)) = l.alias.as_deref().and_then(naming::parse_alias) else { continue };
                if net == conf.name && !valid(list, cid, ifname) {
                    if let Err(e) = nl.delete(l.index) {
                        errors.push(e);
                    }
                }
            }
        }
        Err(e) => errors.push(e),
    }
    match endpoint::list(&conf.endpoints_dir) {
        Ok(recs) => {
            for (p, r) in recs {
                if r.bridge == conf.bridge && !valid(list, &r.container_id, &r.ifname) {
                    if let Err(e) = std::fs::remove_file(&p) {
                        errors.push(CniError::io(format!("removing {}", p.display()), &e));
                    }
                }
            }
        }
        Err(e) => errors.push(e),
    }
    match Store::open(&conf.data_dir, &conf.name, false) {
        Ok(Some(store)) => {
            if let Err(e) = store.gc(|a| valid(list, &a.container_id, &a.ifname)) {
                errors.push(e);
            }
        }
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let msgs: Vec<String> = errors.iter().map(|e| e.msg.clone()).collect();
            Err(CniError::new(errors[0].code, format!("GC: {} failures", msgs.len())).with_details(msgs.join("; ")))
        }
    }
}
