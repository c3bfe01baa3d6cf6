//! Progress of long operations on stderr: on a terminal, one line rewritten
//! in place (a spinner or a bar, and the elapsed time); anywhere else
//! nothing but the final line, so scripts and CI logs stay readable.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spinner frames, one per redraw.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Width assumed when the terminal does not say.
const DEFAULT_WIDTH: usize = 80;

/// One status line on stderr.
pub(crate) struct Line {
    enabled: bool,
    started: Instant,
    state: Mutex<Drawn>,
}

#[derive(Default)]
struct Drawn {
    /// The text last drawn (without spinner and time), to skip identical redraws.
    text: String,
    /// Whether something is on the line now.
    visible: bool,
    frame: usize,
    /// Elapsed whole seconds last drawn.
    secs: u64,
}

impl Line {
    /// A line drawn only when stderr is a terminal.
    pub(crate) fn new() -> Line {
        Line::with_terminal(std::io::stderr().is_terminal())
    }

    /// A line drawn only when `terminal`.
    pub(crate) fn with_terminal(terminal: bool) -> Line {
        Line {
            enabled: terminal,
            started: Instant::now(),
            state: Mutex::new(Drawn::default()),
        }
    }

    /// Whether anything but final lines is shown.
    pub(crate) fn is_live(&self) -> bool {
        self.enabled
    }

    /// Time since the line was made.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Drawn> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shows `text` with a spinner and the elapsed time. Cheap to call
    /// often: it redraws only when the text or the second changed, and
    /// the spinner turns once per call that redraws.
    pub(crate) fn spin(&self, text: &str) {
        if !self.enabled {
            return;
        }
        let secs = self.started.elapsed().as_secs();
        let mut drawn = self.lock();
        if drawn.visible && drawn.text == text && drawn.secs == secs {
            return;
        }
        drawn.frame = (drawn.frame + 1) % FRAMES.len();
        let line = fit(
            &format!(
                "{} {text} ({})",
                FRAMES[drawn.frame],
                elapsed_text(self.started.elapsed())
            ),
            width(),
        );
        draw(&line);
        drawn.text = text.to_string();
        drawn.secs = secs;
        drawn.visible = true;
    }

    /// Shows `text` as it is (a bar draws its own figures).
    pub(crate) fn show(&self, text: &str) {
        if !self.enabled {
            return;
        }
        let mut drawn = self.lock();
        if drawn.visible && drawn.text == text {
            return;
        }
        draw(&fit(text, width()));
        drawn.text = text.to_string();
        drawn.visible = true;
    }

    /// Prints a line that stays (a warning, a step done) above the status
    /// line, on terminals and elsewhere alike.
    pub(crate) fn println(&self, text: &str) {
        let mut drawn = self.lock();
        let mut err = std::io::stderr().lock();
        if drawn.visible {
            let _ = write!(err, "\r\x1b[2K");
            drawn.visible = false;
        }
        let _ = writeln!(err, "{text}");
        let _ = err.flush();
    }

    /// Removes the status line, if any.
    pub(crate) fn clear(&self) {
        let mut drawn = self.lock();
        if drawn.visible {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            drawn.visible = false;
        }
    }
}

impl Drop for Line {
    /// An error printed after an early return starts on a clean line.
    fn drop(&mut self) {
        self.clear();
    }
}

/// Awaits `work`, with `text` and a spinner on the status line meanwhile
/// (on a terminal); the line is gone when it returns.
pub(crate) async fn spinning<F: std::future::Future>(text: &str, work: F) -> F::Output {
    let line = Line::new();
    if !line.is_live() {
        return work.await;
    }
    let mut work = std::pin::pin!(work);
    // Quick work ends before anything is drawn: no flicker.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + 3 * TICK, TICK);
    loop {
        tokio::select! {
            out = &mut work => {
                line.clear();
                return out;
            }
            _ = tick.tick() => line.spin(text),
        }
    }
}

