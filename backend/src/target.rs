//! The targets edgec emits code for: parsing a target string (with an Android API level or an
//! Apple minimum OS version), the object format, symbol prefix and archive format of each, and
//! the CPU-feature variants each gets.

use crate::error::BackendError;
use std::fmt;
use target_lexicon::{Architecture, BinaryFormat, DeploymentTarget, Environment, OperatingSystem, Triple, Vendor};

/// The target families edgec supports, in the order `edgec targets` lists them.
pub const SUPPORTED_TRIPLES: &[&str] = &[
    "aarch64-linux-android",
    "x86_64-linux-android",
    "aarch64-apple-ios",
    "aarch64-apple-ios-sim",
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
    "aarch64-unknown-linux-gnu",
    "x86_64-unknown-linux-gnu",
];

/// The lowest Android API level with 64-bit ABIs; the default when the triple names none.
pub const DEFAULT_ANDROID_API: u32 = 21;

/// Which operating system (and so which object format, platform record and linker) a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// GNU/Linux: ELF.
    Linux,
    /// Android at an API level: ELF (the level is not recorded in a relocatable object; it is
    /// in the generated header and decides nothing in the code today).
    Android { api: u32 },
    /// macOS: Mach-O with LC_BUILD_VERSION platform MACOS.
    MacOs,
    /// iOS devices: Mach-O, platform IOS.
    Ios,
    /// The iOS simulator on Apple silicon: Mach-O, platform IOSSIMULATOR.
    IosSimulator,
}

/// An object file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFormat {
    Elf,
    MachO,
}

/// A validated target: the triple Cranelift sees (Apple triples always carry a minimum OS
/// version, so the object's LC_BUILD_VERSION is meaningful) plus what the triple cannot say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub triple: Triple,
    pub platform: Platform,
    /// Apple targets: the minimum OS version (major, minor, patch).
    pub min_os: Option<(u16, u8, u8)>,
}

/// A CPU-feature variant of the generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    pub features: &'static str,
    /// False for variants that are planned but not emitted yet.
    pub available: bool,
    /// The Cranelift ISA flags its int8 matmuls are compiled with (none for the first variant,
    /// which is `NAME_forward`; each other one is `NAME_forward_<name>`).
    pub flags: &'static [&'static str],
}

const X86_VARIANTS: &[Variant] = &[
    Variant {
        name: "x86-64-v3",
        features: "sse4.2, popcnt, avx, avx2, fma (required by the f32 kernels); also `baseline`",
        available: true,
        flags: &[],
    },
    Variant {
        name: "avxvnni",
        features: "+avxvnni (VEX vpdpbusd in the int8 matmuls; entry point NAME_forward_avxvnni)",
        available: true,
        flags: &["has_avx_vnni"],
    },
    Variant {
        name: "avx512vnni",
        features: "+avx512f, avx512vl, avx512vnni (EVEX vpdpbusd on xmm; entry point NAME_forward_avx512vnni)",
        available: true,
        flags: &["has_avx512f", "has_avx512vl", "has_avx512vnni"],
    },
];
const ARM_VARIANTS: &[Variant] = &[
    Variant { name: "baseline", features: "armv8-a with NEON (every 64-bit Arm phone)", available: true, flags: &[] },
    Variant {
        name: "dotprod",
        features: "+dotprod (sdot in the int8 matmuls; entry point NAME_forward_dotprod)",
        available: true,
        flags: &["has_dotprod"],
    },
    Variant {
        name: "i8mm",
        features: "+i8mm (usdot/smmla); arrives with the int8 kernels, not emitted yet",
        available: false,
        flags: &[],
    },
];

fn unsupported(s: &str) -> BackendError {
    BackendError::UnsupportedTarget { triple: s.to_string(), supported: SUPPORTED_TRIPLES.join(", ") }
}

fn bad(s: &str, why: impl fmt::Display) -> BackendError {
    BackendError::BadTarget { triple: s.to_string(), message: why.to_string() }
}

/// Default minimum OS versions: the same as rustc's for these targets, so a Rust app built
/// without `*_DEPLOYMENT_TARGET` links without "built for newer version" warnings.
fn default_min_os(platform: Platform, arch: Architecture) -> (u16, u8, u8) {
    match (platform, arch) {
        (Platform::MacOs, Architecture::X86_64) => (10, 12, 0),
        (Platform::MacOs, _) => (11, 0, 0),
        (Platform::IosSimulator, _) => (14, 0, 0),
        _ => (10, 0, 0),
    }
}

