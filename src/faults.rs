//! Deliberately broken behaviours, for proving that the chaos checker catches what they break.
//!
//! They exist only in test builds: the `test-faults` feature, which nothing but the test suite's
//! dev-dependency on this package turns on. A member built with it still behaves correctly unless
//! its environment names a fault: `PHOENIX_TEST_FAULTS=stale-reads` serves linearizable reads
//! from local state without a read index.

/// Whether `fault` is switched on for this process.
#[cfg(feature = "test-faults")]
pub fn enabled(fault: &str) -> bool {
    static FAULTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let faults = FAULTS.get_or_init(|| {
        let listed = std::env::var("PHOENIX_TEST_FAULTS").unwrap_or_default();
        let faults: Vec<String> = listed.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect();
        if !faults.is_empty() {
            tracing::warn!(?faults, "running with deliberately broken behaviours (PHOENIX_TEST_FAULTS)");
        }
        faults
    });
    faults.iter().any(|f| f == fault)
}

/// Whether `fault` is switched on for this process: never, in a build without `test-faults`.
#[cfg(not(feature = "test-faults"))]
pub fn enabled(_fault: &str) -> bool {
    false
}
