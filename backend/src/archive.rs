//! Static libraries (`libNAME.a`) written by edgec itself, so no `ar` is needed: GNU format
//! with a GNU symbol table for ELF targets, BSD (Darwin) format with `__.SYMDEF` for Mach-O.
//! Deterministic: every member has mtime, uid and gid 0 and mode 644, in the given order.

use crate::target::ObjectFormat;
use ar_archive_writer::{ArchiveKind, DEFAULT_OBJECT_READER, NewArchiveMember, write_archive_to_stream};

/// Writes an archive of `members` (`(file name, object bytes)`), indexed by their global
/// defined symbols in the format the platform's linker expects.
pub fn static_library(format: ObjectFormat, members: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let kind = match format {
        ObjectFormat::Elf => ArchiveKind::Gnu,
        ObjectFormat::MachO => ArchiveKind::Darwin,
    };
    let members: Vec<NewArchiveMember<'_>> = members
        .iter()
        .map(|&(name, bytes)| {
            let mut m = NewArchiveMember::new(bytes, &DEFAULT_OBJECT_READER, name.to_string());
            m.mtime = 0;
            m.uid = 0;
            m.gid = 0;
            m.perms = 0o644;
            m
        })
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    write_archive_to_stream(&mut out, &members, kind, false, None)?;
    Ok(out.into_inner())
}
