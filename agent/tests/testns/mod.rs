//! A network namespace for one BPF_PROG_TEST_RUN test whose answers come
//! from the kernel's FIB or devices (never the machine's own): created
//! empty, entered by the test's thread, deleted on drop. Needs root.
#![allow(dead_code)]
use std::process::Command;

pub struct Ns(pub String);

impl Ns {
    /// `wft<pid><kind><tag>`: unique per test process and test.
    pub fn new(kind: &str, tag: &str) -> Ns {
        let ns = Ns(format!("wft{}{kind}{tag}", std::process::id()));
        ns.sh(&["ip", "netns", "add", &ns.0]);
        ns
    }

    pub fn sh(&self, args: &[&str]) {
        let out = Command::new(args[0]).args(&args[1..]).output().expect("run a command");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", &self.0];
        v.extend(args.split_whitespace());
        self.sh(&v);
    }

    /// `sysctl -qw <kv>` inside the namespace.
    pub fn sysctl(&self, kv: &str) {
        self.sh(&["ip", "netns", "exec", &self.0, "sysctl", "-qw", kv]);
    }

    /// Moves the calling thread into the namespace (BPF_PROG_TEST_RUN runs
    /// the program against the caller's namespace).
    pub fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("open the netns");
        // SAFETY: plain syscall on a valid fd; affects this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// The ifindex of `name` in the calling thread's namespace (0: none).
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C string; resolved in this thread's namespace.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}
