//! Every supported target: the object's format, architecture, platform and minimum OS, exported
//! symbols (prefixed, `_` on Mach-O), no undefined symbols, only PIC relocations the platform's
//! linker accepts; a real linker (rust-lld as ld.lld / ld64.lld) links it into a shared library
//! with text relocations forbidden; static libraries with a symbol table those linkers use;
//! embedded weights; and byte-identical output when compiled twice.

mod common;
use common::*;
use edgec_backend::archive::static_library;
use edgec_backend::{
    CompileOptions, ObjectFormat, Platform, SUPPORTED_TRIPLES, Target, c_header_with, emit_object_with, model_info,
};
use object::read::archive::ArchiveFile;
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, SectionKind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The targets of issue 7 as users spell them, with what each must record.
const CASES: &[(&str, &str, Option<(u32, u32)>)] = &[
    // (target, family, Mach-O (platform, minos))
    ("aarch64-linux-android24", "aarch64-linux-android", None),
    ("x86_64-linux-android", "x86_64-linux-android", None),
    ("aarch64-apple-ios15.0", "aarch64-apple-ios", Some((object::macho::PLATFORM_IOS, 15 << 16))),
    ("aarch64-apple-ios-sim", "aarch64-apple-ios-sim", Some((object::macho::PLATFORM_IOSSIMULATOR, 14 << 16))),
    ("aarch64-apple-darwin", "aarch64-apple-darwin", Some((object::macho::PLATFORM_MACOS, 11 << 16))),
    ("x86_64-apple-darwin", "x86_64-apple-darwin", Some((object::macho::PLATFORM_MACOS, (10 << 16) | (12 << 8)))),
    ("aarch64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", None),
    ("x86_64-unknown-linux-gnu", "x86_64-unknown-linux-gnu", None),
];

struct Built {
    target: Target,
    obj: Vec<u8>,
    header: String,
    weights_size: u64,
}

/// Compiles a small Llama graph for `target` with symbol prefix `name`, optionally embedding
/// the weights image.
fn build(target: &str, name: &str, embed: bool) -> Built {
    let target = Target::parse(target).unwrap();
    let g = llama_graph(LlamaCfg::default(), 3);
    let plan = test_plan(&g);
    let dir = tempfile::tempdir().unwrap();
    let (layout, hash, path) = weights_file(&g, dir.path());
    let info = model_info(&g, &plan, &layout, hash).unwrap();
    let opts = CompileOptions::new(target.triple.clone(), name.to_string());
    let image = std::fs::read(path).unwrap();
    let obj = emit_object_with(&g, &plan, &layout, &info, &opts, embed.then_some(&image[..])).unwrap();
    let header = c_header_with(&g, &info, &opts, embed);
    Built { target, obj, header, weights_size: info.weights_size }
}

fn rust_lld() -> PathBuf {
    let out = Command::new("rustc").args(["--print", "sysroot"]).output().expect("rustc runs");
    let sysroot = String::from_utf8(out.stdout).unwrap();
    let host = target_lexicon::Triple::host().to_string();
    let p = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/rust-lld");
    assert!(p.is_file(), "rust-lld not found at {} (it ships with rustup's rustc)", p.display());
    p
}

