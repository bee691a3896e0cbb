//! Reading what libtest (the harness of `cargo test`) prints.

/// `(passed, failed)` of one line, if it is a `test result:` line.
pub fn result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |label: &str| -> u64 {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(label))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    Some((count(" passed"), count(" failed")))
}

/// `(passed, failed)` added up over every `test result:` line of `log`.
pub fn count_results(log: &str) -> (u64, u64) {
    log.lines()
        .filter_map(result_line)
        .fold((0, 0), |(p, f), (lp, lf)| (p + lp, f + lf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_several_binaries_add_up() {
        let log = "running 3 tests\n\
                   test a ... ok\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n\
                   test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(count_results(log), (9, 1));
        assert_eq!(count_results("no tests here"), (0, 0));
        assert_eq!(result_line("test a ... ok"), None);
    }
}
