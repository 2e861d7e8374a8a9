//! The live view of a build on a terminal: event lines scroll as in plain output, and one
//! status line at the bottom, redrawn in place, lists the units building right now.
//!
//! Used when stderr is a terminal and `--progress` is `auto` or `tty`; `--progress plain` (or
//! a pipe) prints plain lines only. `NO_COLOR` is irrelevant: the view uses no colour, only
//! `\r` and "erase line".

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::Mutex;

/// Whether to draw the live view for `--progress MODE`.
pub fn live(mode: &str) -> bool {
    match mode {
        "tty" => true,
        "plain" => false,
        _ => std::io::stderr().is_terminal(),
    }
}

/// The state behind the status line.
#[derive(Default)]
pub struct LiveView {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: BTreeSet<String>,
    done: usize,
    drawn: bool,
}

const ERASE: &str = "\r\x1b[K";

impl LiveView {
    /// Prints `line` above the status line and redraws it with the new set of running units.
    pub fn print(&self, line: Option<&str>, started: Option<&str>, ended: Option<&str>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(unit) = started {
            state.running.insert(unit.to_owned());
        }
        if let Some(unit) = ended {
            state.running.remove(unit);
            state.done += 1;
        }
        // One write per redraw, through the binary's printer (the lock on `state` keeps
        // redraws whole).
        let mut text = String::new();
        if state.drawn {
            text.push_str(ERASE);
        }
        if let Some(line) = line {
            text.push_str(line);
            text.push('\n');
        }
        if state.running.is_empty() {
            state.drawn = false;
        } else {
            let names: Vec<&str> = state.running.iter().map(String::as_str).collect();
            text.push_str(&format!(
                "    Building [{} done, {} running] {}",
                state.done,
                names.len(),
                names.join(", ")
            ));
            state.drawn = true;
        }
        crate::output::err(&text);
    }

    /// Erases the status line.
    pub fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.drawn {
            crate::output::err(ERASE);
            state.drawn = false;
        }
    }
}
