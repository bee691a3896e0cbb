//! Drawing the model: a pure function of it, so it is tested with
//! ratatui's TestBackend at fixed sizes.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row, Table},
};

use super::model::{Model, human_age, sparkline};

mod failing;

/// Colours, or none at all (NO_COLOR).
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Honours <https://no-color.org>: NO_COLOR set and not empty.
    pub fn from_env() -> Theme {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn title(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    fn warn(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn header(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}

pub fn render(frame: &mut Frame, model: &Model, theme: Theme) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(frame, header, model, theme);
    render_footer(frame, footer, model, theme);
    if model.snapshot.is_none() {
        let text = match &model.error {
            Some(e) => {
                let mut lines = vec![
                    Line::styled(format!("{}; retrying", e.summary), theme.bad()),
                    Line::raw(e.message.clone()),
                ];
                lines.extend(e.hint.map(Line::raw));
                lines
            }
            None => vec![Line::raw(format!("connecting to {} ...", model.endpoint))],
        };
        frame.render_widget(Paragraph::new(text).block(Block::bordered()), body);
    } else if model.failing {
        failing::render(frame, body, model, theme);
    } else {
        let [top, bottom] =
            Layout::vertical([Constraint::Length(14), Constraint::Min(0)]).areas(body);
        let [states, right] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(top);
        let [transitions, destinations] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
        render_states(frame, states, model, theme);
        render_transitions(frame, transitions, model, theme);
        render_destinations(frame, destinations, model, theme);
        render_leaks(frame, bottom, model, theme);
    }
    if model.help {
        render_help(frame, frame.area(), theme);
    }
}

fn render_header(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let mut first = vec![Span::styled("tracer top", theme.title())];
    let mut second = Vec::new();
    if let Some(s) = &model.snapshot {
        first.push(Span::raw(format!(
            "  {}  up {}  refresh {}s",
            s.hostname,
            human_age(s.uptime_seconds),
            model.interval_seconds
        )));
        second.push(Span::raw(format!(
            "events {:.0}/s  received {}  ",
            s.events.per_second, s.events.received
        )));
        let lost = format!("lost {}", s.events.lost);
        second.push(if s.events.lost > 0 {
            Span::styled(lost, theme.bad())
        } else {
            Span::raw(lost)
        });
        second.push(Span::raw(format!(
            "  tracked {}  corrections {}  ",
            s.events.tracked_sockets, s.events.corrections
        )));
        let failing = model.failing_per_second();
        let text = format!("failing {failing:.1}/s");
        second.push(if failing > 0.0 {
            Span::styled(text, theme.bad())
        } else {
            Span::raw(text)
        });
    }
    if model.paused {
        first.push(Span::styled("  [PAUSED]", theme.warn()));
    }
    if model.snapshot.is_some()
        && let Some(e) = &model.error
    {
        second = vec![Span::styled(
            format!("{}, retrying: {}", e.summary, e.message),
            theme.bad(),
        )];
    }
    frame.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        area,
    );
}

fn render_footer(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let filter = if model.editing {
        format!("filter: {}_", model.filter)
    } else if model.filter.is_empty() {
        "/ filter".to_owned()
    } else {
        format!("/ filter: {}", model.filter)
    };
    let line = Line::from(vec![
        Span::styled("q", theme.header()),
        Span::raw(" quit  "),
        Span::styled("p", theme.header()),
        Span::raw(if model.paused {
            " resume  "
        } else {
            " pause  "
        }),
        Span::styled("f", theme.header()),
        Span::raw(if model.failing {
            " sockets  "
        } else {
            " failing  "
        }),
        Span::styled("s", theme.header()),
        Span::raw(format!(" sort: {}  ", model.sort().label())),
        Span::raw(filter),
        Span::raw("  "),
        Span::styled("?", theme.header()),
        Span::raw(" help"),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn render_states(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    // Sparkline: what is left of the width after the number columns.
    let spark_width = usize::from(area.width.saturating_sub(2 + 11 + 9 + 9 + 3));
    let rows = model.states().into_iter().map(|r| {
        let style = if r.state == "CLOSE_WAIT" && r.count > 0 {
            theme.warn()
        } else {
            Style::default()
        };
        Row::new(vec![
            Cell::from(r.state),
            Cell::from(r.count.to_string()),
            Cell::from(format!("{:+.1}", r.per_second)),
            Cell::from(sparkline(&r.history, spark_width)),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(0),
        ],
    )
    .header(Row::new(["STATE", "SOCKETS", "CHANGE/s", "HISTORY"]).style(theme.header()))
    .block(Block::bordered().title(Span::styled(" Sockets by state ", theme.title())));
    frame.render_widget(table, area);
}

fn render_transitions(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let limit = usize::from(area.height.saturating_sub(3));
    let rows = model.transitions(limit).into_iter().map(|t| {
        Row::new(vec![
            Cell::from(format!("{}→{}", t.from, t.to)),
            Cell::from(format!("{:.1}", t.per_second)),
        ])
    });
    let table = Table::new(rows, [Constraint::Min(0), Constraint::Length(6)])
        .header(Row::new(["TRANSITION", "/s"]).style(theme.header()))
        .block(Block::bordered().title(Span::styled(" Busiest transitions ", theme.title())));
    frame.render_widget(table, area);
}

fn render_destinations(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let rows = model.destinations().into_iter().map(|d| {
        Row::new(vec![
            Cell::from(d.remote.clone()),
            Cell::from(d.count.to_string()),
        ])
    });
    let table = Table::new(rows, [Constraint::Min(0), Constraint::Length(8)])
        .header(Row::new(["REMOTE", "COUNT"]).style(theme.header()))
        .block(Block::bordered().title(Span::styled(" TIME_WAIT by destination ", theme.title())));
    frame.render_widget(table, area);
}

fn render_leaks(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let leaks = model.leaks();
    let threshold = model
        .snapshot
        .as_ref()
        .map(|s| human_age(s.close_wait_threshold_seconds))
        .unwrap_or_default();
    let total = model
        .snapshot
        .as_ref()
        .map(|s| s.close_wait_leaked_total)
        .unwrap_or(0);
    let title = format!(" CLOSE_WAIT leaks (> {threshold}): {total} ");
    let title_style = if total > 0 {
        theme.bad()
    } else {
        theme.title()
    };
    let rows = leaks.iter().map(|l| {
        Row::new(vec![
            Cell::from(if l.pid == 0 {
                "?".to_owned()
            } else {
                l.pid.to_string()
            }),
            Cell::from(if l.comm.is_empty() {
                "?".to_owned()
            } else {
                l.comm.clone()
            }),
            Cell::from(l.local.clone()),
            Cell::from(l.remote.clone()),
            Cell::from(human_age(l.age_seconds)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(["PID", "PROCESS", "LOCAL", "REMOTE", "AGE"]).style(theme.header()))
    .block(Block::bordered().title(Span::styled(title, title_style)));
    frame.render_widget(table, area);
}

fn render_help(frame: &mut Frame, area: Rect, theme: Theme) {
    let lines = vec![
        Line::styled("tracer top: keys", theme.title()),
        Line::raw(""),
        Line::raw("q, Esc    quit"),
        Line::raw("p         pause / resume updates"),
        Line::raw("f         failing view: connect failures, closes,"),
        Line::raw("          resets, listeners, ports / sockets view"),
        Line::raw("s         sort leaks: age, process, pid, local"),
        Line::raw("/         filter by port, pid or process name"),
        Line::raw("          (Enter or Esc ends typing)"),
        Line::raw("?         this help; any key closes it"),
    ];
    let width = 50.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered()), rect);
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::top::model::{FetchFailure, Key, tests::snapshot};

    fn draw(model: &Model, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal
            .draw(|f| render(f, model, Theme { color: false }))
            .expect("draw");
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn model() -> Model {
        let mut m = Model::new("http://127.0.0.1:9840", 1.0);
        m.update(snapshot(10.0, 100));
        m.update(snapshot(12.0, 150));
        m
    }

    #[test]
    fn fits_80x24() {
        let screen = draw(&model(), 80, 24);
        for needle in [
            "tracer top  web-1  up 12s",
            "lost 7",
            "ESTABLISHED 150",
            "+25.0",
            "LISTEN      4",
            "TIME_WAIT   120",
            "CLOSE_WAIT  3",
            "CLOSE→SYN_SENT",
            "10.0.0.5:443",
            "CLOSE_WAIT leaks (> 1m00s): 3",
            "leaky-server",
            "1h02m",
            "q quit",
        ] {
            assert!(screen.contains(needle), "missing {needle:?} in\n{screen}");
        }
        // Oldest leak first.
        let first = screen.find("1h02m").expect("oldest");
        let later = screen.find("5m00s").expect("younger");
        assert!(first < later, "{screen}");
        assert!(screen.lines().all(|l| l.chars().count() <= 80));
    }

    #[test]
    fn large_screen_shows_everything() {
        let screen = draw(&model(), 200, 60);
        for needle in [
            "java",
            "[2001:db8::1]:80",
            "LISTEN→SYN_RECV",
            "10.0.0.9:51001",
            "CLOSING",
        ] {
            assert!(screen.contains(needle), "missing {needle:?} in\n{screen}");
        }
    }

    #[test]
    fn unreachable_daemon_says_so() {
        let mut m = Model::new("http://127.0.0.1:9", 1.0);
        m.fetch_failed(FetchFailure::unreachable("connection refused".into()));
        let screen = draw(&m, 80, 24);
        assert!(
            screen.contains("daemon not reachable; retrying"),
            "{screen}"
        );
        assert!(screen.contains("connection refused"), "{screen}");
        // After data arrived, a failure is a header line; the data stays.
        let mut m = model();
        m.fetch_failed(FetchFailure::unreachable("timed out".into()));
        let screen = draw(&m, 80, 24);
        assert!(
            screen.contains("daemon not reachable, retrying: timed out"),
            "{screen}"
        );
        assert!(screen.contains("ESTABLISHED 150"), "{screen}");
    }

    #[test]
    fn refused_credentials_are_one_line_not_unreachable() {
        let mut m = Model::new("https://127.0.0.1:9840", 1.0);
        m.fetch_failed(FetchFailure {
            summary: "the daemon refused the credentials",
            message: "the daemon at https://127.0.0.1:9840 refused the credentials (401)".into(),
            hint: None,
        });
        let screen = draw(&m, 80, 24);
        assert!(
            screen.contains("the daemon refused the credentials; retrying"),
            "{screen}"
        );
        assert!(!screen.contains("not reachable"), "{screen}");
        assert!(!screen.contains("start it with"), "{screen}");
    }

    #[test]
    fn paused_filter_and_help_are_visible() {
        let mut m = model();
        m.handle_key(Key::Char('p'));
        m.handle_key(Key::Char('/'));
        m.handle_key(Key::Char('j'));
        let screen = draw(&m, 80, 24);
        assert!(screen.contains("[PAUSED]"), "{screen}");
        assert!(screen.contains("filter: j_"), "{screen}");
        assert!(
            screen.contains("java") && !screen.contains("leaky-server"),
            "{screen}"
        );
        m.handle_key(Key::Enter);
        m.handle_key(Key::Char('?'));
        let screen = draw(&m, 80, 24);
        assert!(screen.contains("tracer top: keys"), "{screen}");
    }

    #[test]
    fn no_color_means_no_color() {
        let colors = |color: bool| {
            let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
            terminal
                .draw(|f| render(f, &model(), Theme { color }))
                .expect("draw");
            let buffer = terminal.backend().buffer().clone();
            buffer
                .content()
                .iter()
                .filter(|c| c.fg != Color::Reset || c.bg != Color::Reset)
                .count()
        };
        assert!(colors(true) > 0, "the colour theme paints something");
        assert_eq!(colors(false), 0, "NO_COLOR must paint nothing");
        // SAFETY: tests in this module do not read NO_COLOR concurrently.
        unsafe { std::env::set_var("NO_COLOR", "1") };
        assert!(!Theme::from_env().color);
        unsafe { std::env::set_var("NO_COLOR", "") };
        assert!(Theme::from_env().color, "an empty NO_COLOR does not count");
        unsafe { std::env::remove_var("NO_COLOR") };
    }

    #[test]
    fn the_failing_view_fits_80x24() {
        let mut m = model();
        m.update(snapshot(12.0, 5));
        m.handle_key(Key::Char('f'));
        let screen = draw(&m, 80, 24);
        for want in [
            "Connect failures",
            "10.0.0.9:5432 refused",
            "Closes and resets",
            "closed fin",
            "rst in SYN_SENT",
            "Listeners",
            "0.0.0.0:8080",
            "128/128",
            "Ephemeral ports",
            "10.0.0.8:6379",
            "1232",
            "failing",
        ] {
            assert!(screen.contains(want), "{want} missing:\n{screen}");
        }
        m.handle_key(Key::Char('f'));
        assert!(draw(&m, 80, 24).contains("CLOSE_WAIT leaks"));
    }

    #[test]
    fn tiny_terminal_does_not_panic() {
        let mut m = model();
        m.help = true;
        for (w, h) in [(1, 1), (10, 5), (40, 10), (80, 3)] {
            let _ = draw(&m, w, h);
        }
    }
}
