//! `tracer top`: a live terminal view of the daemon's state, read from its
//! `/api/v1/snapshot`. The data arrives from a fetcher thread as owned
//! snapshots; the model derives what is shown; the view draws it.

pub mod client;
pub mod model;
pub mod text;
pub mod view;

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use self::{
    client::{Client, ClientOptions, Endpoint, FetchError},
    model::{Action, Key, Model},
    view::Theme,
};
use crate::serve::snapshot::Snapshot;

#[derive(Debug, Clone)]
pub struct TopOptions {
    /// The daemon's base URL (and any credentials it carried).
    pub endpoint: Endpoint,
    /// TLS roots and basic auth.
    pub client: ClientOptions,
    pub interval: Duration,
    /// Print once as text and exit.
    pub once: bool,
}

pub fn run(options: TopOptions) -> anyhow::Result<()> {
    let timeout = options
        .interval
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    let client = Client::new(&options.endpoint, &options.client, timeout)?;
    let mut model = Model::new(&options.endpoint.url, options.interval.as_secs_f64());
    if options.once {
        model.update(client.fetch()?);
        print!("{}", text::render(&model));
        return Ok(());
    }
    let updates = spawn_fetcher(client, options.interval);
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = ui_loop(&mut terminal, &mut model, &updates);
    // Also restored on panic: ratatui's panic hook does it.
    ratatui::restore();
    result
}

/// Fetches a snapshot every `interval` until the receiver goes away.
fn spawn_fetcher(
    client: Client,
    interval: Duration,
) -> mpsc::Receiver<Result<Snapshot, FetchError>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        loop {
            let started = Instant::now();
            if tx.send(client.fetch()).is_err() {
                return;
            }
            thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    });
    rx
}

fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    model: &mut Model,
    updates: &mpsc::Receiver<Result<Snapshot, FetchError>>,
) -> anyhow::Result<()> {
    let theme = Theme::from_env();
    let mut dirty = true;
    loop {
        for update in updates.try_iter() {
            match update {
                Ok(snapshot) => model.update(snapshot),
                Err(e) => model.fetch_failed(e.failure()),
            }
            dirty = true;
        }
        if dirty {
            terminal.draw(|frame| view::render(frame, model, theme))?;
            dirty = false;
        }
        if !event::poll(Duration::from_millis(100))? {
            continue;
        }
        match event::read()? {
            Event::Key(k) if k.kind != KeyEventKind::Release => {
                let key = match k.code {
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
                    KeyCode::Char(c) => Key::Char(c),
                    KeyCode::Esc => Key::Esc,
                    KeyCode::Enter => Key::Enter,
                    KeyCode::Backspace => Key::Backspace,
                    _ => continue,
                };
                match model.handle_key(key) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => dirty = true,
                    Action::None => {}
                }
            }
            Event::Resize(..) => dirty = true,
            _ => {}
        }
    }
}
