//! The Failing view (key `f`): how connections fail, from the snapshot's
//! `failing` section.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::Span,
    widgets::{Block, Cell, Row, Table},
};

use super::Theme;
use crate::top::model::{Model, RateRow};

/// The failing view: connect failures by destination and reason (top
/// left) and the destinations with the fewest ephemeral ports left (top
/// right), closes and resets (bottom left), listeners' accept queues
/// (bottom right); rates per second since the snapshot before, rows red
/// where something fails.
pub(super) fn render(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let [left, ports] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    let [ends, listeners] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(bottom);
    let rates = |rows: Vec<RateRow>| {
        rows.into_iter().map(|r| {
            let bad = r.per_second > 0.0;
            let cells = [r.name, format!("{:.1}", r.per_second), r.total.to_string()];
            (cells, bad)
        })
    };
    let failures = rates(model.connect_failures());
    let header = ["DESTINATION REASON", "/s", "TOTAL"];
    let title = " Connect failures ";
    frame.render_widget(table(failures, [6, 7], header, title, theme), left);
    let ports_left = model.ephemeral_ports().into_iter().map(|p| {
        let range = u64::from(p.free) + u64::from(p.in_use);
        // Under a tenth of the range, as the TcpEphemeralPortsLow alert.
        let bad = u64::from(p.free) * 10 < range;
        let cells = [
            p.destination.clone(),
            p.free.to_string(),
            p.in_use.to_string(),
        ];
        (cells, bad)
    });
    let header = ["DESTINATION", "FREE", "USED"];
    let title = " Ephemeral ports ";
    frame.render_widget(table(ports_left, [6, 6], header, title, theme), ports);
    let closes = rates(model.closes_and_resets());
    let header = ["HOW", "/s", "TOTAL"];
    let title = " Closes and resets ";
    frame.render_widget(table(closes, [6, 7], header, title, theme), ends);
    let queues = model.listeners().into_iter().map(|l| {
        let e = l.entry;
        let full = e.limit > 0 && e.queued >= e.limit;
        let cells = [
            e.listener.clone(),
            format!("{}/{}", e.queued, e.limit),
            format!("{:.1}", l.drops_per_second),
        ];
        (cells, full || l.drops_per_second > 0.0)
    });
    let header = ["LISTENER", "QUEUE", "DROP/s"];
    let title = " Listeners ";
    frame.render_widget(table(queues, [11, 7], header, title, theme), listeners);
}

/// A bordered table of a name and two figures (`widths` wide); a row is
/// red when its flag says it is failing.
fn table<'a>(
    rows: impl IntoIterator<Item = ([String; 3], bool)>,
    widths: [u16; 2],
    header: [&'a str; 3],
    title: &'a str,
    theme: Theme,
) -> Table<'a> {
    let rows = rows.into_iter().map(|(cells, bad)| {
        let style = if bad { theme.bad() } else { Style::default() };
        Row::new(cells.map(Cell::from)).style(style)
    });
    let widths = [
        Constraint::Min(0),
        Constraint::Length(widths[0]),
        Constraint::Length(widths[1]),
    ];
    Table::new(rows, widths)
        .header(Row::new(header).style(theme.header()))
        .block(Block::bordered().title(Span::styled(title, theme.title())))
}
