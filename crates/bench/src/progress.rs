//! Progress bars on stderr, one look for every phase of every scenario, so
//! a long `all` run shows where it is. Results go to stdout and files, never
//! through here.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `len` steps of `phase`.
pub(crate) fn bar(len: usize, phase: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:<44} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(phase.into());
    bar
}