impl Target {
    /// Parses a target string: a triple from [`SUPPORTED_TRIPLES`], with an optional API level
    /// on Android (`aarch64-linux-android24`) or minimum OS version on Apple
    /// (`aarch64-apple-ios15.0`, `aarch64-apple-ios15.0-sim`, `aarch64-apple-macosx11.0`).
    pub fn parse(s: &str) -> Result<Target, BackendError> {
        // target-lexicon does not know Android API levels: split the digits off.
        let (base, api) = match s.rfind("-android") {
            Some(i) if s[i + 8..].bytes().all(|b| b.is_ascii_digit()) && s.len() > i + 8 => {
                let api: u32 = s[i + 8..].parse().map_err(|_| bad(s, "the Android API level is too large"))?;
                (&s[..i + 8], Some(api))
            }
            _ => (s, None),
        };
        let triple: Triple = base.parse().map_err(|e| bad(s, format_args!("not a target triple ({e})")))?;
        let mut t = Target::from_triple_named(&triple, s)?;
        if let Some(api) = api {
            if api < DEFAULT_ANDROID_API {
                return Err(bad(
                    s,
                    format_args!("Android API level {api} has no 64-bit ABI; use {DEFAULT_ANDROID_API} or later"),
                ));
            }
            t.platform = Platform::Android { api };
        }
        Ok(t)
    }

    /// Validates a parsed triple, filling in the default minimum OS version or API level.
    pub fn from_triple(triple: &Triple) -> Result<Target, BackendError> {
        Target::from_triple_named(triple, &triple.to_string())
    }

    fn from_triple_named(triple: &Triple, s: &str) -> Result<Target, BackendError> {
        let arch = match triple.architecture {
            Architecture::X86_64 => Architecture::X86_64,
            Architecture::Aarch64(_) => triple.architecture,
            _ => return Err(unsupported(s)),
        };
        let aarch64 = matches!(arch, Architecture::Aarch64(_));
        let apple = triple.vendor == Vendor::Apple;
        let (platform, version) = match (triple.operating_system, triple.environment) {
            (OperatingSystem::Linux, Environment::Gnu) if !apple => (Platform::Linux, None),
            (OperatingSystem::Linux, Environment::Android) if !apple => {
                (Platform::Android { api: DEFAULT_ANDROID_API }, None)
            }
            (OperatingSystem::Darwin(Some(_)), _) if apple => {
                return Err(bad(
                    s,
                    "a darwin version is a kernel version; give a minimum macOS version as aarch64-apple-macosx11.0",
                ));
            }
            (OperatingSystem::Darwin(None), Environment::Unknown) if apple => (Platform::MacOs, None),
            (OperatingSystem::MacOSX(v), Environment::Unknown) if apple => (Platform::MacOs, v),
            (OperatingSystem::IOS(v), Environment::Unknown) if apple && aarch64 => (Platform::Ios, v),
            (OperatingSystem::IOS(v), Environment::Sim) if apple && aarch64 => (Platform::IosSimulator, v),
            _ => return Err(unsupported(s)),
        };
        let min_os = match platform {
            Platform::MacOs | Platform::Ios | Platform::IosSimulator => {
                Some(version.map_or(default_min_os(platform, arch), |v| (v.major, v.minor, v.patch)))
            }
            _ => None,
        };
        // The triple Cranelift sees: Apple ones with their version, so LC_BUILD_VERSION has it.
        let mut norm = triple.clone();
        if let Some((major, minor, patch)) = min_os {
            let v = Some(DeploymentTarget { major, minor, patch });
            norm.operating_system = match platform {
                Platform::MacOs => OperatingSystem::MacOSX(v),
                _ => OperatingSystem::IOS(v),
            };
        }
        debug_assert_eq!(norm.binary_format, if min_os.is_some() { BinaryFormat::Macho } else { BinaryFormat::Elf });
        Ok(Target { triple: norm, platform, min_os })
    }

    pub fn is_aarch64(&self) -> bool {
        matches!(self.triple.architecture, Architecture::Aarch64(_))
    }

    pub fn format(&self) -> ObjectFormat {
        if self.min_os.is_some() { ObjectFormat::MachO } else { ObjectFormat::Elf }
    }

