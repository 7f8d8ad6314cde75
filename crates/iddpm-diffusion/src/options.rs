//! What the network predicts, how the variance is chosen, and which loss trains it.

use std::fmt;
use std::str::FromStr;

use crate::error::DiffusionError;

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The reference's spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = DiffusionError;
            fn from_str(s: &str) -> Result<Self, DiffusionError> {
                match s.to_ascii_uppercase().as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(DiffusionError::UnknownOption {
                        kind: $kind,
                        value: s.to_string(),
                        allowed: concat!($($text, " "),+),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// Which quantity the network's (first three) output channels predict.
    ModelMeanType, "model mean type", {
        /// x_{t−1} directly.
        PreviousX => "PREVIOUS_X",
        /// x_0.
        StartX => "START_X",
        /// The noise ε (the usual choice).
        Epsilon => "EPSILON",
    }
);

named_enum!(
    /// How the reverse-process variance is obtained.
    ModelVarType, "model variance type", {
        /// The network outputs log Σ directly.
        Learned => "LEARNED",
        /// Fixed to the posterior variance β̃_t.
        FixedSmall => "FIXED_SMALL",
        /// Fixed to β_t (β̃_1 at t = 0).
        FixedLarge => "FIXED_LARGE",
        /// The network outputs v ∈ [−1, 1] interpolating log β̃_t and log β_t (Improved DDPM).
        LearnedRange => "LEARNED_RANGE",
    }
);

impl ModelVarType {
    /// Whether the network outputs extra channels for the variance.
    pub fn is_learned(self) -> bool {
        matches!(self, Self::Learned | Self::LearnedRange)
    }
}

named_enum!(
    /// The training objective.
    LossType, "loss type", {
        /// Simple MSE (plus the VLB term when the variance is learned: L_hybrid).
        Mse => "MSE",
        /// MSE with the VLB term scaled by T/1000, as the paper's λ.
        RescaledMse => "RESCALED_MSE",
        /// The variational bound L_vlb.
        Kl => "KL",
        /// L_vlb multiplied by T, to estimate the full bound.
        RescaledKl => "RESCALED_KL",
    }
);

impl LossType {
    /// Whether this is one of the variational-bound losses.
    pub fn is_vb(self) -> bool {
        matches!(self, Self::Kl | Self::RescaledKl)
    }
}
