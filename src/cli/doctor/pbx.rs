//! The checks over AMI: the manager login, the daemon user's permissions, the DISA dialplan context.

use super::asterisk::{manager_classes, Asterisk};
use super::network::agi_target;
// `{self}`: the AMI session module only, not the `ami` check this file defines.
use super::ami::{self};
use super::{fail, ok, skip, warn, Check, DIALPLAN_CONTEXT, TIMEOUT};
use crate::config::Config;

/// What the daemon's AMI user must read: contacts (system), failed logins (security), calls (call).
const AMI_READ: [&str; 3] = ["system", "security", "call"];

/// AMI reachable and logged in to; the user's permissions; the dialplan context.
pub(super) fn ami(config: &Config, asterisk: Option<&Asterisk>) -> Vec<Check> {
    let a = &config.ami;
    if !a.enabled {
        return vec![
            warn(
                "ami",
                "AMI is off: no contacts learned, no live calls held open, no bans for failed SIP logins",
                "set [ami] enabled = true with a manager user (see the README's AMI section)",
            ),
            skip("ami-permissions", "AMI is off"),
            dialplan_without_ami(config),
        ];
    }
    let login_fix = format!(
        "in manager.conf: [general] enabled = yes, port and bindaddr matching ami.address ({}); \
         a [{}] user whose secret is the one in ami.secret-file; then `asterisk -rx 'manager reload'`",
        a.address, a.username
    );
    let secret = match a.read_secret("[ami]") {
        Ok(s) => s,
        Err(e) => {
            return vec![
                fail("ami", e.to_string(), login_fix),
                skip("ami-permissions", "needs an AMI login"),
                skip("dialplan", "needs an AMI login"),
            ]
        }
    };
    let mut session = match ami::Ami::connect(&a.address, TIMEOUT)
        .and_then(|mut s| s.login(&a.username, &secret, a.login).map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            return vec![
                fail("ami", format!("{} as {}: {e}", a.address, a.username), login_fix),
                skip("ami-permissions", "needs an AMI login"),
                skip("dialplan", "needs an AMI login"),
            ]
        }
    };
    let mut checks = vec![ok("ami", format!("logged in to {} as {}", a.address, a.username))];
    checks.push(ami_permissions(&mut session, &a.username, asterisk));
    checks.push(dialplan(&mut session, config));
    session.logoff();
    checks
}

/// Read permissions from the manager.conf Asterisk loaded; write permissions by asking for what
/// the daemon asks for.
fn ami_permissions(session: &mut ami::Ami, user: &str, asterisk: Option<&Asterisk>) -> Check {
    let fix_conf = |missing: &str| {
        format!(
            "in manager.conf, [{user}]: read = {}, write = system,reporting; then `asterisk -rx 'manager reload'` \
             (missing: {missing})",
            AMI_READ.join(",")
        )
    };
    let mut denied = Vec::new();
    for action in ["PJSIPShowContacts", "CoreShowChannels"] {
        match session.request(action, &[]) {
            // An error other than a refusal ("No Contacts found") is still an answer.
            Ok((r, _))
                if !r
                    .get("Message")
                    .unwrap_or("")
                    .to_ascii_lowercase()
                    .contains("permission") => {}
            Ok((r, _)) => denied.push(format!("{action}: {}", r.get("Message").unwrap_or("refused"))),
            Err(e) => denied.push(format!("{action}: {e}")),
        }
    }
    if !denied.is_empty() {
        return fail(
            "ami-permissions",
            format!("Asterisk refuses the daemon's actions: {}", denied.join("; ")),
            fix_conf("write = system"),
        );
    }
    let Some(asterisk) = asterisk else {
        return warn(
            "ami-permissions",
            "actions allowed; read permissions not checked: no Asterisk process in this network namespace",
            "run the doctor on the PBX itself",
        );
    };
    let (conf, path) = match asterisk.manager_conf() {
        Ok(c) => c,
        Err(e) => {
            return warn(
                "ami-permissions",
                format!("actions allowed; read permissions not checked: {e}"),
                fix_conf("unknown"),
            )
        }
    };
    let Some(read) = manager_classes(&conf, user, "read") else {
        return warn(
            "ami-permissions",
            format!(
                "actions allowed; no [{user}] section in {} to read permissions from",
                path.display()
            ),
            fix_conf("unknown"),
        );
    };
    let missing: Vec<&str> = AMI_READ
        .iter()
        .copied()
        .filter(|c| !read.iter().any(|r| r == c || r == "all"))
        .collect();
    if missing.is_empty() {
        ok(
            "ami-permissions",
            format!("read = {} and the daemon's actions are allowed", read.join(",")),
        )
    } else {
        let without: Vec<&str> = missing
            .iter()
            .map(|c| match *c {
                "system" => "contacts are not learned",
                "security" => "failed SIP logins are never banned",
                _ => "live calls are not held open",
            })
            .collect();
        fail(
            "ami-permissions",
            format!(
                "[{user}] in {} reads {}, not {}: {}",
                path.display(),
                if read.is_empty() {
                    "nothing".to_string()
                } else {
                    read.join(",")
                },
                missing.join(","),
                without.join("; ")
            ),
            fix_conf(&missing.join(",")),
        )
    }
}

