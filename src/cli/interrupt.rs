//! Ctrl-C: the first one asks the running command to stop after the current token or run and
//! flush what it has (the process then exits with 130, the shell convention for SIGINT); a second
//! one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static REQUESTED: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// The exit status after an interruption (128 + SIGINT).
pub const EXIT_CODE: i32 = 130;

/// The flag Ctrl-C sets (shared with library code that polls it).
pub fn flag() -> Arc<AtomicBool> {
    REQUESTED
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// Installs the handler. Failing to install one (another handler exists) only means Ctrl-C keeps
/// its default effect.
pub fn install() {
    let flag = flag();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_CODE);
        }
        eprintln!("\ninterrupted: stopping after the current step (Ctrl-C again to quit now)");
    });
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.get().is_some_and(|f| f.load(Ordering::SeqCst))
}