    /// What a C symbol gets in front of it in the object: `_` on Mach-O.
    pub fn symbol_prefix(&self) -> &'static str {
        match self.format() {
            ObjectFormat::MachO => "_",
            ObjectFormat::Elf => "",
        }
    }

    /// The supported family (an entry of [`SUPPORTED_TRIPLES`]), as Cargo names the target.
    pub fn family(&self) -> &'static str {
        let a = self.is_aarch64();
        match (self.platform, a) {
            (Platform::Android { .. }, true) => "aarch64-linux-android",
            (Platform::Android { .. }, false) => "x86_64-linux-android",
            (Platform::Ios, _) => "aarch64-apple-ios",
            (Platform::IosSimulator, _) => "aarch64-apple-ios-sim",
            (Platform::MacOs, true) => "aarch64-apple-darwin",
            (Platform::MacOs, false) => "x86_64-apple-darwin",
            (Platform::Linux, true) => "aarch64-unknown-linux-gnu",
            (Platform::Linux, false) => "x86_64-unknown-linux-gnu",
        }
    }

    /// The CPU-feature variants of this target's code.
    pub fn variants(&self) -> &'static [Variant] {
        if self.is_aarch64() { ARM_VARIANTS } else { X86_VARIANTS }
    }

    /// The platform version as text: `API 24`, `iOS 15.0`, or empty on Linux.
    pub fn platform_version(&self) -> String {
        let v = |(ma, mi, p): (u16, u8, u8)| if p == 0 { format!("{ma}.{mi}") } else { format!("{ma}.{mi}.{p}") };
        match (self.platform, self.min_os) {
            (Platform::Android { api }, _) => format!("Android API {api}"),
            (Platform::MacOs, Some(m)) => format!("macOS {}", v(m)),
            (Platform::Ios, Some(m)) => format!("iOS {}", v(m)),
            (Platform::IosSimulator, Some(m)) => format!("iOS simulator {}", v(m)),
            _ => String::new(),
        }
    }
}

/// The canonical spelling, with the resolved API level or minimum OS version:
/// `aarch64-linux-android21`, `aarch64-apple-ios10.0`, `aarch64-apple-ios14.0-sim`,
/// `aarch64-apple-macosx11.0`, `x86_64-unknown-linux-gnu`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arch = if self.is_aarch64() { "aarch64" } else { "x86_64" };
        let ver = self.min_os.map(|(ma, mi, p)| if p == 0 { format!("{ma}.{mi}") } else { format!("{ma}.{mi}.{p}") });
        match (self.platform, ver) {
            (Platform::Android { api }, _) => write!(f, "{arch}-linux-android{api}"),
            (Platform::MacOs, Some(v)) => write!(f, "{arch}-apple-macosx{v}"),
            (Platform::Ios, Some(v)) => write!(f, "{arch}-apple-ios{v}"),
            (Platform::IosSimulator, Some(v)) => write!(f, "{arch}-apple-ios{v}-sim"),
            _ => f.write_str(self.family()),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Target, BackendError> {
        Target::parse(s)
    }
}

/// The `edgec targets` table: every supported target with its object format, platform record,
/// default platform version and CPU-feature variants.
pub fn listing() -> String {
    let mut s = String::from("Supported targets (object format, platform, default minimum, CPU-feature variants):\n\n");
    for family in SUPPORTED_TRIPLES {
        let t = Target::parse(family).expect("every listed target parses");
        let format = match t.format() {
            ObjectFormat::Elf => "ELF",
            ObjectFormat::MachO => "Mach-O",
        };
        let how = match t.platform {
            Platform::Android { .. } => "API level as a suffix, e.g. -android24",
            Platform::Ios | Platform::IosSimulator => "minimum iOS as e.g. aarch64-apple-ios15.0[-sim]",
            Platform::MacOs => "minimum macOS as e.g. aarch64-apple-macosx11.0",
            Platform::Linux => "",
        };
        let symbols = if t.symbol_prefix().is_empty() { "symbols as named" } else { "symbols prefixed `_`" };
        s.push_str(&format!("{family}\n  {format}, {symbols}"));
        let v = t.platform_version();
        if !v.is_empty() {
            s.push_str(&format!(", default {v} ({how})"));
        }
        s.push('\n');
        for var in t.variants() {
            let state = if var.available { "emitted" } else { "planned" };
            s.push_str(&format!("  variant {:<10} {state}: {}\n", var.name, var.features));
        }
    }
    s.push_str(
        "\nEvery variant computes bit-identical results; the app picks an entry point at load time\n\
         from the CPU's features. x86_64 objects export NAME_forward (AVX2+FMA),\n\
         NAME_forward_avxvnni and NAME_forward_avx512vnni (edgec_runtime::cpu, or cpuid as the C\n\
         driver does). aarch64 objects export NAME_forward (baseline) and NAME_forward_dotprod\n\
         (the C driver reads HWCAP_ASIMDDP or FEAT_DotProd). i8mm is not emitted yet.\n",
    );
    s
}
