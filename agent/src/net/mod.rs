//! The host's network as weftd sees it: rtnetlink ([`netlink`]: links,
//! addresses, routes, change notifications) and the choice of the underlay
//! interface and our public address ([`iface`]).
pub mod iface;
pub mod netlink;
pub mod overlay6;
