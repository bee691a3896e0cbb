//! Network namespaces: finding them and running code inside one.
//!
//! sock_diag and `/proc/net` only show the caller's namespace, so seeing
//! every socket on the host means visiting each namespace. A namespace is
//! named by its nsfs inode (what the eBPF side reports as `netns`) and
//! reached through any path that opens it.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    thread,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    pub inode: u32,
    /// A path that opens it, e.g. /proc/self/ns/net, /proc/PID/ns/net or
    /// /run/netns/NAME.
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("cannot open network namespace {}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("cannot enter network namespace {} (setns needs CAP_SYS_ADMIN): {error}", path.display())]
    Enter { path: PathBuf, error: io::Error },
    #[error("cannot start a thread for network namespace {}: {error}", path.display())]
    Spawn { path: PathBuf, error: io::Error },
    #[error("the work run in network namespace {} panicked: {message}", path.display())]
    Panicked { path: PathBuf, message: String },
}

/// Where named namespaces live (`ip netns add` bind-mounts them here).
const NAMED_DIR: &str = "/run/netns";

/// The calling thread's network namespace inode. `thread-self`, not `self`:
/// a thread that called setns differs from the rest of its process.
pub fn current_inode() -> io::Result<u32> {
    inode_of(Path::new("/proc/thread-self/ns/net"))
}

/// The nsfs inode behind a namespace path.
fn inode_of(path: &Path) -> io::Result<u32> {
    let ino = fs::metadata(path)?.ino();
    u32::try_from(ino).map_err(|_| io::Error::other(format!("inode {ino} does not fit in u32")))
}

/// The caller's namespace with a path that opens the same one from any
/// thread: /proc/self/ns/net when the thread shares its process's
/// namespace, else the thread's own /proc/PID/task/TID/ns/net.
fn own() -> io::Result<(NetNs, u64)> {
    let path = PathBuf::from("/proc/thread-self/ns/net");
    let meta = fs::metadata(&path)?;
    let inode = u32::try_from(meta.ino())
        .map_err(|_| io::Error::other("namespace inode does not fit in u32"))?;
    let process = Path::new("/proc/self/ns/net");
    let path = if inode_of(process).ok() == Some(inode) {
        process.to_path_buf()
    } else {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()))
    };
    Ok((NetNs { inode, path }, meta.dev()))
}

/// Every network namespace on the host, unique by inode: the caller's own
/// first, then those of every process (/proc/*/ns/net) and every name under
/// /run/netns. Unreadable entries are skipped (processes exit while we scan).
///
/// A namespace that is both named and used by a process gets the
/// /run/netns path, which outlives the process.
pub fn list() -> Vec<NetNs> {
    let mut found: Vec<NetNs> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    // Every namespace file lives on nsfs; a /run/netns entry whose mount is
    // gone is a plain file on another device and must not count.
    let nsfs_dev = match own() {
        Ok((ns, dev)) => {
            index.insert(ns.inode, 0);
            found.push(ns);
            Some(dev)
        }
        Err(e) => {
            log::debug!("cannot stat own network namespace: {e}");
            None
        }
    };
    let mut add = |path: PathBuf, named: bool| {
        let Ok(meta) = fs::metadata(&path) else {
            return;
        };
        if nsfs_dev.is_some_and(|dev| dev != meta.dev()) {
            return;
        }
        let Ok(inode) = u32::try_from(meta.ino()) else {
            return;
        };
        match index.get(&inode) {
            Some(&i) if named && i != 0 => found[i].path = path,
            Some(_) => {}
            None => {
                index.insert(inode, found.len());
                found.push(NetNs { inode, path });
            }
        }
    };
    for pid in pids() {
        add(PathBuf::from(format!("/proc/{pid}/ns/net")), false);
    }
    if let Ok(entries) = fs::read_dir(NAMED_DIR) {
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            add(path, true);
        }
    }
    found
}

