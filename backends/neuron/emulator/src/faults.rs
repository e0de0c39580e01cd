//! Fault injection: make the N-th call of a named function return a chosen status.
//!
//! Plan syntax (`SWITCHYARD_NRT_FAULTS` at `nrt_init`, or `switchyard_emu_set_faults` at any time):
//! comma-separated `function:N:status`, where `N` counts calls of that function from when the plan
//! was set (1 is the next call) and a trailing `+` (`function:N+:status`) fails that call and every
//! later one. Example: `nrt_execute:3:1002,nrt_tensor_allocate:1+:4`.

use std::collections::HashMap;
use switchyard_neuron_sys::NrtStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    function: String,
    nth: u64,
    sticky: bool,
    status: u32,
}

/// The active plan and per-function call counts.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<Rule>,
    calls: HashMap<String, u64>,
}

impl Faults {
    /// Parses a plan.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut rules = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = item.split(':').collect();
            let [function, nth, status] = parts.as_slice() else {
                return Err(format!("'{item}': expected function:N:status"));
            };
            let (nth, sticky) = match nth.strip_suffix('+') {
                Some(n) => (n, true),
                None => (*nth, false),
            };
            let nth: u64 = nth
                .parse()
                .map_err(|_| format!("'{item}': N must be a number"))?;
            let status: u32 = status
                .parse()
                .map_err(|_| format!("'{item}': status must be a number"))?;
            if nth == 0 || status == 0 {
                return Err(format!(
                    "'{item}': N counts from 1 and the status must not be SUCCESS"
                ));
            }
            rules.push(Rule {
                function: function.to_string(),
                nth,
                sticky,
                status,
            });
        }
        Ok(Faults {
            rules,
            calls: HashMap::new(),
        })
    }

    /// The plan from `SWITCHYARD_NRT_FAULTS` (empty when unset or unparsable).
    pub fn from_env() -> Faults {
        std::env::var("SWITCHYARD_NRT_FAULTS")
            .ok()
            .and_then(|s| Faults::parse(&s).ok())
            .unwrap_or_default()
    }

    /// Counts a call of `function`; `Err(status)` when the plan fails it.
    pub fn check(&mut self, function: &str) -> Result<(), NrtStatus> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let n = self.calls.entry(function.to_string()).or_insert(0);
        *n += 1;
        let n = *n;
        match self
            .rules
            .iter()
            .find(|r| r.function == function && (n == r.nth || (r.sticky && n > r.nth)))
        {
            Some(r) => Err(NrtStatus(r.status)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let mut f = Faults::parse("nrt_execute:2:1002, nrt_load:1+:4").unwrap();
        assert!(f.check("nrt_execute").is_ok());
        assert_eq!(f.check("nrt_execute"), Err(NrtStatus(1002)));
        assert!(f.check("nrt_execute").is_ok());
        assert_eq!(f.check("nrt_load"), Err(NrtStatus(4)));
        assert_eq!(f.check("nrt_load"), Err(NrtStatus(4)));
        assert!(Faults::parse("nrt_load:x:4").is_err());
        assert!(Faults::parse("nrt_load:1").is_err());
        assert!(Faults::parse("nrt_load:0:4").is_err());
        assert!(Faults::parse("").unwrap().check("nrt_load").is_ok());
    }
}
