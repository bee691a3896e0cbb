//! Which process owns a socket, as `ss -p` finds out: sock_diag gives a
//! socket's inode, and each process's open files under /proc/PID/fd link to
//! `socket:[INODE]`.
//!
//! The /proc root is a parameter of the inner functions so tests can run
//! them on a fake tree.

use std::{collections::HashMap, fs, path::Path};

const PROC: &str = "/proc";

/// Socket inode -> owning pid, from the `socket:[INODE]` links under
/// /proc/PID/fd/*. When several processes share a socket, keep the lowest
/// pid. Unreadable processes are skipped.
pub fn socket_owners() -> HashMap<u32, u32> {
    socket_owners_in(Path::new(PROC))
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
                .and_modify(|owner| *owner = (*owner).min(pid))
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
        assert_eq!(owners, HashMap::from([(555, 45), (777, 300)]));
        assert_eq!(comm_in(root, 45).as_deref(), Some("nginx"));
        assert_eq!(comm_in(root, 300), None);
        assert!(socket_owners_in(&root.join("missing")).is_empty());
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
