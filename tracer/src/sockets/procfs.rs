//! Which process owns a socket, as `ss -p` finds out: sock_diag gives a
//! socket's inode, and each process's open files under /proc/PID/fd link to
//! `socket:[INODE]`.
//!
//! The /proc root is a parameter of the inner functions so tests can run
//! them on a fake tree.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

const PROC: &str = "/proc";

/// Socket inode -> owning pid, from the `socket:[INODE]` links under
/// /proc/PID/fd/*. When several processes share a socket, keep the one
/// `ss -p` lists first: the highest pid (it lists the last one its scan
/// of /proc found first). Unreadable processes are skipped.
pub fn socket_owners() -> HashMap<u32, u32> {
    socket_owners_in(Path::new(PROC))
}

/// Which processes hold the sockets `inodes`, as `ss -p` names them.
/// First the `candidates` and their children (a prefork server's parent
/// listens and its children accept); then, for what is still unfound and
/// when `scan_all`, every process. Of several holders the one `ss -p`
/// lists first wins: the highest pid.
pub fn holders(inodes: &HashSet<u32>, candidates: &[u32], scan_all: bool) -> HashMap<u32, u32> {
    holders_in(Path::new(PROC), inodes, candidates, scan_all)
}

fn holders_in(
    root: &Path,
    inodes: &HashSet<u32>,
    candidates: &[u32],
    scan_all: bool,
) -> HashMap<u32, u32> {
    let mut near: Vec<u32> = candidates.iter().copied().filter(|&p| p != 0).collect();
    for &pid in candidates {
        near.extend(children_in(root, pid));
    }
    near.sort_unstable();
    near.dedup();
    let mut found: HashMap<u32, u32> = HashMap::new();
    for &pid in &near {
        holdings_in(root, pid, inodes, &mut found);
    }
    if scan_all && found.len() < inodes.len() {
        let unfound: HashSet<u32> = inodes
            .difference(&found.keys().copied().collect())
            .copied()
            .collect();
        for (inode, pid) in socket_owners_in(root) {
            if unfound.contains(&inode) {
                found.insert(inode, pid);
            }
        }
    }
    found
}

/// Records in `found` which of `inodes` process `pid` holds (the highest
/// holding pid wins).
fn holdings_in(root: &Path, pid: u32, inodes: &HashSet<u32>, found: &mut HashMap<u32, u32>) {
    let Ok(fds) = fs::read_dir(root.join(pid.to_string()).join("fd")) else {
        return;
    };
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        if let Some(inode) = target.to_str().and_then(socket_inode)
            && inodes.contains(&inode)
        {
            let holder = found.entry(inode).or_insert(pid);
            *holder = (*holder).max(pid);
        }
    }
}

/// The children of every thread of `pid` (`/proc/PID/task/TID/children`).
fn children_in(root: &Path, pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(root.join(pid.to_string()).join("task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// /proc/PID/comm without the newline, or None.
pub fn comm(pid: u32) -> Option<String> {
    comm_in(Path::new(PROC), pid)
}

fn socket_owners_in(root: &Path) -> HashMap<u32, u32> {
    let mut owners: HashMap<u32, u32> = HashMap::new();
    let Ok(entries) = fs::read_dir(root) else {
        return owners;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Other users' processes need CAP_SYS_PTRACE; processes exit while
        // we look. Either way there is nothing to learn from them.
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target.to_str().and_then(socket_inode) else {
                continue;
            };
            owners
                .entry(inode)
                .and_modify(|owner| *owner = (*owner).max(pid))
                .or_insert(pid);
        }
    }
    owners
}

/// The inode in a `socket:[INODE]` link target.
fn socket_inode(target: &str) -> Option<u32> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn comm_in(root: &Path, pid: u32) -> Option<String> {
    let text = fs::read_to_string(root.join(pid.to_string()).join("comm")).ok()?;
    Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::TcpListener, os::fd::AsRawFd as _, os::unix::fs::symlink, path::PathBuf};

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "tracer-procfs-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fake_fd(root: &Path, pid: &str, fd: u32, target: &str) {
        let dir = root.join(pid).join("fd");
        fs::create_dir_all(&dir).unwrap();
        symlink(target, dir.join(fd.to_string())).unwrap();
    }

    #[test]
    fn parses_link_targets() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("socket:[99999999999]"), None);
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn fake_tree() {
        let tmp = TempDir::new("owners");
        let root = &tmp.0;
        fake_fd(root, "300", 3, "socket:[555]");
        fake_fd(root, "300", 4, "socket:[777]");
        fake_fd(root, "45", 7, "socket:[555]");
        fake_fd(root, "45", 8, "/dev/null");
        fake_fd(root, "45", 9, "pipe:[555]");
        fake_fd(root, "1000", 3, "socket:[555]");
        // Not a pid, and a process without a readable fd directory.
        fake_fd(root, "self", 3, "socket:[888]");
        fs::create_dir_all(root.join("46")).unwrap();
        fs::write(root.join("45").join("comm"), "nginx\n").unwrap();

        let owners = socket_owners_in(root);
        assert_eq!(owners, HashMap::from([(555, 1000), (777, 300)]));
        assert_eq!(comm_in(root, 45).as_deref(), Some("nginx"));
        assert_eq!(comm_in(root, 300), None);
        assert!(socket_owners_in(&root.join("missing")).is_empty());
    }

    #[test]
    fn holders_come_from_the_candidates_their_children_then_everyone() {
        let tmp = TempDir::new("holders");
        let root = &tmp.0;
        // A prefork server: 100 listens, its children 101 and 102 accept.
        fake_fd(root, "100", 3, "socket:[10]");
        fs::create_dir_all(root.join("100/task/100")).unwrap();
        fs::write(root.join("100/task/100/children"), "101 102 ").unwrap();
        fake_fd(root, "101", 4, "socket:[11]");
        fake_fd(root, "102", 4, "socket:[12]");
        // Both hold 13 (a fork without close): ss -p lists 102 first.
        fake_fd(root, "101", 5, "socket:[13]");
        fake_fd(root, "102", 5, "socket:[13]");
        // An unrelated process holds 14.
        fake_fd(root, "200", 3, "socket:[14]");
        let inodes = HashSet::from([11, 12, 13, 14]);
        let near = holders_in(root, &inodes, &[100], false);
        assert_eq!(near, HashMap::from([(11, 101), (12, 102), (13, 102)]));
        let all = holders_in(root, &inodes, &[100], true);
        assert_eq!(all.get(&14), Some(&200));
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn real_proc_finds_own_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let inode = socket_inode(link.to_str().unwrap()).unwrap();
        assert_eq!(socket_owners().get(&inode), Some(&std::process::id()));
        assert!(comm(std::process::id()).is_some_and(|c| !c.is_empty() && !c.ends_with('\n')));
    }
}
