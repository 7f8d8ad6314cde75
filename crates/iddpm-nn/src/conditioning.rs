//! What a network must be given besides x_t and t: class labels exactly when it is
//! class-conditional, a low-resolution image exactly when it is a super-resolution model (the
//! reference asserts both in its forward pass).

use thiserror::Error;

use crate::unet::UNetModel;

/// Channels of the images iddpm models (RGB).
const IMAGE_CHANNELS: usize = 3;

/// Conditioning that does not suit the network.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConditioningError {
    /// A class-conditional network was given no labels.
    #[error(
        "the model is class-conditional ({classes} classes) but no class labels were given; \
         label the data (e.g. class-named image files) or use an unconditional model"
    )]
    MissingLabels {
        /// The network's number of classes.
        classes: usize,
    },
    /// An unconditional network was given labels.
    #[error("class labels were given, but the model is not class-conditional")]
    UnexpectedLabels,
    /// A label has no row in the label embedding.
    #[error("class label {label} is outside the model's classes 0..{classes}")]
    LabelOutOfRange {
        /// The label.
        label: i64,
        /// The network's number of classes.
        classes: usize,
    },
    /// A super-resolution network was given no low-resolution image.
    #[error("the model is a super-resolution model but no low-resolution images were given")]
    MissingLowRes,
    /// A plain network was given a low-resolution image.
    #[error("low-resolution images were given, but the model is not a super-resolution model")]
    UnexpectedLowRes,
}

impl UNetModel {
    /// Whether the network takes a low-resolution image beside x_t (twice the image channels).
    pub fn is_super_res(&self) -> bool {
        self.in_channels() == 2 * IMAGE_CHANNELS
    }

    /// Checks that `labels` and the presence of a low-resolution input suit this network, so
    /// that callers turn a mismatch into an error before [`UNetModel::forward`] would panic.
    pub fn check_conditioning(
        &self,
        labels: Option<&[i64]>,
        has_low_res: bool,
    ) -> Result<(), ConditioningError> {
        match (labels, self.num_classes()) {
            (None, Some(classes)) => return Err(ConditioningError::MissingLabels { classes }),
            (Some(_), None) => return Err(ConditioningError::UnexpectedLabels),
            (Some(labels), Some(classes)) => {
                if let Some(&label) = labels.iter().find(|&&l| l < 0 || l >= classes as i64) {
                    return Err(ConditioningError::LabelOutOfRange { label, classes });
                }
            }
            (None, None) => {}
        }
        match (has_low_res, self.is_super_res()) {
            (false, true) => Err(ConditioningError::MissingLowRes),
            (true, false) => Err(ConditioningError::UnexpectedLowRes),
            _ => Ok(()),
        }
    }
}
