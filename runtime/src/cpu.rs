//! CPU features that choose between a model object's variants at load time.
//!
//! Every variant computes bit-identical results; they differ in the instructions of the int8
//! matmuls. aarch64 objects export `NAME_forward` (baseline) and `NAME_forward_dotprod`
//! (FEAT_DotProd: `sdot`); x86_64 objects export `NAME_forward` (AVX2+FMA),
//! `NAME_forward_avxvnni` (AVX-VNNI: VEX `vpdpbusd`) and `NAME_forward_avx512vnni`
//! (AVX512-VNNI with AVX512VL: EVEX `vpdpbusd`). An app links them all and hands
//! [`crate::session::Model`] the first of [`variants`] the object has, else `NAME_forward`.

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

/// Whether this CPU (and OS) runs AVX-VNNI (`vpdpbusd` with a VEX encoding). Always false off
/// x86_64.
pub fn has_avxvnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU (and OS) runs AVX512-VNNI on xmm registers (AVX512F, AVX512VL,
/// AVX512_VNNI). Always false off x86_64.
pub fn has_avx512vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The CPU-feature variants this CPU runs, best first (entry points `NAME_forward_<variant>`;
/// the baseline `NAME_forward` is not listed). `EDGEC_VARIANT=baseline` in the environment
/// empties the list, as the C driver does.
pub fn variants() -> Vec<&'static str> {
    if std::env::var("EDGEC_VARIANT").is_ok_and(|v| v == "baseline") {
        return Vec::new();
    }
    [("dotprod", has_dotprod()), ("avxvnni", has_avxvnni()), ("avx512vnni", has_avx512vnni())]
        .into_iter()
        .filter_map(|(name, yes)| yes.then_some(name))
        .collect()
}