/// Links `inputs` into a shared library with rust-lld in the target's linker flavor, text
/// relocations forbidden; `undefined` forces members out of an archive through its index.
fn lld_link(t: &Target, inputs: &[&Path], undefined: &[String], out: &Path) -> Result<(), String> {
    let mut c = Command::new(rust_lld());
    match t.format() {
        ObjectFormat::Elf => {
            let emu = if t.is_aarch64() { "aarch64linux" } else { "elf_x86_64" };
            c.args(["-flavor", "gnu", "-m", emu, "-shared", "-z", "text", "-z", "defs", "--fatal-warnings"]);
            for u in undefined {
                c.args(["-u", u]);
            }
        }
        ObjectFormat::MachO => {
            let arch = if t.is_aarch64() { "arm64" } else { "x86_64" };
            let platform = match t.platform {
                Platform::MacOs => "macos",
                Platform::Ios => "ios",
                Platform::IosSimulator => "ios-simulator",
                _ => unreachable!(),
            };
            let (ma, mi, _) = t.min_os.unwrap();
            let v = format!("{ma}.{mi}");
            c.args(["-flavor", "darwin", "-arch", arch, "-dylib", "-platform_version", platform, &v, &v]);
            c.args(["-undefined", "error", "-fatal_warnings"]);
            for u in undefined {
                c.args(["-u", u]);
            }
        }
    }
    c.args(inputs).arg("-o").arg(out);
    let o = c.output().expect("rust-lld runs");
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

/// Relocations a linker resolves in position-independent code without text relocations.
fn pic_relocation_ok(t: &Target, section: &str, flags: RelocationFlags) -> bool {
    use object::{elf, macho};
    let data_section = section.contains("eh_frame") || section.contains("const") || section.contains("rodata");
    match flags {
        RelocationFlags::Elf { r_type } if t.is_aarch64() => {
            matches!(
                r_type,
                elf::R_AARCH64_CALL26
                    | elf::R_AARCH64_JUMP26
                    | elf::R_AARCH64_ADR_PREL_PG_HI21
                    | elf::R_AARCH64_ADD_ABS_LO12_NC
                    | elf::R_AARCH64_ADR_GOT_PAGE
                    | elf::R_AARCH64_LD64_GOT_LO12_NC
                    | elf::R_AARCH64_PREL32
                    | elf::R_AARCH64_PREL64
            ) || (data_section && r_type == elf::R_AARCH64_ABS64)
        }
        RelocationFlags::Elf { r_type } => {
            matches!(
                r_type,
                elf::R_X86_64_PC32
                    | elf::R_X86_64_PLT32
                    | elf::R_X86_64_GOTPCREL
                    | elf::R_X86_64_GOTPCRELX
                    | elf::R_X86_64_REX_GOTPCRELX
                    | elf::R_X86_64_PC64
            ) || (data_section && r_type == elf::R_X86_64_64)
        }
        RelocationFlags::MachO { r_type, .. } if t.is_aarch64() => {
            matches!(
                r_type,
                macho::ARM64_RELOC_BRANCH26
                    | macho::ARM64_RELOC_PAGE21
                    | macho::ARM64_RELOC_PAGEOFF12
                    | macho::ARM64_RELOC_GOT_LOAD_PAGE21
                    | macho::ARM64_RELOC_GOT_LOAD_PAGEOFF12
                    | macho::ARM64_RELOC_POINTER_TO_GOT
            ) || (data_section && matches!(r_type, macho::ARM64_RELOC_UNSIGNED | macho::ARM64_RELOC_SUBTRACTOR))
        }
        RelocationFlags::MachO { r_type, .. } => {
            matches!(
                r_type,
                macho::X86_64_RELOC_BRANCH
                    | macho::X86_64_RELOC_SIGNED
                    | macho::X86_64_RELOC_SIGNED_1
                    | macho::X86_64_RELOC_SIGNED_2
                    | macho::X86_64_RELOC_SIGNED_4
                    | macho::X86_64_RELOC_GOT_LOAD
                    | macho::X86_64_RELOC_GOT
            ) || (data_section && matches!(r_type, macho::X86_64_RELOC_UNSIGNED | macho::X86_64_RELOC_SUBTRACTOR))
        }
        _ => false,
    }
}

fn file_says(bytes: &[u8]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.o");
    std::fs::write(&p, bytes).unwrap();
    let o = Command::new("file").arg("-b").arg(&p).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn parse_and_display() {
    for &(spelling, family, _) in CASES {
        let t = Target::parse(spelling).unwrap();
        assert_eq!(t.family(), family, "{spelling}");
        assert_eq!(Target::parse(&t.to_string()).unwrap(), t, "{spelling} -> {t} round-trips");
    }
    assert_eq!(Target::parse("aarch64-linux-android24").unwrap().to_string(), "aarch64-linux-android24");
    assert_eq!(Target::parse("aarch64-linux-android").unwrap().platform, Platform::Android { api: 21 });
    assert_eq!(Target::parse("aarch64-apple-ios15.0").unwrap().to_string(), "aarch64-apple-ios15.0");
    assert_eq!(Target::parse("aarch64-apple-ios-sim").unwrap().to_string(), "aarch64-apple-ios14.0-sim");
    assert_eq!(Target::parse("aarch64-apple-ios16.4-sim").unwrap().min_os, Some((16, 4, 0)));
    assert_eq!(Target::parse("aarch64-apple-macosx13.1").unwrap().family(), "aarch64-apple-darwin");
    assert_eq!(SUPPORTED_TRIPLES.len(), 8);
    for s in SUPPORTED_TRIPLES {
        assert_eq!(Target::parse(s).unwrap().family(), *s);
    }
    for (bad, says) in [
        ("foo-bar-baz", "not a target triple"),
        ("riscv64gc-unknown-linux-gnu", "unsupported target"),
        ("x86_64-apple-ios", "unsupported target"),
        ("x86_64-pc-windows-msvc", "unsupported target"),
        ("aarch64-linux-android19", "API level 19"),
        ("aarch64-apple-darwin21.0", "kernel version"),
    ] {
        let e = Target::parse(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn every_target_object_is_well_formed() {
    for &(spelling, _, macho) in CASES {
        let b = build(spelling, "tiny_lm", false);
        let t = &b.target;
        let f = object::File::parse(&b.obj[..]).unwrap_or_else(|e| panic!("{spelling}: {e}"));
        let (want_format, want_arch) = (
            match t.format() {
                ObjectFormat::Elf => object::BinaryFormat::Elf,
                ObjectFormat::MachO => object::BinaryFormat::MachO,
            },
            if t.is_aarch64() { object::Architecture::Aarch64 } else { object::Architecture::X86_64 },
        );
        assert_eq!(f.format(), want_format, "{spelling}");
        assert_eq!(f.architecture(), want_arch, "{spelling}");
        assert_eq!(f.kind(), object::ObjectKind::Relocatable, "{spelling}");
        assert!(f.is_little_endian() && f.is_64(), "{spelling}");

        // Platform and minimum OS (LC_BUILD_VERSION) on Mach-O.
        if let Some((platform, minos)) = macho {
            let m = object::read::macho::MachOFile64::<object::Endianness>::parse(&b.obj[..]).unwrap();
            let bv = m.build_version().unwrap().unwrap_or_else(|| panic!("{spelling}: no LC_BUILD_VERSION"));
            let e = object::Endianness::Little;
            assert_eq!(bv.platform.get(e), platform, "{spelling}: platform");
            assert_eq!(bv.minos.get(e), minos, "{spelling}: minos");
        }
        if let Some(desc) = file_says(&b.obj) {
            let want = if t.format() == ObjectFormat::Elf { "ELF 64-bit LSB relocatable" } else { "Mach-O 64-bit" };
            assert!(desc.contains(want), "{spelling}: file says {desc}");
            let arch = match (t.format(), t.is_aarch64()) {
                (ObjectFormat::Elf, true) => "ARM aarch64",
                (ObjectFormat::Elf, false) => "x86-64",
                (ObjectFormat::MachO, true) => "arm64",
                (ObjectFormat::MachO, false) => "x86_64",
            };
            assert!(desc.contains(arch), "{spelling}: file says {desc}");
        }

        // Symbols: the two exports carry the prefix (and `_` on Mach-O); nothing is undefined;
        // every other global is also prefixed, so two models never clash.
        let p = t.symbol_prefix();
        let globals: Vec<String> =
            f.symbols().filter(|s| s.is_global() && !s.is_undefined()).map(|s| s.name().unwrap().to_string()).collect();
        for want in ["tiny_lm_forward", "tiny_lm_info"] {
            assert!(globals.contains(&format!("{p}{want}")), "{spelling}: {want} not exported: {globals:?}");
        }
        for g in &globals {
            assert!(g.starts_with(&format!("{p}tiny_lm_")), "{spelling}: global {g} lacks the prefix");
        }
        let undefined: Vec<_> = f
            .symbols()
            .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
            .map(|s| s.name().unwrap().to_string())
            .collect();
        assert!(undefined.is_empty(), "{spelling}: undefined symbols {undefined:?}");

        // PIC relocations only.
        let mut n = 0;
        for s in f.sections() {
            let name = s.name().unwrap_or("").to_string();
            for (_, r) in s.relocations() {
                n += 1;
                assert!(pic_relocation_ok(t, &name, r.flags()), "{spelling}: relocation {:?} in {name}", r.flags());
            }
        }
        assert!(n > 0, "{spelling}: expected relocations (kernel addresses)");

        // A real linker in the platform's flavor accepts it as PIC (no text relocations).
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join("tiny_lm.o");
        std::fs::write(&o, &b.obj).unwrap();
        lld_link(t, &[&o], &[], &dir.path().join("libtiny.so")).unwrap_or_else(|e| panic!("{spelling}: lld: {e}"));

        // The header names the target.
        assert!(b.header.contains(&format!("target       {}", t.family())), "{spelling}");
    }
}

#[test]
fn static_libraries_link_through_their_symbol_table() {
    for &(spelling, _, _) in CASES {
        let b = build(spelling, "lib_lm", false);
        let t = &b.target;
        let lib = static_library(t.format(), &[("lib_lm.o", &b.obj)]).unwrap();
        assert_eq!(lib, static_library(t.format(), &[("lib_lm.o", &b.obj)]).unwrap(), "{spelling}: deterministic");
        let a = ArchiveFile::parse(&lib[..]).unwrap();
        let want_kind = if t.format() == ObjectFormat::Elf {
            object::read::archive::ArchiveKind::Gnu
        } else {
            object::read::archive::ArchiveKind::Bsd
        };
        assert_eq!(a.kind(), want_kind, "{spelling}");
        let members: Vec<_> = a.members().map(|m| m.unwrap()).collect();
        assert_eq!(members.len(), 1);
        let m = &members[0];
        assert_eq!(m.name(), b"lib_lm.o");
        assert_eq!((m.date(), m.uid(), m.gid()), (Some(0), Some(0), Some(0)), "{spelling}: zeroed header");
        assert_eq!(m.data(&lib[..]).unwrap(), &b.obj[..]);
        let index: Vec<String> = a
            .symbols()
            .unwrap()
            .expect("a symbol table")
            .map(|s| String::from_utf8_lossy(s.unwrap().name()).into_owned())
            .collect();
        let p = t.symbol_prefix();
        for want in ["lib_lm_forward", "lib_lm_info"] {
            assert!(index.contains(&format!("{p}{want}")), "{spelling}: {want} not in the index {index:?}");
        }
        // The linker finds the member through the index alone.
        let dir = tempfile::tempdir().unwrap();
        let a_path = dir.path().join("liblib_lm.a");
        std::fs::write(&a_path, &lib).unwrap();
        let u = vec![format!("{p}lib_lm_forward")];
        lld_link(t, &[&a_path], &u, &dir.path().join("out.so")).unwrap_or_else(|e| panic!("{spelling}: {e}"));
    }
}

#[test]
fn gnu_tools_read_elf_archives() {
    let b = build("aarch64-unknown-linux-gnu", "gnu_lm", false);
    let lib = static_library(ObjectFormat::Elf, &[("gnu_lm.o", &b.obj)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("libgnu_lm.a");
    std::fs::write(&p, &lib).unwrap();
    let o = Command::new("nm").arg("-s").arg(&p).output().expect("nm runs");
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("gnu_lm_forward in gnu_lm.o"), "{s}");
    // The GNU linker pulls the member by its index and links a shared library.
    if have("aarch64-linux-gnu-gcc") {
        let so = dir.path().join("libgnu.so");
        let st = Command::new("aarch64-linux-gnu-gcc")
            .args(["-shared", "-nostdlib", "-Wl,-z,text", "-Wl,-u,gnu_lm_forward", "-o"])
            .arg(&so)
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        let o = Command::new("nm").arg("-D").arg(&so).output().unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).contains("gnu_lm_forward"));
    }
}

#[test]
fn embedded_weights_are_an_aligned_read_only_symbol() {
    for &(spelling, _, _) in CASES {
        let b = build(spelling, "emb", true);
        let t = &b.target;
        let f = object::File::parse(&b.obj[..]).unwrap();
        let name = format!("{}emb_weights", t.symbol_prefix());
        let sym =
            f.symbols().find(|s| s.name() == Ok(name.as_str())).unwrap_or_else(|| panic!("{spelling}: no {name}"));
        assert!(sym.is_global() && !sym.is_undefined());
        assert_eq!(sym.address() % 64, 0, "{spelling}: not 64-byte aligned");
        let sec = f.section_by_index(sym.section_index().unwrap()).unwrap();
        assert!(sec.align() >= 64, "{spelling}: section align {}", sec.align());
        assert_eq!(sec.kind(), SectionKind::ReadOnlyData, "{spelling}: section {:?}", sec.name());
        let off = (sym.address() - sec.address()) as usize;
        let data = sec.data().unwrap();
        assert_eq!(&data[off..off + 8], b"EDGECWT\0", "{spelling}");
        assert!(data.len() - off >= b.weights_size as usize);
        assert!(b.header.contains("extern const uint8_t emb_weights[];"));
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join("emb.o");
        std::fs::write(&o, &b.obj).unwrap();
        lld_link(t, &[&o], &[], &dir.path().join("libemb.so")).unwrap_or_else(|e| panic!("{spelling}: {e}"));
    }
}

#[test]
fn two_models_link_into_one_library() {
    for &(spelling, _, _) in CASES {
        let a = build(spelling, "first", true);
        let b = build(spelling, "second", true);
        let t = &a.target;
        let dir = tempfile::tempdir().unwrap();
        let (pa, pb) = (dir.path().join("first.o"), dir.path().join("second.o"));
        std::fs::write(&pa, &a.obj).unwrap();
        std::fs::write(&pb, &b.obj).unwrap();
        lld_link(t, &[&pa, &pb], &[], &dir.path().join("both.so")).unwrap_or_else(|e| panic!("{spelling}: {e}"));
    }
}

#[test]
fn same_inputs_same_bytes_on_every_target() {
    for &(spelling, _, _) in CASES {
        for embed in [false, true] {
            let a = build(spelling, "rep", embed);
            let b = build(spelling, "rep", embed);
            assert!(a.obj == b.obj, "{spelling}: objects differ");
            assert_eq!(a.header, b.header, "{spelling}");
            let la = static_library(a.target.format(), &[("rep.o", &a.obj)]).unwrap();
            let lb = static_library(b.target.format(), &[("rep.o", &b.obj)]).unwrap();
            assert!(la == lb, "{spelling}: archives differ");
        }
    }
}
