//! What a network must be given besides x_t and t: class labels exactly when it is
//! class-conditional, a low-resolution image exactly when it is a super-resolution model (the
//! reference asserts both in its forward pass).

use thiserror::Error;

use crate::unet::UNetModel;

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
    /// The images' channels do not add up to the network's input channels.
    #[error(
        "the model takes {expected} input channels, but the images have {image} channels{}",
        low_res.map(|c| format!(" and the low-resolution images {c}")).unwrap_or_default()
    )]
    ChannelMismatch {
        /// The network's input channels.
        expected: usize,
        /// Channels of x_t.
        image: usize,
        /// Channels of the low-resolution image, when one is given.
        low_res: Option<usize>,
    },
}

impl UNetModel {
    /// Checks that `labels` and a low-resolution input suit this network, so that callers turn
    /// a mismatch into an error before [`UNetModel::forward`] would panic. The channels of x_t
    /// (`image_channels`) and of the low-resolution image (`low_res_channels`, when one is
    /// given) must add up to the network's input channels: a super-resolution network takes
    /// twice the image channels, whatever their count.
    pub fn check_conditioning(
        &self,
        labels: Option<&[i64]>,
        image_channels: usize,
        low_res_channels: Option<usize>,
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
        let expected = self.in_channels();
        match low_res_channels {
            _ if image_channels + low_res_channels.unwrap_or(0) == expected => Ok(()),
            None if 2 * image_channels == expected => Err(ConditioningError::MissingLowRes),
            Some(_) if image_channels == expected => Err(ConditioningError::UnexpectedLowRes),
            low_res => Err(ConditioningError::ChannelMismatch {
                expected,
                image: image_channels,
                low_res,
            }),
        }
    }
}
