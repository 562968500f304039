//! Member offsets of a kernel struct, from the kernel's BTF
//! (/sys/kernel/btf/vmlinux), for the kprobe on tcp_set_state: the IPv6
//! addresses of `struct sock_common` sit at offsets that vary with the
//! kernel's config.
//!
//! Written by hand because aya-obj 0.3 parses BTF but keeps its type lookup
//! crate-private. Only what finding a struct member needs is decoded: the
//! header, the string section, and each type's record, whose size follows
//! from its kind (include/uapi/linux/btf.h). A file that does not parse is
//! an error and the kprobe variant then skips IPv6 (and counts it).

/// Why the BTF could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// Not BTF, or cut short.
    #[error("not a BTF blob: {0}")]
    Malformed(&'static str),
    /// A kind this parser does not know (a newer kernel).
    #[error("BTF type kind {0} is unknown")]
    UnknownKind(u32),
    /// No struct of that name.
    #[error("no struct `{0}` in the BTF")]
    NoStruct(String),
    /// The struct has no such member.
    #[error("struct `{name}` has no member `{member}`")]
    NoMember {
        /// The struct.
        name: String,
        /// The member.
        member: String,
    },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

fn name_at(strings: &[u8], off: u32) -> Result<&[u8], BtfError> {
    let rest = strings
        .get(off as usize..)
        .ok_or(BtfError::Malformed("string offset out of range"))?;
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(BtfError::Malformed("unterminated string"))?;
    Ok(&rest[..end])
}

/// Bytes after the 12-byte common record for a type of `kind` with `vlen`.
fn trailer(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF..FUNC, FLOAT, TYPE_TAG
        other => return Err(BtfError::UnknownKind(other)),
    })
}

/// Byte offsets of `members` of `struct name` in little-endian BTF `blob`.
pub fn member_offsets(blob: &[u8], name: &str, members: &[&str]) -> Result<Vec<u32>, BtfError> {
    let magic = blob
        .get(0..2)
        .map(|m| u16::from_le_bytes([m[0], m[1]]))
        .ok_or(BtfError::Malformed("truncated"))?;
    if magic != MAGIC {
        return Err(BtfError::Malformed("bad magic (or big-endian)"));
    }
    let hdr_len = u32_at(blob, 4)? as usize;
    let (type_off, type_len) = (u32_at(blob, 8)? as usize, u32_at(blob, 12)? as usize);
    let (str_off, str_len) = (u32_at(blob, 16)? as usize, u32_at(blob, 20)? as usize);
    let section = |off: usize, len: usize| {
        let start = hdr_len
            .checked_add(off)
            .ok_or(BtfError::Malformed("overflow"))?;
        let end = start
            .checked_add(len)
            .ok_or(BtfError::Malformed("overflow"))?;
        blob.get(start..end)
            .ok_or(BtfError::Malformed("section out of range"))
    };
    let types = section(type_off, type_len)?;
    let strings = section(str_off, str_len)?;
    let mut at = 0;
    while at < types.len() {
        let name_off = u32_at(types, at)?;
        let info = u32_at(types, at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let body = at + 12;
        let next = body + trailer(kind, vlen)?;
        if kind == KIND_STRUCT && name_at(strings, name_off)? == name.as_bytes() {
            let bitfield_offsets = info >> 31 == 1;
            return members
                .iter()
                .map(|&m| {
                    for i in 0..vlen {
                        let rec = body + 12 * i;
                        if name_at(strings, u32_at(types, rec)?)? == m.as_bytes() {
                            let raw = u32_at(types, rec + 8)?;
                            let bits = if bitfield_offsets {
                                raw & 0x00ff_ffff
                            } else {
                                raw
                            };
                            return Ok(bits / 8);
                        }
                    }
                    Err(BtfError::NoMember {
                        name: name.to_owned(),
                        member: m.to_owned(),
                    })
                })
                .collect();
        }
        at = next;
    }
    Err(BtfError::NoStruct(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: an INT, a FUNC_PROTO with one param, and `struct s { a @0, b @128 bits }`.
    fn blob(kind_flag: bool) -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0".to_vec(); // int@1 s@5 a@7 b@9
        let mut types = Vec::new();
        let mut push = |v: &[u32]| {
            v.iter()
                .for_each(|x| types.extend_from_slice(&x.to_le_bytes()))
        };
        push(&[1, 1 << 24, 4, 0x20]); // INT "int", size 4, encoding
        push(&[0, (13 << 24) | 1, 0, 0, 1]); // FUNC_PROTO, one param
        let flag = if kind_flag { 1 << 31 } else { 0 };
        push(&[5, flag | (4 << 24) | 2, 32]); // STRUCT "s", 2 members, size 32
        push(&[7, 1, 0]); // a: int @0
        push(&[9, 1, if kind_flag { (3 << 24) | 128 } else { 128 }]); // b @128 bits
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_member_offsets_in_bytes() {
        assert_eq!(
            member_offsets(&blob(false), "s", &["b", "a"]),
            Ok(vec![16, 0])
        );
        assert_eq!(member_offsets(&blob(true), "s", &["b"]), Ok(vec![16]));
    }

    #[test]
    fn missing_and_malformed_are_errors() {
        let b = blob(false);
        assert_eq!(
            member_offsets(&b, "t", &["a"]),
            Err(BtfError::NoStruct("t".into()))
        );
        assert!(matches!(
            member_offsets(&b, "s", &["c"]),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            member_offsets(&b[..20], "s", &["a"]),
            Err(BtfError::Malformed(_))
        ));
        assert!(matches!(
            member_offsets(&[0; 30], "s", &["a"]),
            Err(BtfError::Malformed(_))
        ));
        for cut in 0..b.len() {
            let _ = member_offsets(&b[..cut], "s", &["a"]);
        }
    }

    #[test]
    fn this_kernels_sock_common_has_both_ipv6_addresses() {
        let Ok(vmlinux) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return; // no kernel BTF on this machine: nothing to check
        };
        let offs = member_offsets(
            &vmlinux,
            "sock_common",
            &["skc_v6_daddr", "skc_v6_rcv_saddr"],
        )
        .expect("sock_common in vmlinux BTF");
        // After the fixed head (addresses, hash, ports, family, state...)
        // and 16 bytes apart: two consecutive in6_addr.
        assert!(offs[0] >= 20 && offs[0].is_multiple_of(4), "{offs:?}");
        assert_eq!(offs[1], offs[0] + 16, "{offs:?}");
        assert_eq!(
            member_offsets(&vmlinux, "sock_common", &["skc_family"]),
            Ok(vec![16]),
            "the stable field the kprobe reads"
        );
    }
}