/// How often a spinner turns.
pub(crate) const TICK: Duration = Duration::from_millis(120);

fn draw(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

/// The terminal's width in columns: a wrapped line could not be rewritten
/// in place.
fn width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|&w| w > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

/// `text` cut to `width - 1` characters (the cursor needs the last column),
/// with `…` where it was cut.
pub(crate) fn fit(text: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(1);
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// `4.2s` under a minute, `2m05s` after.
pub(crate) fn elapsed_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// A transfer of `total` bytes: a bar with size, percentage and rate.
pub(crate) struct Bar {
    total: u64,
    line: Line,
}

/// Transfers at least this large get a bar (smaller ones end too soon to watch).
const BAR_FROM: u64 = 1 << 20;

impl Bar {
    /// A bar for `total` bytes, drawn when stderr is a terminal.
    pub(crate) fn new(total: u64) -> Bar {
        Bar::with_terminal(total, std::io::stderr().is_terminal())
    }

    /// A bar drawn when `terminal` and `total` is large enough to watch.
    pub(crate) fn with_terminal(total: u64, terminal: bool) -> Bar {
        Bar {
            total,
            line: Line::with_terminal(terminal && total >= BAR_FROM),
        }
    }

    /// The bar for `sent` bytes after `elapsed_secs`.
    pub(crate) fn text(&self, sent: u64, elapsed_secs: f64) -> String {
        const WIDTH: u64 = 30;
        let sent = sent.min(self.total);
        let total = self.total.max(1);
        let filled = usize::try_from(sent * WIDTH / total).unwrap_or(0);
        let bar = format!(
            "{}{}",
            "=".repeat(filled),
            " ".repeat(usize::try_from(WIDTH).unwrap_or(0).saturating_sub(filled))
        );
        let rate = if elapsed_secs > 0.0 {
            // Display only: precision loss on huge sizes does not matter.
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let r = (sent as f64 / elapsed_secs) as u64;
            format!("  {}/s", crate::modules::human_size(r))
        } else {
            String::new()
        };
        format!(
            "[{bar}] {}/{} {:>3}%{rate}",
            crate::modules::human_size(sent),
            crate::modules::human_size(self.total),
            sent * 100 / total
        )
    }

    /// Redraws the bar at `sent` bytes.
    pub(crate) fn update(&self, sent: u64) {
        if self.line.is_live() {
            self.line
                .show(&self.text(sent, self.line.elapsed().as_secs_f64()));
        }
    }

    /// Removes the bar; the caller prints the final line.
    pub(crate) fn finish(&self) {
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_for_large_transfers_on_terminals() {
        assert!(!Bar::with_terminal(10 << 20, false).line.is_live());
        assert!(!Bar::with_terminal(1000, true).line.is_live());
        let p = Bar::with_terminal(10 << 20, true);
        assert!(p.line.is_live());
        let half = p.text(5 << 20, 2.0);
        assert!(
            half.starts_with(&format!("[{}{}]", "=".repeat(15), " ".repeat(15))),
            "{half}"
        );
        assert!(half.contains("5.0MiB/10.0MiB  50%  2.5MiB/s"), "{half}");
        assert!(p.text(20 << 20, 0.0).contains("100%"), "never past the end");
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal() {
        assert_eq!(fit("short", 80), "short");
        assert_eq!(fit("abcdefghij", 6), "abcd…");
        assert_eq!(fit("abcdefghij", 6).chars().count(), 5);
        assert_eq!(fit("ab", 0), "…");
    }

    #[test]
    fn elapsed_time_reads_naturally() {
        assert_eq!(elapsed_text(Duration::from_millis(4200)), "4.2s");
        assert_eq!(elapsed_text(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn nothing_is_drawn_off_a_terminal() {
        let line = Line::with_terminal(false);
        line.spin("waiting");
        assert!(!line.lock().visible);
    }
}
