//! `passknock doctor`'s report: one line per check, a fix under each that needs one; colour on a
//! terminal; `--json` for scripts.

use std::io::Write;

use crate::cli::doctor::{examine, healthy, Check, Health, Options};

use crate::cli::paint::{Paint, Tone};
use crate::cli::CliError;

pub fn run(opts: &Options, json: bool, paint: Paint, out: &mut impl Write) -> Result<(), CliError> {
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
        report(out, &checks, paint)?;
    }
    let failed = checks.iter().filter(|c| c.verdict == Health::Fail).count();
    if failed > 0 {
        return Err(CliError::Refused(format!(
            "{failed} check(s) failed; the fixes are above"
        )));
    }
    Ok(())
}

fn verdict(p: Paint, v: Health) -> String {
    let word = format!("{:<4}", v.word());
    let tone = match v {
        Health::Ok => Tone::Good,
        Health::Warn => Tone::Warn,
        Health::Fail => Tone::Bad,
        Health::Skip => Tone::Dim,
    };
    p.tone(tone, &word)
}

pub fn report(out: &mut impl Write, checks: &[Check], p: Paint) -> std::io::Result<()> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        writeln!(out, "{}  {:<width$}  {}", verdict(p, c.verdict), c.name, c.detail)?;
        if let Some(fix) = &c.fix {
            writeln!(out, "{:4}  {:<width$}  fix: {fix}", "", "")?;
        }
    }
    let count = |v| checks.iter().filter(|c| c.verdict == v).count();
    writeln!(
        out,
        "{} checks: {} ok, {} warning(s), {} failed, {} skipped",
        checks.len(),
        count(Health::Ok),
        count(Health::Warn),
        count(Health::Fail),
        count(Health::Skip)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Check> {
        vec![
            Check {
                name: "nft",
                verdict: Health::Ok,
                detail: "nftables v1.1.1".into(),
                fix: None,
            },
            Check {
                name: "fastagi",
                verdict: Health::Fail,
                detail: "cannot connect".into(),
                fix: Some("start passknockd".into()),
            },
        ]
    }

    #[test]
    fn the_report_has_a_fix_under_each_failure_and_colour_only_when_asked() {
        let mut plain = Vec::new();
        report(&mut plain, &sample(), Paint(false)).unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert_eq!(
            plain,
            [
                "ok    nft      nftables v1.1.1",
                "FAIL  fastagi  cannot connect",
                "               fix: start passknockd",
                "2 checks: 1 ok, 0 warning(s), 1 failed, 0 skipped\n",
            ]
            .join("\n")
        );
        let mut coloured = Vec::new();
        report(&mut coloured, &sample(), Paint(true)).unwrap();
        let coloured = String::from_utf8(coloured).unwrap();
        assert!(coloured.contains("\x1b[31mFAIL\x1b[0m"), "{coloured:?}");
    }
}
