//! Where kernel functions lie, from `/proc/kallsyms`: the kernel program
//! compares return addresses in a stack against them.

use std::{fs, io, path::Path};

const KALLSYMS: &str = "/proc/kallsyms";

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {KALLSYMS}: {0}")]
    Read(io::Error),
    #[error("{KALLSYMS} has no `{0}`")]
    NoSymbol(String),
    #[error("{KALLSYMS} hides addresses (kernel.kptr_restrict, or no CAP_SYSLOG)")]
    Hidden,
}

/// `[start, end)` of the function `name` in the running kernel: from its
/// address to the next symbol's.
pub fn function_range(name: &str) -> Result<[u64; 2], KallsymsError> {
    let text = fs::read_to_string(Path::new(KALLSYMS)).map_err(KallsymsError::Read)?;
    range_in(&text, name)
}

fn range_in(text: &str, name: &str) -> Result<[u64; 2], KallsymsError> {
    let symbols = text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
        let _kind = fields.next()?;
        Some((addr, fields.next()?))
    });
    let mut start = None;
    let mut addrs = Vec::new();
    for (addr, sym) in symbols {
        if sym == name && start.is_none() {
            start = Some(addr);
        }
        addrs.push(addr);
    }
    let start = start.ok_or_else(|| KallsymsError::NoSymbol(name.to_owned()))?;
    if start == 0 {
        return Err(KallsymsError::Hidden);
    }
    // The next symbol up (kallsyms is mostly sorted; modules are not).
    let end = addrs
        .into_iter()
        .filter(|&a| a > start)
        .min()
        .unwrap_or(start + 1);
    Ok([start, end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff82036f60 T __pfx_tcp_time_wait
ffffffff82036f70 T tcp_time_wait
ffffffff82037290 T __pfx_tcp_create_openreq_child
ffffffffc0001000 t helper\t[some_module]
";

    #[test]
    fn a_function_ends_where_the_next_symbol_starts() {
        assert_eq!(
            range_in(SAMPLE, "tcp_time_wait").unwrap(),
            [0xffffffff82036f70, 0xffffffff82037290]
        );
        assert!(matches!(
            range_in(SAMPLE, "tcp_done"),
            Err(KallsymsError::NoSymbol(_))
        ));
        let hidden = "0000000000000000 T tcp_time_wait\n0000000000000000 T x\n";
        assert!(matches!(
            range_in(hidden, "tcp_time_wait"),
            Err(KallsymsError::Hidden)
        ));
    }

    #[test]
    fn the_running_kernel_has_tcp_time_wait() {
        // Readable by anyone; the addresses only for root.
        match function_range("tcp_time_wait") {
            Ok([start, end]) => assert!(start < end),
            Err(KallsymsError::Hidden) => eprintln!("kallsyms hides addresses here"),
            Err(e) => panic!("{e}"),
        }
    }
}
