//! Throughput of the objective's three GEMM shapes against the chunk width (single thread).
use mlab_nc::linalg::{gemm, Mat};
use std::time::Instant;

fn main() {
    let (k, d) = (100, 128);
    for &c in &[256usize, 512, 1024, 2048, 4096] {
        let w: Vec<f64> = (0..k * d).map(|i| (i as f64).sin()).collect();
        let h: Vec<f64> = (0..d * c).map(|i| (i as f64).cos()).collect();
        let mut z = vec![0.0; k * c];
        let mut dw = vec![0.0; k * d];
        let mut dh = vec![0.0; d * c];
        let reps = (200_000_000 / (6 * k * d * c)).max(3);
        let t = Instant::now();
        for _ in 0..reps {
            gemm(1.0, Mat::new(&w, k, d), false, Mat::new(&h, d, c), false, 0.0, &mut z);
            gemm(1.0, Mat::new(&z, k, c), false, Mat::new(&h, d, c), true, 0.0, &mut dw);
            gemm(1.0, Mat::new(&w, k, d), true, Mat::new(&z, k, c), false, 0.0, &mut dh);
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!("chunk {c:5}: {:.2} GFLOPS", 6.0 * (k * d * c) as f64 / s / 1e9);
    }
}
