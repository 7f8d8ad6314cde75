//! Sample-quality metrics on Inception features: the Fréchet distance (FID, sFID), k-NN
//! precision/recall and the Inception Score, numerically as the standard evaluators
//! (pytorch-fid, guided-diffusion).

#![warn(missing_docs)]

pub mod bootstrap;
pub mod fid_inception;
pub mod frechet;
pub mod inception_score;
pub mod manifold;
pub mod nvidia_weights;
pub mod resize;
pub mod stats;

pub use bootstrap::{ResampledFid, standard_deviation};
pub use frechet::{fid, frechet_distance, trace_sqrt_product};
pub use inception_score::inception_score;
pub use manifold::{evaluate, manifold_radii, precision_recall};
pub use stats::FeatureStats;
