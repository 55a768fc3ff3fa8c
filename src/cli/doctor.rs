//! `passknock doctor`'s report: one line per check, a fix under each that needs one; colour on a
//! terminal; `--json` for scripts.

use std::io::{IsTerminal, Write};

use crate::doctor::{examine, healthy, Check, Options, Verdict};

use super::CliError;

pub fn run(opts: &Options, json: bool, out: &mut impl Write) -> Result<(), CliError> {
    let checks = examine(opts);
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "config": opts.config,
                "healthy": healthy(&checks),
                "checks": checks,
            }))
            .unwrap_or_default()
        )?;
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        report(out, &checks, colour)?;
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        return Err(CliError::Refused(format!(
            "{failed} check(s) failed; the fixes are above"
        )));
    }
    Ok(())
}

fn paint(colour: bool, v: Verdict) -> String {
    let word = format!("{:<4}", v.word());
    if !colour {
        return word;
    }
    let code = match v {
        Verdict::Ok => "32",
        Verdict::Warn => "33",
        Verdict::Fail => "1;31",
        Verdict::Skip => "2",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

pub fn report(out: &mut impl Write, checks: &[Check], colour: bool) -> std::io::Result<()> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        writeln!(
            out,
            "{}  {:<width$}  {}",
            paint(colour, c.verdict),
            c.name,
            c.detail
        )?;
        if let Some(fix) = &c.fix {
            writeln!(out, "{:4}  {:<width$}  fix: {fix}", "", "")?;
        }
    }
    let count = |v| checks.iter().filter(|c| c.verdict == v).count();
    writeln!(
        out,
        "{} checks: {} ok, {} warning(s), {} failed, {} skipped",
        checks.len(),
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail),
        count(Verdict::Skip)
    )
}
