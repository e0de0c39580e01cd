//! `AnyDevice` runs graphs exactly like the device it wraps.

use switchyard::runtime::conformance::{all_cases, run_case, Outcome};
use switchyard::AnyDevice;

#[test]
fn any_device_cpu_runs_composite_cases() {
    let device = AnyDevice::open("CPU").unwrap();
    let cases = all_cases();
    let composite: Vec<_> = cases
        .iter()
        .filter(|c| c.name.starts_with("layer/"))
        .collect();
    assert!(composite.len() >= 3);
    for case in composite {
        let r = run_case(&device, case);
        assert_eq!(r.outcome, Outcome::Passed, "{}", case.name);
    }
}
