//! # switchyard-neuron-sys
//!
//! Hand-written declarations of the AWS Neuron runtime C API (`libnrt`), written from its public
//! headers' documentation, and a loader that opens the library at run time (never linked), so
//! everything builds and runs on machines without the Neuron SDK. Entry points the backend cannot
//! work without are required; the others are optional and degrade gracefully.
//!
//! This crate holds all of Switchyard's Neuron FFI; `switchyard-neuron` wraps it safely.
#![warn(missing_docs)]

mod library;
mod types;

pub use library::*;
pub use types::*;

/// A libnrt call that returned a status other than success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} returned status {} ({})", status.0, status.name())]
pub struct NrtError {
    /// The function that failed.
    pub call: &'static str,
    /// What it returned.
    pub status: NrtStatus,
}

/// `Ok(())` for success, else an [`NrtError`] naming `call`.
pub fn check(call: &'static str, status: NrtStatus) -> Result<(), NrtError> {
    if status.is_ok() {
        Ok(())
    } else {
        Err(NrtError { call, status })
    }
}

/// A NUL-terminated C string from a fixed-size `c_char` array (lossy UTF-8).
pub fn c_array_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_call_and_status() {
        let e = check("nrt_execute", NrtStatus(1002)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nrt_execute returned status 1002 (EXEC_BAD_INPUT)"
        );
        assert!(check("nrt_init", NrtStatus::SUCCESS).is_ok());
        let s: Vec<std::ffi::c_char> = b"abc\0zz".iter().map(|&b| b as std::ffi::c_char).collect();
        assert_eq!(c_array_to_string(&s), "abc");
    }

    #[test]
    fn missing_library_lists_the_paths_tried() {
        // Only meaningful where no real runtime is installed and the variable is unset.
        if std::env::var_os("SWITCHYARD_NRT_LIB").is_some()
            || std::path::Path::new("/opt/aws/neuron/lib").exists()
        {
            return;
        }
        match NrtLibrary::load() {
            Err(LoadError::NotFound { tried }) => {
                assert_eq!(tried.len(), 2);
                assert!(tried[0].starts_with("libnrt.so.1"));
                let msg = LoadError::NotFound { tried }.to_string();
                assert!(
                    msg.contains("SWITCHYARD_NRT_LIB")
                        && msg.contains("/opt/aws/neuron/lib/libnrt.so.1"),
                    "{msg}"
                );
            }
            Err(e) => panic!("unexpected: {e}"),
            Ok(_) => {}
        }
    }
}
