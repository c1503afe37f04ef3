//! Per-CPU udp workers (`--udp-per-cpu`): worker i is pinned on the i-th
//! CPU weftd may use, and a classic-BPF SO_REUSEPORT program hands each
//! received datagram to the socket of the worker pinned on the CPU that
//! received it.
//!
//! Why: by default the kernel picks a worker by a hash of the outer
//! addresses, so the softirq that queued a datagram on one CPU may wake a
//! worker on another and the payload crosses caches. Kept on the receiving
//! CPU, the copy out of the socket reads cache-hot data. Measured on the
//! 2-core testbed: more throughput with several flows (4 streams 7.50
//! against 6.19 Gbit/s), CPU per byte from equal to 20% less depending on
//! the run. Why not the default: a flow's
//! whole path then follows the CPU that receives it (the TUN sends a flow
//! to the queue that last wrote it), so one flow can end up sharing one
//! CPU with its own endpoints; and pinned workers cannot move away from a
//! CPU that something else keeps busy. `cargo xtask bench udp` measures
//! both (docs/performance.md). Classic BPF is part of every kernel with
//! sockets (no bpf(2), no BTF), so this works where the BPF datapath
//! cannot run.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

/// The CPUs this process may run on (its affinity mask, which a cpuset or
/// `taskset` narrows), ascending.
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the set's.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads the set within CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Pins the calling thread on `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("CPU {cpu} is beyond CPU_SETSIZE")));
    }
    // SAFETY: plain data, set within CPU_SETSIZE (checked above).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the size is the set's.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The steering program for a reuseport group whose socket `i` belongs to
/// the worker pinned on `cpus[i]` (None: unpinned): it returns the index of
/// the first socket whose worker is on the receiving CPU. On any other CPU
/// it returns an index past the group, for which the kernel falls back to
/// its hash, so no datagram is ever lost to the program.
pub fn steering_program(cpus: &[Option<usize>]) -> Vec<libc::sock_filter> {
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let mut prog = vec![op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32, 0, 0)];
    let mut seen = Vec::new();
    for (i, cpu) in cpus.iter().enumerate() {
        let Some(cpu) = *cpu else { continue };
        if seen.contains(&cpu) {
            continue;
        }
        seen.push(cpu);
        // if A == cpu: return i (the next instruction), else skip it.
        prog.push(op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, cpu as u32, 0, 1));
        prog.push(op(libc::BPF_RET | libc::BPF_K, i as u32, 0, 0));
    }
    prog.push(op(libc::BPF_RET | libc::BPF_K, u32::MAX, 0, 0));
    prog
}

/// Attaches `prog` to the reuseport group of `sock` (one socket of the
/// group stands for all of it).
pub fn attach_steering(sock: BorrowedFd<'_>, prog: &[libc::sock_filter]) -> io::Result<()> {
    if prog.len() > libc::BPF_MAXINSNS as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("steering program of {} instructions", prog.len())));
    }
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    // SAFETY: fprog points at `prog`, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_maps_each_cpu_to_its_first_worker_and_falls_back_elsewhere() {
        let p = steering_program(&[Some(2), Some(3), None, Some(2)]);
        // ld cpu; jeq 2 -> ret 0; jeq 3 -> ret 1; ret MAX (worker 3 shares CPU 2 with worker 0).
        assert_eq!(p.len(), 6);
        assert_eq!((p[1].k, p[1].jt, p[1].jf, p[2].k), (2, 0, 1, 0));
        assert_eq!((p[3].k, p[4].k), (3, 1));
        assert_eq!(p[5].k, u32::MAX);
        assert_eq!(p[5].code as u32, libc::BPF_RET | libc::BPF_K);
    }

    #[test]
    fn allowed_cpus_are_those_of_the_affinity_mask() {
        let cpus = allowed().unwrap();
        assert!(!cpus.is_empty());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
        // "0-1" or "0,2-3": expand and compare.
        let mut listed = vec![];
        for part in line.split(',') {
            match part.split_once('-') {
                Some((a, b)) => listed.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
                None => listed.push(part.parse::<usize>().unwrap()),
            }
        }
        assert_eq!(cpus, listed);
    }

    /// The program really decides: on loopback (whose receive runs on the
    /// sending CPU) a datagram lands on the socket the program names for
    /// this CPU, whichever of the two that is, from every source port (a
    /// hash would spread them over both).
    #[test]
    fn datagrams_land_on_the_socket_of_the_receiving_cpu() {
        use std::{net::UdpSocket, os::fd::AsFd, time::Duration};
        let cpu = allowed().unwrap()[0];
        // A thread of our own, so pinning it leaves the test harness alone.
        std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            for target in 0..2 {
                let a = reuseport_socket("127.0.0.1:0");
                let at = a.local_addr().unwrap();
                let b = reuseport_socket(&at.to_string());
                let mut map = [None, None];
                map[target] = Some(cpu);
                attach_steering(a.as_fd(), &steering_program(&map)).unwrap();
                // From 20 source ports: a hash would spread them over both.
                for _ in 0..20 {
                    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", at).unwrap();
                }
                let count = |s: &UdpSocket| {
                    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                    let mut n = 0;
                    let mut buf = [0u8; 8];
                    while s.recv(&mut buf).is_ok() {
                        n += 1;
                    }
                    n
                };
                let got = [count(&a), count(&b)];
                let mut want = [0, 0];
                want[target] = 20;
                assert_eq!(got, want, "datagrams per socket with CPU {cpu} steered to socket {target}");
            }
        })
        .join()
        .unwrap();
    }

    fn reuseport_socket(at: &str) -> std::net::UdpSocket {
        use std::os::fd::{FromRawFd, OwnedFd};
        let at: std::net::SocketAddrV4 = at.parse().unwrap();
        // SAFETY: a plain socket(2), owned at once.
        let fd = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)) };
        let one: libc::c_int = 1;
        // SAFETY: an int option, its size passed.
        assert_eq!(unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, &one as *const _ as *const libc::c_void, 4) }, 0);
        let sa = crate::backend::udp::sys::sockaddr(at);
        // SAFETY: a sockaddr_in, its size passed.
        assert_eq!(unsafe { libc::bind(fd.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) }, 0);
        std::net::UdpSocket::from(fd)
    }
}
