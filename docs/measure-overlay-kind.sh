#!/bin/bash
# Measures pod-to-pod TCP through weft with either overlay device kind:
#   bash docs/measure-overlay-kind.sh ifb|veth
# Two weft nodes on a bridge, one pod each, iperf3 3 x 5 s each way.
# Everything lives in network namespaces "mz-$$-*" and is removed on exit.
# (A stop-gap until `cargo xtask bench` measures this; kept for the README figures.)
set -u; exec 2>&1
KIND=$1; P=mz$$
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${WEFTD_BIN:-$ROOT/target/debug/weftd}; D=$(mktemp -d); mkdir -p $D
cleanup() { for f in $D/*.pid; do [ -f $f ] && kill $(cat $f) 2>/dev/null; done; sleep 0.5; for ns in $P-p1 $P-p2 $P-n1 $P-n2 $P-sw; do ip netns del $ns 2>/dev/null; done; rm -rf /sys/fs/bpf/$P-n1 /sys/fs/bpf/$P-n2 "$D"; }
trap cleanup EXIT
ip netns add $P-sw; ip -n $P-sw link add br0 type bridge; ip -n $P-sw addr add 192.168.89.254/24 dev br0; ip -n $P-sw link set br0 up; ip -n $P-sw link set lo up
for n in 1 2; do
  ip netns add $P-n$n; ip -n $P-n$n link set lo up
  ip -n $P-sw link add v$n type veth peer name eth0 netns $P-n$n
  ip -n $P-sw link set v$n master br0 up
  ip -n $P-n$n addr add 192.168.89.$n/24 dev eth0; ip -n $P-n$n link set eth0 up
  ip netns exec $P-n$n sysctl -qw net.ipv4.ip_forward=1
done
ip netns exec $P-sw etcd --name default --data-dir $D/etcd --listen-client-urls http://192.168.89.254:2379 --advertise-client-urls http://192.168.89.254:2379 --listen-peer-urls http://192.168.89.254:2380 --initial-advertise-peer-urls http://192.168.89.254:2380 --initial-cluster default=http://192.168.89.254:2380 > $D/etcd.log 2>&1 & echo $! > $D/etcd.pid
for i in $(seq 50); do ip netns exec $P-sw env ETCDCTL_API=3 etcdctl --endpoints http://192.168.89.254:2379 endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
ip netns exec $P-sw env ETCDCTL_API=3 etcdctl --endpoints http://192.168.89.254:2379 put /coreos.com/network/config '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}' >/dev/null
for n in 1 2; do nsenter --net=/var/run/netns/$P-n$n -- $W --etcd-endpoints http://192.168.89.254:2379 --iface eth0 --overlay-kind $KIND --subnet-file $D/n$n.env --bpf-pin-dir /sys/fs/bpf/$P-n$n > $D/w$n.log 2>&1 & echo $! > $D/w$n.pid; done
for i in $(seq 100); do [ -f $D/n1.env ] && [ -f $D/n2.env ] && break; sleep 0.1; done; cat $D/n1.env
for n in 1 2; do
  S=$(sed -n 's/FLANNEL_SUBNET=\(.*\)\.1\/24/\1/p' $D/n$n.env)
  ip -n $P-n$n link add cni0 type bridge; ip -n $P-n$n addr add $S.1/24 dev cni0; ip -n $P-n$n link set cni0 up
  ip netns add $P-p$n; ip -n $P-n$n link add vp mtu 1450 type veth peer name eth0 mtu 1450 netns $P-p$n
  ip -n $P-n$n link set vp master cni0 up; ip -n $P-p$n addr add $S.2/24 dev eth0; ip -n $P-p$n link set eth0 up; ip -n $P-p$n link set lo up; ip -n $P-p$n route add default via $S.1
  eval S$n=$S
done
sleep 1
ip netns exec $P-p1 ping -c 3 -i 0.2 -W 1 $S2.2 | tail -1
for dir in "" "-R"; do for i in 1 2 3; do
  ip netns exec $P-p2 timeout 20 iperf3 -s -1 -B $S2.2 >/dev/null 2>&1 & SP=$!; sleep 0.5
  ip netns exec $P-p1 timeout 15 iperf3 -c $S2.2 -t 5 $dir -J > $D/ip.json; r=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); e=d.get("end",{}); print(round(e["sum_received"]["bits_per_second"]/1e9,2) if "sum_received" in e else d.get("error"))' $D/ip.json)
  wait $SP; echo "$KIND ${dir:-fwd} run$i ${r} Gbit/s"
done; done
