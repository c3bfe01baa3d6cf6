//! A closed-loop load driver: N workers, each issuing its next operation as
//! soon as the previous one answered, until a shared count is reached.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

pub struct Outcome {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub errors: usize,
    /// The first error seen, to say why operations failed.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Runs `total` operations over `workers` concurrent workers; `make(w)` builds
/// worker `w`'s operation, called with a global operation index.
pub async fn closed_loop<M, F, Fut>(workers: usize, total: usize, make: M) -> Result<Outcome>
where
    M: Fn(usize) -> F,
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let op = make(w);
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut out = Outcome {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(total),
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        let (lat, errors, first) = t.await?;
        out.latencies.extend(lat);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first;
        }
    }
    out.elapsed = start.elapsed();
    Ok(out)
}
