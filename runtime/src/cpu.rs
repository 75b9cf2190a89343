//! CPU features that choose between a model object's variants at load time.
//!
//! aarch64 objects export `NAME_forward` (baseline) and `NAME_forward_dotprod` (FEAT_DotProd:
//! `sdot` in the int8 matmuls), with bit-identical results. An app links both and hands
//! [`crate::session::Model`] the one [`has_dotprod`] allows.

/// Whether this CPU has FEAT_DotProd (`sdot`/`udot`). Always false off aarch64.
pub fn has_dotprod() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}
