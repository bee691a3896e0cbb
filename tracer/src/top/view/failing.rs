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
use crate::top::model::Model;

/// The failing view: connect failures by destination and reason (top
/// left) and the destinations with the fewest ephemeral ports left (top
/// right), closes and resets (bottom left), listeners' accept queues
/// (bottom right); rates per second since the snapshot before.
pub(super) fn render(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let [left, ports] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    let [ends, listeners] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(bottom);
    let rate_table = |rows: Vec<crate::top::model::RateRow>, title: &'static str, what| {
        let rows = rows.into_iter().map(|r| {
            let style = if r.per_second > 0.0 {
                theme.bad()
            } else {
                Style::default()
            };
            Row::new(vec![
                Cell::from(r.name),
                Cell::from(format!("{:.1}", r.per_second)),
                Cell::from(r.total.to_string()),
            ])
            .style(style)
        });
        Table::new(
            rows,
            [
                Constraint::Min(0),
                Constraint::Length(6),
                Constraint::Length(7),
            ],
        )
        .header(Row::new([what, "/s", "TOTAL"]).style(theme.header()))
        .block(Block::bordered().title(Span::styled(title, theme.title())))
    };
    let failures = rate_table(
        model.connect_failures(),
        " Connect failures ",
        "DESTINATION REASON",
    );
    frame.render_widget(failures, left);
    render_ports(frame, ports, model, theme);
    frame.render_widget(
        rate_table(model.closes_and_resets(), " Closes and resets ", "HOW"),
        ends,
    );
    let rows = model.listeners().into_iter().map(|l| {
        let e = l.entry;
        let full = e.limit > 0 && e.queued >= e.limit;
        let style = if full || l.drops_per_second > 0.0 {
            theme.bad()
        } else {
            Style::default()
        };
        Row::new(vec![
            Cell::from(e.listener.clone()),
            Cell::from(format!("{}/{}", e.queued, e.limit)),
            Cell::from(format!("{:.1}", l.drops_per_second)),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(0),
            Constraint::Length(11),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(["LISTENER", "QUEUE", "DROP/s"]).style(theme.header()))
    .block(Block::bordered().title(Span::styled(" Listeners ", theme.title())));
    frame.render_widget(table, listeners);
}

/// Ephemeral ports left toward the scarcest destinations: red under a
/// tenth of the range (as the TcpEphemeralPortsLow alert).
fn render_ports(frame: &mut Frame, area: Rect, model: &Model, theme: Theme) {
    let rows = model.ephemeral_ports().into_iter().map(|p| {
        let range = u64::from(p.free) + u64::from(p.in_use);
        let style = if u64::from(p.free) * 10 < range {
            theme.bad()
        } else {
            Style::default()
        };
        Row::new(vec![
            Cell::from(p.destination.clone()),
            Cell::from(p.free.to_string()),
            Cell::from(p.in_use.to_string()),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(0),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
    )
    .header(Row::new(["DESTINATION", "FREE", "USED"]).style(theme.header()))
    .block(Block::bordered().title(Span::styled(" Ephemeral ports ", theme.title())));
    frame.render_widget(table, area);
}
