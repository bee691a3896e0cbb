//! Root tests: whether they can run here, the one loud way they skip, and
//! the area each one holds while it runs.
//!
//! Skipping: outside CI a test that needs root (or root and kernel BTF, to
//! load eBPF) and cannot have it returns early after a `SKIP` line written
//! straight to the process's stderr, where libtest's capture of passing
//! tests cannot hide it. With `CI=true` it fails instead.
//!
//! Areas: the integration tests are one binary with a module per area
//! (`it::daemon::…`, `it::trace::…`). Tests of one area run in parallel, as
//! they did when each area was a binary of its own, but never beside a
//! test of another area: several of them compare the daemon with `ss`
//! across every namespace and need the quiet moments that another area's
//! churn (a flood of slow clients, thousands of connections) would not
//! leave. libtest starts tests in name order, so an area waits only for
//! the last tests of the one before it.

use std::{
    io::Write as _,
    path::Path,
    sync::{Condvar, Mutex, PoisonError},
};

use crate::process::is_root;

/// Skips the calling test (see [`ebpf`]) unless eBPF programs can be
/// loaded here; otherwise holds the test's [`Area`] until it returns.
#[macro_export]
macro_rules! require_ebpf {
    () => {
        let _area = match $crate::require::ebpf(module_path!()) {
            ::std::option::Option::Some(area) => area,
            ::std::option::Option::None => return,
        };
    };
}

/// Skips the calling test (see [`root`]) unless it runs as root;
/// otherwise holds the test's [`Area`] until it returns.
#[macro_export]
macro_rules! require_root {
    () => {
        let _area = match $crate::require::root(module_path!()) {
            ::std::option::Option::Some(area) => area,
            ::std::option::Option::None => return,
        };
    };
}

/// The [`Area`] of the calling test's module, for a test that needs no
/// root but opens sockets: `let _area = testkit::area!();`.
#[macro_export]
macro_rules! area {
    () => {
        $crate::require::Area::enter(module_path!())
    };
}

/// True when `CI` is `true` or `1`: a missing privilege or tool is then a
/// failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Set by `cargo xtask test` in the guests of the kernel matrix, whose
/// kernels load tracing programs (fentry): a test of that path must run
/// there, and may skip (loudly) only elsewhere.
pub const TRACING_EXPECTED_ENV: &str = "TRACER_TEST_TRACING";

/// Skips the rest of a test that needs the kernel's tracing programs when
/// this kernel refuses them (`why`, as the daemon said): loudly, and never
/// in the matrix's guests, which have them. Returns whether to go on.
pub fn tracing_programs(loaded: bool, why: &str) -> bool {
    if loaded {
        return true;
    }
    let test = test_name("a test");
    if std::env::var_os(TRACING_EXPECTED_ENV).is_some() {
        panic!("{TRACING_EXPECTED_ENV} is set but {test} found no tracing programs: {why}");
    }
    skipped(
        &test,
        &format!("this kernel refuses tracing programs ({why}); the VM matrix runs it"),
    );
    false
}

/// Why eBPF programs cannot be loaded here, if they cannot.
pub fn ebpf_missing() -> Option<&'static str> {
    if !is_root() {
        Some("not root (run `sudo -E cargo xtask test`)")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        None
    }
}

/// The area of the test in `module` when eBPF can be loaded; None after a
/// loud skip otherwise. Panics with `CI=true`.
pub fn ebpf(module: &'static str) -> Option<Area> {
    match ebpf_missing() {
        None => Some(Area::enter(module)),
        Some(why) => skip_or_fail(&test_name(module), "cannot load eBPF", why),
    }
}

/// The area of the test in `module` when it runs as root; None after a
/// loud skip otherwise. Panics with `CI=true`.
pub fn root(module: &'static str) -> Option<Area> {
    if is_root() {
        return Some(Area::enter(module));
    }
    skip_or_fail(
        &test_name(module),
        "needs root",
        "not root (run `sudo -E cargo xtask test`)",
    )
}

fn skip_or_fail(test: &str, what: &str, why: &str) -> Option<Area> {
    if in_ci() {
        panic!("CI=true but {test} {what}: {why}");
    }
    skipped(test, why);
    None
}

/// Says that `what` (a test, or a part of one) was skipped, and why, on
/// the process's stderr itself: libtest captures `eprintln!` of a passing
/// test, which would hide the skip.
pub fn skipped(what: &str, why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\nSKIP {what}: {why}");
}

/// The running test's name: libtest names each test's thread after it.
fn test_name(module: &str) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => format!("a test in {module}"),
    }
}

/// The area running now and how many of its tests.
static RUNNING: Mutex<(Option<&'static str>, usize)> = Mutex::new((None, 0));
static CHANGED: Condvar = Condvar::new();

/// A test's hold on its area (the module below the crate root, `daemon` for
/// `it::daemon::leaks`): tests of other areas wait until it is dropped.
#[must_use = "the area is held only while this lives"]
pub struct Area {
    _held: (),
}

impl Area {
    /// Waits until no test of another area runs, then holds `module`'s.
    pub fn enter(module: &'static str) -> Area {
        let area = module.split("::").nth(1).unwrap_or(module);
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        while running.0.is_some_and(|other| other != area) {
            running = CHANGED
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *running = (Some(area), running.1 + 1);
        Area { _held: () }
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        running.1 -= 1;
        if running.1 == 0 {
            running.0 = None;
            CHANGED.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        thread,
        time::Duration,
    };

    use super::*;

    #[test]
    fn areas_take_turns_and_share_within() {
        let a1 = Area::enter("it::alpha::one");
        let a2 = Area::enter("it::alpha::two");
        assert_eq!(*RUNNING.lock().expect("lock"), (Some("alpha"), 2));
        static IN_BETA: AtomicUsize = AtomicUsize::new(0);
        let beta = thread::spawn(|| {
            let _b = Area::enter("it::beta");
            IN_BETA.fetch_add(1, Ordering::SeqCst);
        });
        thread::sleep(Duration::from_millis(100));
        drop(a1);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(IN_BETA.load(Ordering::SeqCst), 0, "beta ran beside alpha");
        drop(a2);
        beta.join().expect("beta");
        assert_eq!(IN_BETA.load(Ordering::SeqCst), 1);
    }
}
