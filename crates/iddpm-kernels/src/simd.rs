//! Compiling a loop for the widest SIMD the CPU has, chosen at run time.

/// Defines `$vis fn $name(args) [-> ret]`, which runs `$generic(args)` compiled for AVX-512,
/// or for AVX2+FMA, or for the baseline, whichever is the widest this CPU supports. `$generic`
/// must be `#[inline(always)]` so that its loops are compiled inside each variant.
///
/// Rust never contracts `a·b + c` into an FMA on its own, so the three variants do the same
/// f32 operations and results do not depend on the machine.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis $name:ident => $generic:ident($($arg:ident: $ty:ty),*)) => {
        $crate::simd::multiversion!($(#[$doc])* $vis $name => $generic($($arg: $ty),*) -> ());
    };
    ($(#[$doc:meta])* $vis:vis $name:ident => $generic:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide512($($arg: $ty),*) -> $ret { $generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn wide256($($arg: $ty),*) -> $ret { $generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { wide512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { wide256($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

pub(crate) use multiversion;
