//! A progress bar on stderr for long runs, shown only on a terminal and when not `--quiet`, so
//! logs and CI output never hold bar redraws.

use std::io::IsTerminal;

pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// A bar of `total` steps, or nothing when `enabled` is false or stderr is not a terminal.
    pub fn new(enabled: bool, total: usize, what: &str) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        let template = format!("{what} {{bar:40}} {{pos}}/{{len}} {{elapsed}} {{wide_msg}}");
        bar.set_style(indicatif::ProgressStyle::with_template(&template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        Progress(Some(bar))
    }

    /// Names the step being worked on.
    pub fn start(&self, name: &str) {
        if let Some(b) = &self.0 {
            b.set_message(name.to_string());
        }
    }

    pub fn step(&self) {
        if let Some(b) = &self.0 {
            b.inc(1);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }

    pub fn is_shown(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
