//! Colour for what the CLI prints: on a terminal unless NO_COLOR is set, or as `--color` says.
//! The terminal rules (NO_COLOR, CLICOLOR, TERM=dumb, a pipe) are anstream's, as clap's own
//! help output follows them; the styles are anstyle's.

use anstyle::{AnsiColor, Effects, Style};
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour what goes to stdout. An explicit `always` or `never` beats NO_COLOR.
    pub fn resolve(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !matches!(
                anstream::AutoStream::choice(&std::io::stdout()),
                anstream::ColorChoice::Never
            ),
        }
    }
}

/// ANSI colour, or nothing.
#[derive(Clone, Copy)]
pub struct Paint(pub bool);

#[derive(Clone, Copy)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Heading,
    /// What did not apply.
    Dim,
}

impl Paint {
    pub fn tone(self, tone: Tone, s: &str) -> String {
        if !self.0 {
            return s.to_string();
        }
        let style = match tone {
            Tone::Good => Style::new().fg_color(Some(AnsiColor::Green.into())),
            Tone::Warn => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            Tone::Bad => Style::new().fg_color(Some(AnsiColor::Red.into())),
            Tone::Heading => Style::new().effects(Effects::BOLD),
            Tone::Dim => Style::new().effects(Effects::DIMMED),
        };
        format!("{style}{s}{style:#}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tones_are_the_plain_ansi_codes() {
        let p = Paint(true);
        assert_eq!(p.tone(Tone::Good, "ok"), "\x1b[32mok\x1b[0m");
        assert_eq!(p.tone(Tone::Warn, "w"), "\x1b[33mw\x1b[0m");
        assert_eq!(p.tone(Tone::Bad, "b"), "\x1b[31mb\x1b[0m");
        assert_eq!(p.tone(Tone::Heading, "h"), "\x1b[1mh\x1b[0m");
        assert_eq!(p.tone(Tone::Dim, "d"), "\x1b[2md\x1b[0m");
        assert_eq!(Paint(false).tone(Tone::Bad, "b"), "b");
    }
}
