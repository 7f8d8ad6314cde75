//! The training loop itself, as the reference's `TrainLoop.run_loop`: steps until the run is
//! finished or interrupted, dumping logs and saving checkpoints at their intervals and at the
//! end. The CLI is a thin layer over it, so a library user trains with exactly the same loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{StepReport, Trainer};
use crate::error::{Result, TrainError};

/// What the loop reports as it goes (every process reports the same events).
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// A step finished.
    Step(&'a StepReport),
    /// A checkpoint was written (by the main process) at `step`.
    Saved {
        /// The step saved.
        step: u64,
        /// The model checkpoint.
        path: PathBuf,
    },
    /// Some process saw the stop flag: the loop saves one checkpoint and returns.
    Interrupted {
        /// The last step completed.
        step: u64,
    },
}

/// What a call of [`Trainer::run_loop`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSummary {
    /// The step the loop started from (after a resume, the resumed step).
    pub first_step: u64,
    /// The step it ended at.
    pub last_step: u64,
    /// Wall-clock seconds, checkpoints and previews included.
    pub seconds: f64,
    /// Whether it stopped because of the stop flag.
    pub interrupted: bool,
}

impl Trainer<'_> {
    /// Trains until [`finished`](Self::finished) or until `stop` is set on any process:
    /// dumps the logs every `log_interval` steps and saves every `save_interval` steps, then
    /// dumps the last logs and saves the last step unless it was just saved. `on_event` sees
    /// each step, each save and an interruption; errors name the step they happened at.
    pub fn run_loop(
        &mut self,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(TrainEvent<'_>),
    ) -> Result<LoopSummary> {
        let started = Instant::now();
        let first_step = self.step;
        let mut last_saved = None;
        let mut interrupted = false;
        while !self.finished() {
            // Every process stops at the same step when any of them is interrupted.
            if self.group.any(stop.load(Ordering::SeqCst))? {
                interrupted = true;
                on_event(TrainEvent::Interrupted { step: self.step });
                break;
            }
            let report = self.run_step().map_err(|e| at_step(self.step + 1, e))?;
            on_event(TrainEvent::Step(&report));
            if report.step.is_multiple_of(self.opts.log_interval) {
                self.dump_logs()?;
            }
            if report.step.is_multiple_of(self.opts.save_interval) {
                self.save_and_report(on_event)?;
                last_saved = Some(report.step);
            }
        }
        // The last steps' logs, unless the last log interval just ended.
        self.dump_logs()?;
        if last_saved != Some(self.step) && self.step > first_step {
            self.save_and_report(on_event)?;
        }
        Ok(LoopSummary {
            first_step,
            last_step: self.step,
            seconds: started.elapsed().as_secs_f64(),
            interrupted,
        })
    }

    fn save_and_report(&mut self, on_event: &mut dyn FnMut(TrainEvent<'_>)) -> Result<()> {
        let step = self.step;
        let path = self.save().map_err(|e| {
            TrainError::Other(format!(
                "saving the checkpoint of step {step} in {}: {e}",
                self.opts.log_dir.display()
            ))
        })?;
        on_event(TrainEvent::Saved { step, path });
        Ok(())
    }
}

/// `e`, saying which step it happened at.
fn at_step(step: u64, e: TrainError) -> TrainError {
    TrainError::AtStep {
        step,
        source: Box::new(e),
    }
}
