//! `tracer top --once`: the same information as plain text, for scripts
//! and for terminals that cannot host the full view.

use std::fmt::Write as _;

use super::model::{Model, human_age};

pub fn render(model: &Model) -> String {
    let mut out = String::new();
    let Some(s) = &model.snapshot else {
        return out;
    };
    let _ = writeln!(
        out,
        "host {}  daemon up {}  events {:.0}/s  received {}  lost {}",
        s.hostname,
        human_age(s.uptime_seconds),
        s.events.per_second,
        s.events.received,
        s.events.lost
    );
    let _ = writeln!(out, "\nSTATE        SOCKETS");
    for r in model.states() {
        let _ = writeln!(out, "{:<12} {:>7}", r.state, r.count);
    }
    let _ = writeln!(out, "\nTRANSITION                      PER SEC      TOTAL");
    for t in model.transitions(10) {
        let name = format!("{} -> {}", t.from, t.to);
        let _ = writeln!(out, "{name:<30} {:>8.1} {:>10}", t.per_second, t.total);
    }
    let _ = writeln!(
        out,
        "\nCLOSE_WAIT LEAKS (> {}): {}",
        human_age(s.close_wait_threshold_seconds),
        s.close_wait_leaked_total
    );
    let leaks = model.leaks();
    if !leaks.is_empty() {
        let _ = writeln!(
            out,
            "PID      PROCESS          LOCAL                  REMOTE                 AGE"
        );
        for l in leaks {
            let _ = writeln!(
                out,
                "{:<8} {:<16} {:<22} {:<22} {}",
                l.pid,
                if l.comm.is_empty() { "?" } else { &l.comm },
                l.local,
                l.remote,
                human_age(l.age_seconds)
            );
        }
    }
    let _ = writeln!(out, "\nTIME_WAIT BY DESTINATION");
    for d in model.destinations() {
        let _ = writeln!(out, "{:<46} {:>6}", d.remote, d.count);
    }
    failing(model, &mut out);
    out
}

/// The failing view's tables: totals (one snapshot has no rates).
fn failing(model: &Model, out: &mut String) {
    let _ = writeln!(
        out,
        "\nCONNECT FAILURES                                TOTAL"
    );
    for r in model.connect_failures() {
        let _ = writeln!(out, "{:<46} {:>6}", r.name, r.total);
    }
    let _ = writeln!(
        out,
        "\nCLOSES AND RESETS                               TOTAL"
    );
    for r in model.closes_and_resets() {
        let _ = writeln!(out, "{:<46} {:>6}", r.name, r.total);
    }
    let _ = writeln!(
        out,
        "\nLISTENER                         QUEUE/LIMIT   DROPS"
    );
    for l in model.listeners() {
        let e = l.entry;
        let drops = e.drops.map_or("?".to_owned(), |d| d.to_string());
        let queue = format!("{}/{}", e.queued, e.limit);
        let _ = writeln!(out, "{:<32} {queue:>11} {drops:>7}", e.listener);
    }
    let _ = writeln!(
        out,
        "\nEPHEMERAL PORTS                         FREE    USED"
    );
    for p in model.ephemeral_ports() {
        let _ = writeln!(out, "{:<38} {:>6} {:>7}", p.destination, p.free, p.in_use);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::snapshot;

    #[test]
    fn plain_text_has_every_section() {
        let mut m = Model::new("http://x", 1.0);
        m.update(snapshot(3725.0, 150));
        let text = render(&m);
        for needle in [
            "host web-1  daemon up 1h02m  events 410/s  received 123456  lost 7",
            "ESTABLISHED      150",
            "CLOSE -> SYN_SENT                  40.0       1000",
            "CLOSE_WAIT LEAKS (> 1m00s): 3",
            "4242     leaky-server     10.0.0.1:8080",
            "10.0.0.5:443",
            "10.0.0.9:5432 refused",
            "rst in SYN_SENT",
            "0.0.0.0:8080                         128/128   18625",
            "10.0.0.8:6379                            1232   27000",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains('\u{1b}'), "no escape codes");
    }
}
