//! Fault injection at the phase boundaries of long operations, for the
//! tests that prove whole-or-nothing. Built on the `fail` crate: without
//! the `failpoints` feature (every build but the tests') a point compiles
//! to nothing.
//!
//! `FAILPOINTS="backup-archived=return"` fails the run at that point,
//! `=return(kill)` kills the process there as `kill -9` would, `=panic`
//! panics.

use crate::error::Result;

/// Reads `FAILPOINTS` once, at start-up (a no-op without the feature).
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// A fault-injection point named `point`.
pub fn point(point: &str) -> Result<()> {
    let _ = point;
    fail::fail_point!(point, |arg: Option<String>| {
        if arg.as_deref() == Some("kill") {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        Err(crate::error::Error::component(
            "fault",
            format!("fault injected at {point}"),
        ))
    });
    Ok(())
}

/// The argument of a fault-injection point set to `return(ARG)` (a test's
/// knob, e.g. shorter lock timings); `None` without the feature.
#[must_use]
pub fn value(point: &str) -> Option<String> {
    let _ = point;
    fail::fail_point!(point, |arg: Option<String>| arg);
    None
}
