//! Cleaning up after tract's matrix kernels.
//!
//! tract's hand-written x86-64 kernels (AVX2/FMA and AVX-512) return without `vzeroupper`, so the thread that ran
//! them keeps the upper halves of its vector registers marked as in use. From then on, every instruction of the
//! baseline SSE encoding that the rest of the program is compiled to (Rust targets x86-64 without AVX by default)
//! pays for merging with those upper halves. The state is per thread and survives context switches, so one
//! inference slows everything that thread runs afterwards: measured on this project's development machine (AMD EPYC),
//! the defences' nearest-neighbour search took 10.2 µs instead of 5.5 µs once tract had run on the same thread.
//! [`clear`] zeroes the upper halves after each run, as a compiler does at the edge of AVX code.

/// Marks the upper halves of the vector registers as unused (`vzeroupper`), when the CPU has AVX; does nothing
/// elsewhere. The lower 128 bits, which SSE code uses, are kept.
pub fn clear() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        zero_upper_checked();
    }
}

/// `vzeroupper`, once the caller has checked that the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[allow(
    unsafe_code,
    reason = "the only unsafe of the crate: calling an AVX instruction needs unsafe until the caller is compiled for AVX"
)]
fn zero_upper_checked() {
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    unsafe fn zero_upper() {
        std::arch::x86_64::_mm256_zeroupper();
    }
    // SAFETY: `clear` calls this only after `is_x86_feature_detected!("avx")`, the one requirement of `zero_upper`.
    unsafe { zero_upper() }
}