fn dialplan_fix(config: &Config) -> String {
    format!(
        "copy dialplan/passknock.conf to /etc/asterisk/passknock.conf, add `#include passknock.conf` to \
         extensions.conf, send the DISA number there with Goto({DIALPLAN_CONTEXT},s,1), then \
         `asterisk -rx 'dialplan reload'`; its AGI() must name agi://{}/disa",
        config.agi.listen
    )
}

fn dialplan_without_ami(config: &Config) -> Check {
    if config.disa.enabled {
        warn(
            "dialplan",
            format!("cannot ask Asterisk whether [{DIALPLAN_CONTEXT}] is loaded: AMI is off"),
            format!("check by hand: asterisk -rx 'dialplan show {DIALPLAN_CONTEXT}'"),
        )
    } else {
        skip("dialplan", "DISA is off")
    }
}

/// Asks Asterisk for the context and checks its AGI() reaches our listener.
fn dialplan(session: &mut ami::Ami, config: &Config) -> Check {
    if !config.disa.enabled {
        return skip("dialplan", "DISA is off");
    }
    let (response, lines) = match session.request("ShowDialPlan", &[("Context", DIALPLAN_CONTEXT)]) {
        Ok(r) => r,
        Err(e) => return fail("dialplan", format!("ShowDialPlan: {e}"), dialplan_fix(config)),
    };
    if !response.is("Response", "Success") {
        let message = response.get("Message").unwrap_or("refused");
        if message.to_ascii_lowercase().contains("permission") {
            return warn(
                "dialplan",
                format!("Asterisk will not show its dialplan to this user: {message}"),
                "add reporting to the AMI user's write permissions, or check by hand: \
                 asterisk -rx 'dialplan show passknock-disa'",
            );
        }
        return fail(
            "dialplan",
            format!("[{DIALPLAN_CONTEXT}] is not loaded in Asterisk ({message}): DISA calls cannot reach passknock"),
            dialplan_fix(config),
        );
    }
    let agi: Vec<&str> = lines
        .iter()
        .filter(|l| {
            l.get("Application")
                .is_some_and(|a| a.eq_ignore_ascii_case("AGI"))
        })
        .filter_map(|l| l.get("AppData"))
        .collect();
    let want = agi_target(config.agi.listen);
    if agi.iter().any(|d| d.starts_with(&want)) {
        ok(
            "dialplan",
            format!("[{DIALPLAN_CONTEXT}] is loaded and its AGI() calls {want}"),
        )
    } else {
        fail(
            "dialplan",
            format!(
                "[{DIALPLAN_CONTEXT}] is loaded but calls {}, not {want}",
                if agi.is_empty() {
                    "no AGI()".to_string()
                } else {
                    agi.join(", ")
                }
            ),
            dialplan_fix(config),
        )
    }
}
