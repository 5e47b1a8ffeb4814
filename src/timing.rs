//! Percentile timings for the benchmark tools (`samserve bench`, `cargo bench --bench pipeline`).

use std::time::Instant;

/// p50 and p99 of `repeats` timed runs of `work` (after one warm-up run), in milliseconds.
pub fn percentiles(repeats: usize, mut work: impl FnMut()) -> (f64, f64) {
    work();
    let repeats = repeats.max(1);
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((q * repeats as f64).ceil() as usize).clamp(1, repeats) - 1];
    (at(0.5), at(0.99))
}
