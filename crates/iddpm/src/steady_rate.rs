//! The rate of work once warm: a GPU compiles and tunes its kernels during the first steps,
//! so a rate over the whole run understates what the device sustains.

use std::time::Instant;

/// Counts units of work (steps, images) after the first `warm_up` of them.
#[derive(Debug, Clone)]
pub struct SteadyRate {
    warm_up: u64,
    start: Option<(u64, Instant)>,
    last: Option<(u64, Instant)>,
}

impl SteadyRate {
    /// A rate that starts counting once `warm_up` units are done.
    pub fn new(warm_up: u64) -> Self {
        Self {
            warm_up,
            start: None,
            last: None,
        }
    }

    /// Reports that `done` units are finished now.
    pub fn observe(&mut self, done: u64) {
        self.observe_at(done, Instant::now());
    }

    fn observe_at(&mut self, done: u64, now: Instant) {
        if self.start.is_none() {
            if done >= self.warm_up {
                self.start = Some((done, now));
            }
        } else {
            self.last = Some((done, now));
        }
    }

    /// Units per second since the warm-up ended; `None` until two observations follow it.
    pub fn per_second(&self) -> Option<f64> {
        let ((n0, t0), (n1, t1)) = (self.start?, self.last?);
        let secs = t1.duration_since(t0).as_secs_f64();
        (n1 > n0 && secs > 0.0).then(|| (n1 - n0) as f64 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_warm_up_is_left_out() {
        let t = Instant::now();
        let mut r = SteadyRate::new(2);
        r.observe_at(1, t);
        r.observe_at(2, t + Duration::from_secs(10));
        assert_eq!(r.per_second(), None);
        r.observe_at(3, t + Duration::from_secs(11));
        r.observe_at(6, t + Duration::from_secs(12));
        assert_eq!(r.per_second(), Some(2.0));
    }
}
