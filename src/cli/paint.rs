//! Colour for what the CLI prints: on a terminal unless NO_COLOR is set, or as `--color` says.

use std::io::IsTerminal;

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
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
            }
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
        let code = match tone {
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
            Tone::Heading => "1",
            Tone::Dim => "2",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }
}
