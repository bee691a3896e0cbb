//! `tracer trace`: stream transitions as they happen.

mod accepted;
pub mod filter;
pub mod format;
mod lifetimes;

use std::io::{self, BufWriter, Write};

use anyhow::Context as _;

pub use filter::Filter;

use accepted::AcceptedTuples;
use lifetimes::Lifetimes;

use crate::{
    kernel::clock::{WallClock, monotonic_ns},
    kernel::event::{Record, Transition},
    kernel::logs,
    kernel::probe::{KernelStats, Probe, ProbeOptions},
    kernel::ringbuf::EventReader,
    shutdown::Shutdown,
};

/// Output shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table { header: bool },
    Json,
}

#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub probe: ProbeOptions,
    pub filter: Filter,
    pub format: OutputFormat,
}

/// Decodes, filters and prints events; remembers what it saw.
struct Printer<W: Write> {
    out: W,
    clock: WallClock,
    filter: Filter,
    format: OutputFormat,
    events: u64,
    printed: u64,
    undecodable: u64,
    /// The first write error (a closed pipe, usually): printing stops there.
    error: Option<io::Error>,
    /// When each connection began, for its final row.
    lifetimes: Lifetimes,
}

impl<W: Write> Printer<W> {
    /// Decodes a record and passes it through `accepted` (which may hold
    /// it back a moment) to the output.
    fn handle(&mut self, bytes: &[u8], accepted: &mut AcceptedTuples) {
        match Record::decode(bytes) {
            Ok(Record::Transition(t)) => {
                self.events += 1;
                accepted.push(t, &mut |t| self.print(&t));
            }
            // `trace` loads no timewait programs; nothing else writes these.
            Ok(Record::Timewait(_)) => {}
            Err(e) => {
                self.events += 1;
                self.undecodable += 1;
                log::warn!("skipping an event: {e}");
            }
        }
    }

    fn print(&mut self, t: &Transition) {
        let end = self.lifetimes.see(t);
        if self.error.is_some() || !self.filter.matches(t) {
            return;
        }
        self.printed += 1;
        let res = match self.format {
            OutputFormat::Table { .. } => {
                writeln!(self.out, "{}", format::table_row(t, end, &self.clock))
            }
            OutputFormat::Json => format::write_json(&mut self.out, t, end, &self.clock),
        };
        if let Err(e) = res {
            self.error = Some(e);
        }
    }

    /// Flushes once per batch of events, not per event.
    fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e);
        }
    }
}

/// Streams transitions to stdout until SIGINT/SIGTERM or a closed stdout.
pub async fn run(options: TraceOptions, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let mut probe = Probe::load(&options.probe)?;
    let kernel_log = logs::forward(&mut probe);
    let mut reader = EventReader::new(probe.take_events()?).context("watching the ring buffer")?;
    let mut printer = Printer {
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        clock: WallClock::new(),
        filter: options.filter,
        format: options.format,
        events: 0,
        printed: 0,
        undecodable: 0,
        error: None,
        lifetimes: Lifetimes::default(),
    };
    if let OutputFormat::Table { header: true } = printer.format {
        writeln!(printer.out, "{}", format::table_header())?;
        printer.flush();
    }
    // Scripts and tests wait for this line before they start a workload.
    log::info!(
        "attached {} to sock:inet_sock_set_state; tracing TCP state transitions (Ctrl-C to stop)",
        probe.program_name()
    );

    let mut accepted = AcceptedTuples::default();
    let stopped_by = loop {
        let held = accepted.next_deadline(monotonic_ns());
        tokio::select! {
            signal = shutdown.wait() => break signal,
            read = reader.read(|bytes| printer.handle(bytes, &mut accepted)) => {
                read.context("reading the ring buffer")?;
            }
            () = tokio::time::sleep(held.unwrap_or_default()), if held.is_some() => {}
        }
        accepted.release(monotonic_ns(), &mut |t| printer.print(&t));
        printer.flush();
        if printer.error.is_some() {
            break "closed output";
        }
    };
    // Detach first, then drain and read the counters: nothing changes
    // between the two, so received + lost adds up to what the kernel counted.
    probe.detach()?;
    reader.drain_now(|bytes| printer.handle(bytes, &mut accepted));
    accepted.flush(&mut |t| printer.print(&t));
    printer.flush();
    let stats = probe.stats()?;
    let counted = probe.transitions_total()?;
    drop(probe);
    // The program's last debug lines before the closing ones.
    drop(kernel_log);
    report(stopped_by, &printer, &stats, counted);
    match printer.error {
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

/// The closing lines on stderr: always the totals, and losses loudly.
fn report<W: Write>(stopped_by: &str, printer: &Printer<W>, stats: &KernelStats, counted: u64) {
    log::info!(
        "stopped ({stopped_by}): {counted} transitions counted in the kernel, {} events received, \
         {} printed, {} lost",
        printer.events,
        printer.printed,
        stats.lost_events()
    );
    let lost = stats.lost_events();
    if lost > 0 {
        log::warn!(
            "{lost} events lost in the kernel (ring buffer full: {}, program not run: {}, \
             other: {}); raise --ring-buffer-size",
            stats.ringbuf_full,
            stats.recursion_misses,
            stats.record_read_failed + stats.bad_config
        );
    }
    if printer.undecodable > 0 {
        log::warn!("{} events could not be decoded", printer.undecodable);
    }
    if stats.sock_field_read_failed > 0 {
        log::warn!(
            "{} closing sockets' details (flags, error, kernel stack) could not be read",
            stats.sock_field_read_failed
        );
    }
    if stats.netns_read_failed > 0 {
        log::warn!(
            "{} events carry netns 0: reading the namespace failed",
            stats.netns_read_failed
        );
    }
}
