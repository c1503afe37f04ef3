//! The host's network as weftd sees it: rtnetlink ([`netlink`]: links,
//! addresses, routes, change notifications), the choice of the underlay
//! interface and our public address ([`iface`]), the IPv6 overlay device
//! ([`overlay6`]), vxlan devices' neighbours and FDB ([`neigh`]),
//! flannel's names for weft's vxlan devices ([`flannel_device`]) and the
//! pods' ends of a bridge's veth ports ([`peer_netns`]).
pub mod flannel_device;
pub mod iface;
pub mod neigh;
pub mod netlink;
pub mod overlay6;
pub mod peer_netns;
