//! `solver::request_interrupt` (the Python binding's Ctrl-C) ends running solves within an
//! iteration with the error "interrupted", and nothing is judged from them. Its own test
//! binary: the flag is process-wide, and would cut the solves of tests running beside it.

use mlab_nc::commands::verify::{ufm, VerifyOptions};
use mlab_nc::model::config::UfmConfig;
use mlab_nc::solver::{clear_interrupt, request_interrupt};

#[test]
fn an_interrupt_ends_the_solves_with_an_error() {
    // D's shape: 100 starts take about a minute; the interrupt comes after 0.3 s.
    let cfg = UfmConfig { dim: 64, lambda_w: 2e-4, lambda_h: 2e-4, lambda_b: 2e-4, ..UfmConfig::new(50, 3) }.validate().unwrap();
    let t0 = std::time::Instant::now();
    let err = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            request_interrupt();
        });
        ufm(&cfg, 0, 100, &VerifyOptions::default(), false).unwrap_err()
    });
    assert_eq!(err.0, "interrupted");
    assert!(t0.elapsed().as_secs_f64() < 20.0, "{:?}", t0.elapsed());
    // Cleared, solves run to their verdict again.
    clear_interrupt();
    let small = UfmConfig::new(4, 2).validate().unwrap();
    assert_eq!(ufm(&small, 0, 2, &VerifyOptions::default(), false).unwrap().verdict.name(), "verified");
}