/// Namespaces in `wanted` that no process has as its own and no name
/// holds: kept alive by one thread (`/proc/PID/task/TID/ns/net`) or by an
/// open descriptor (`/proc/PID/fd/N`, as container runtimes hold them).
/// Threads are searched first; descriptors, a readlink each, only for
/// what is still missing. Found ones come with a path that opens them.
pub fn search(wanted: &HashSet<u32>) -> Vec<NetNs> {
    let mut missing = wanted.clone();
    let mut found = Vec::new();
    let pids = pids();
    let mut take = |path: PathBuf, inode: u32, missing: &mut HashSet<u32>| {
        if missing.remove(&inode) {
            found.push(NetNs { inode, path });
        }
    };
    for &pid in &pids {
        if missing.is_empty() {
            return found;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path().join("ns/net");
            if let Ok(inode) = inode_of(&path) {
                take(path, inode, &mut missing);
            }
        }
    }
    for &pid in &pids {
        if missing.is_empty() {
            break;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let path = fd.path();
            let Ok(target) = fs::read_link(&path) else {
                continue;
            };
            if let Some(inode) = namespace_link(&target.to_string_lossy()) {
                take(path, inode, &mut missing);
            }
        }
    }
    found
}

/// The inode in a descriptor's link to a network namespace: `net:[N]`.
fn namespace_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every pid in /proc, in order.
fn pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Whether `ns.path` still opens namespace `ns.inode` (a thread or a
/// descriptor that held it may be gone, and its number reused).
pub fn still_there(ns: &NetNs) -> bool {
    inode_of(&ns.path).ok() == Some(ns.inode)
}

/// Runs `f` on a new thread that has entered `ns` with setns(CLONE_NEWNET);
/// sockets created there belong to `ns`. Returns f's result, or an error if
/// the namespace could not be entered.
///
/// A fresh thread because setns changes only the calling thread, and a
/// thread cannot be trusted to find its way back; it exits afterwards.
pub fn run_in<T: Send + 'static>(
    ns: &NetNs,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetNsError> {
    let path = ns.path.clone();
    let file = fs::File::open(&path).map_err(|error| NetNsError::Open {
        path: path.clone(),
        error,
    })?;
    let inner_path = path.clone();
    let handle = thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // SAFETY: setns on an open namespace fd; it affects only this
            // thread, which ends with the closure.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetNsError::Enter {
                    path: inner_path,
                    error: io::Error::last_os_error(),
                });
            }
            drop(file);
            Ok(f())
        })
        .map_err(|error| NetNsError::Spawn {
            path: path.clone(),
            error,
        })?;
    match handle.join() {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_string());
            Err(NetNsError::Panicked { path, message })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn own_namespace_comes_first() {
        let own = current_inode().unwrap();
        let all = list();
        assert_eq!(all.first().map(|n| n.inode), Some(own));
        assert_eq!(all[0].path, Path::new("/proc/self/ns/net"));
        let mut inodes: Vec<u32> = all.iter().map(|n| n.inode).collect();
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), all.len(), "duplicates in {all:?}");
    }

    #[test]
    fn descriptor_links_name_their_namespace() {
        assert_eq!(namespace_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(namespace_link("socket:[12345]"), None);
        assert_eq!(namespace_link("net:[x]"), None);
    }

    #[test]
    fn search_finds_a_namespace_held_only_by_a_descriptor() {
        // Our own namespace, through the descriptor we hold: the search
        // does not care that a process also has it.
        let file = fs::File::open("/proc/self/ns/net").unwrap();
        let own = current_inode().unwrap();
        let found = search(&HashSet::from([own]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(still_there(&found[0]));
        drop(file);
        assert!(search(&HashSet::from([1])).is_empty());
    }

    #[test]
    fn missing_namespace_is_an_open_error() {
        let ns = NetNs {
            inode: 1,
            path: PathBuf::from("/run/netns/does-not-exist-tracer"),
        };
        assert!(matches!(run_in(&ns, || ()), Err(NetNsError::Open { .. })));
    }

    #[test]
    fn non_namespace_file_is_an_enter_error() {
        let ns = NetNs {
            inode: 1,
            path: PathBuf::from("/proc/self/status"),
        };
        assert!(matches!(run_in(&ns, || ()), Err(NetNsError::Enter { .. })));
    }

    #[test]
    fn runs_in_own_namespace_and_catches_panics() {
        if !is_root() {
            eprintln!("skipped: setns needs root");
            return;
        }
        let (own, _) = own().unwrap();
        let inode = run_in(&own, current_inode).unwrap().unwrap();
        assert_eq!(inode, own.inode);
        let err = run_in(&own, || -> () { panic!("boom") }).unwrap_err();
        match err {
            NetNsError::Panicked { message, .. } => assert_eq!(message, "boom"),
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
}
