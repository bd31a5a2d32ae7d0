//! Faults injected into the sim twin from the command line, written
//! `ACTION:NODE:EFFECT` (`patch:web-2:fail`, `sync:db-b:lag=30s`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What goes wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultEffect {
    /// `patch:NODE:fail`: the package manager fails; the node keeps its version.
    PatchFails,
    /// `reboot:NODE:hang`: the node never comes back from a reboot.
    RebootHangs,
    /// `sync:NODE:lag=30s`: the replica stays this far behind its primary.
    SyncLag(Duration),
    /// `probe:NODE:errors=20%`: once patched, this share of the node's
    /// requests fail (a bad patch that still answers a smoke test).
    ProbeErrors(f64),
    /// `drain:NODE:stuck`: connections never reach zero.
    DrainStuck,
    /// `drift:NODE:openssl=3.0.2`: a fact changed outside any step (a
    /// package by name, a top-level fact such as `kernel`, or a dotted path).
    Drift { fact: String, value: String },
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub node: String,
    pub effect: FaultEffect,
}

pub const FAULT_GRAMMAR: &str =
    "write ACTION:NODE:EFFECT, one of patch:NODE:fail, reboot:NODE:hang, sync:NODE:lag=30s, probe:NODE:errors=20%, drain:NODE:stuck, drift:NODE:PACKAGE=VERSION";

/// A fault spec that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid fault `{spec}`: {reason}")]
pub struct FaultSpecError {
    pub spec: String,
    pub reason: String,
}

impl FromStr for Fault {
    type Err = FaultSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| FaultSpecError { spec: spec.to_string(), reason: reason.to_string() };
        let mut parts = spec.splitn(3, ':');
        let (Some(action), Some(node), Some(effect)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected three parts separated by `:`"));
        };
        if node.is_empty() {
            return Err(err("the node name is empty"));
        }
        let (name, value) = effect.split_once('=').map_or((effect, None), |(k, v)| (k, Some(v)));
        let effect = match (action, name, value) {
            ("patch", "fail", None) => FaultEffect::PatchFails,
            ("reboot", "hang", None) => FaultEffect::RebootHangs,
            ("drain", "stuck", None) => FaultEffect::DrainStuck,
            ("sync", "lag", Some(v)) => FaultEffect::SyncLag(
                humantime::parse_duration(v).map_err(|e| err(&format!("lag `{v}`: {e} (write e.g. 30s)")))?,
            ),
            ("probe", "errors", Some(v)) => {
                let pct: f64 = v
                    .strip_suffix('%')
                    .unwrap_or(v)
                    .parse()
                    .map_err(|_| err(&format!("error rate `{v}` is not a percentage (write e.g. 20%)")))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(err("the error rate must be between 0% and 100%"));
                }
                FaultEffect::ProbeErrors(pct / 100.0)
            }
            ("drift", fact, Some(v)) if !fact.is_empty() && !v.is_empty() => {
                FaultEffect::Drift { fact: fact.to_string(), value: v.to_string() }
            }
            ("patch" | "reboot" | "drain" | "sync" | "probe" | "drift", _, _) => {
                return Err(err(&format!("unknown effect `{effect}` for `{action}`")))
            }
            _ => return Err(err(&format!("unknown action `{action}`"))),
        };
        Ok(Fault { node: node.to_string(), effect })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = &self.node;
        match &self.effect {
            FaultEffect::PatchFails => write!(f, "patch:{node}:fail"),
            FaultEffect::RebootHangs => write!(f, "reboot:{node}:hang"),
            FaultEffect::DrainStuck => write!(f, "drain:{node}:stuck"),
            FaultEffect::SyncLag(d) => write!(f, "sync:{node}:lag={}", humantime::format_duration(*d)),
            FaultEffect::ProbeErrors(r) => write!(f, "probe:{node}:errors={}%", r * 100.0),
            FaultEffect::Drift { fact, value } => write!(f, "drift:{node}:{fact}={value}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_fault_parses_and_prints_back() {
        for spec in [
            "patch:web-2:fail",
            "reboot:db-b:hang",
            "sync:db-b:lag=30s",
            "probe:app-05:errors=20%",
            "drain:web-3:stuck",
        ] {
            let fault: Fault = spec.parse().expect(spec);
            assert_eq!(fault.to_string(), spec);
        }
        let lag: Fault = "sync:db-b:lag=1m30s".parse().expect("lag");
        assert_eq!(lag.effect, FaultEffect::SyncLag(Duration::from_secs(90)));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = "patch:web-2".parse::<Fault>().unwrap_err();
        assert_eq!(e.to_string(), "invalid fault `patch:web-2`: expected three parts separated by `:`");
        assert!("reboot:db-b:explode".parse::<Fault>().unwrap_err().reason.contains("unknown effect"));
        assert!("melt:db-b:fail".parse::<Fault>().unwrap_err().reason.contains("unknown action"));
        assert!("probe:x:errors=200%".parse::<Fault>().is_err());
        assert!("sync:x:lag=soon".parse::<Fault>().is_err());
    }
}
