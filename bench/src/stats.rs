//! Latency samples and their summary: nearest-rank percentiles, so a
//! reported p99 is a latency some request really had.

use std::time::Duration;

/// Summary of one set of latency samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of sorted samples:
/// the smallest sample such that at least p% of samples are ≤ it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts the samples and summarizes them.
pub fn summarize(samples: &mut [Duration]) -> Summary {
    samples.sort_unstable();
    Summary {
        count: samples.len(),
        p50: percentile(samples, 50.0),
        p99: percentile(samples, 99.0),
        max: samples.last().copied().unwrap_or_default(),
    }
}

/// The arithmetic mean of the samples (zero when there are none).
pub fn mean(samples: &[Duration]) -> Duration {
    let total: Duration = samples.iter().sum();
    total / u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX)
}

/// A duration in milliseconds with sensible precision for a table.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.3} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_samples_and_of_none() {
        let ms = Duration::from_millis;
        assert_eq!(mean(&[ms(1), ms(2), ms(6)]), ms(3));
        assert_eq!(mean(&[]), Duration::ZERO);
    }

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let mut s = millis(&(1..=100).rev().collect::<Vec<_>>());
        let sum = summarize(&mut s);
        assert_eq!(sum.count, 100);
        assert_eq!(sum.p50, Duration::from_millis(50));
        assert_eq!(sum.p99, Duration::from_millis(99));
        assert_eq!(sum.max, Duration::from_millis(100));
    }

    #[test]
    fn p99_of_few_samples_is_the_largest() {
        let mut s = millis(&[3, 1, 2]);
        let sum = summarize(&mut s);
        assert_eq!(sum.p50, Duration::from_millis(2));
        assert_eq!(sum.p99, Duration::from_millis(3));
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let s = millis(&[7]);
        assert_eq!(percentile(&s, 1.0), Duration::from_millis(7));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(7));
    }

    #[test]
    fn no_samples_summarize_to_zero() {
        let sum = summarize(&mut []);
        assert_eq!(sum.count, 0);
        assert_eq!(sum.p99, Duration::ZERO);
    }
}
