//! Network namespaces: `ip netns` ones behind an RAII guard, and every
//! namespace of the machine, found without asking tracer.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use crate::process::run;

/// Inode of a namespace file (`/proc/self/ns/net`, `/run/netns/NAME`).
pub fn ns_inode(path: &Path) -> u32 {
    let ino = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino();
    u32::try_from(ino).expect("namespace inode fits u32")
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// `tracer-test-TAG-PID`, with its loopback up.
    pub fn new(tag: &str) -> NetNs {
        let name = format!("tracer-test-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        run(Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]));
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The namespace's own TCP counters, as the kernel keeps them
    /// (`Tcp:` in /proc/net/snmp: `AttemptFails`, `EstabResets`,
    /// `OutRsts`, ...).
    pub fn tcp_counters(&self) -> BTreeMap<String, u64> {
        self.kernel_counters("snmp", "Tcp:")
    }

    /// The namespace's `TcpExt:` counters (/proc/net/netstat:
    /// `ListenOverflows`, `ListenDrops`, ...).
    pub fn tcp_ext_counters(&self) -> BTreeMap<String, u64> {
        self.kernel_counters("netstat", "TcpExt:")
    }

    /// The namespace's `Icmp:` counters (/proc/net/snmp: `InDestUnreachs`,
    /// ...).
    pub fn icmp_counters(&self) -> BTreeMap<String, u64> {
        self.kernel_counters("snmp", "Icmp:")
    }

    /// One group of /proc/net/`file` (a line of names, a line of values),
    /// read by a thread inside the namespace.
    fn kernel_counters(&self, file: &str, group: &str) -> BTreeMap<String, u64> {
        // thread-self: /proc/self/net would be the main thread's namespace.
        let path = format!("/proc/thread-self/net/{file}");
        let text = self.run_inside(move || std::fs::read_to_string(&path).expect("read /proc/net"));
        let mut lines = text.lines().filter(|l| l.starts_with(group));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            panic!("no {group} lines in /proc/net/{file}:\n{text}");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
            .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
            .collect()
    }

    /// Runs a command inside the namespace (`ip netns exec`); panics if
    /// it fails.
    pub fn exec(&self, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args));
    }

    /// Joins this namespace and `other` with a veth pair (`DEV0` here,
    /// `DEV1` there, named after `tag`) and gives each end its address in
    /// one /24: `a` here, `b` there. Reverse-path filtering is off on both
    /// sides, so a test may route one direction away.
    pub fn link_to(&self, other: &NetNs, tag: &str, a: &str, b: &str) {
        let (here, there) = (format!("{tag}0"), format!("{tag}1"));
        self.exec(&[
            "ip",
            "link",
            "add",
            &here,
            "type",
            "veth",
            "peer",
            "name",
            &there,
            "netns",
            &other.name,
        ]);
        for (ns, dev, addr) in [(self, &here, a), (other, &there, b)] {
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ns.exec(&["ip", "link", "set", dev, "up"]);
            for scope in ["all", dev.as_str()] {
                ns.exec(&[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv4.conf.{scope}.rp_filter=0"),
                ]);
            }
        }
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it
    /// creates belong to the namespace.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns on a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Every network namespace (by a path that opens it), found independently
/// of tracer: /proc/*/ns/net and /run/netns/*, unique by inode.
pub fn all_namespaces() -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut paths = Vec::new();
    let mut candidates = vec!["/proc/self/ns/net".to_owned()];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.chars().all(|c| c.is_ascii_digit()) {
                candidates.push(format!("/proc/{name}/ns/net"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            candidates.push(e.path().display().to_string());
        }
    }
    for c in candidates {
        if let Ok(m) = std::fs::metadata(&c)
            && seen.insert(m.ino())
        {
            paths.push(c);
        }
    }
    paths
}
