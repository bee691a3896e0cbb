//! A focused reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): finds a
//! struct by name and the byte offset of a member path inside it, walking
//! through typedefs, qualifiers and anonymous structs and unions.
//!
//! That is all tracer needs to read `struct sock` and `struct net` on any
//! kernel without compiling in one kernel's layout. The format is described
//! in the kernel's Documentation/bpf/btf.rst.

use std::{collections::HashMap, path::Path};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("unsupported BTF kind {kind} (type id {id})")]
    UnknownKind { kind: u32, id: u32 },
    #[error("BTF has no struct named `{0}`")]
    NoStruct(String),
    #[error("struct `{strukt}` has no member `{member}` (BTF)")]
    NoMember { strukt: String, member: String },
    #[error("member `{member}` of `{strukt}` is not a struct or union, cannot descend into it")]
    NotAggregate { strukt: String, member: String },
    #[error("member `{member}` of `{strukt}` is a bit field")]
    BitField { strukt: String, member: String },
}

/// One member of a struct or union.
#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Offset in bits.
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// Struct or union, with its members.
    Aggregate(Vec<Member>),
    /// typedef, const, volatile, restrict, type tag: refers to another type.
    Alias(u32),
    /// Anything else: tracer never needs to look inside it.
    Other,
}

/// Parsed BTF: every type by id, and struct ids by name.
#[derive(Debug)]
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is the implicit `void`.
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u16_at(data: &[u8], off: usize) -> Result<u16, BtfError> {
    data.get(off..off + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

/// The members of a struct or union whose `vlen` entries start at `pos`.
fn members(
    type_data: &[u8],
    pos: usize,
    vlen: usize,
    kind_flag: bool,
) -> Result<Vec<Member>, BtfError> {
    let mut members = Vec::with_capacity(vlen);
    for i in 0..vlen {
        let at = pos + i * 12;
        let offset = u32_at(type_data, at + 8)?;
        let (bit_offset, bitfield_size) = if kind_flag {
            (offset & 0x00ff_ffff, offset >> 24)
        } else {
            (offset, 0)
        };
        members.push(Member {
            name_off: u32_at(type_data, at)?,
            type_id: u32_at(type_data, at + 4)?,
            bit_offset,
            bitfield_size,
        });
    }
    Ok(members)
}

/// Bytes that follow the common 12-byte header for a kind whose layout we
/// skip; None for a kind this parser does not know.
fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
        KIND_DATASEC | KIND_ENUM64 => vlen * 12,
        KIND_PTR | KIND_FWD | KIND_FUNC | KIND_FLOAT => 0,
        _ => return None,
    })
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_kernel() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|error| BtfError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Btf::parse(&data)
    }

    /// Parses raw BTF (little-endian, as on every host tracer runs on).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF?)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len
                .checked_add(off)
                .ok_or(BtfError::Malformed("offset overflow"))?;
            let end = start
                .checked_add(len)
                .ok_or(BtfError::Malformed("offset overflow"))?;
            data.get(start..end)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();

        let mut btf = Btf {
            strings,
            types: vec![Type::Other],
            structs: HashMap::new(),
        };
        let mut pos = 0;
        while pos < type_data.len() {
            let id = btf.types.len() as u32;
            let name_off = u32_at(type_data, pos)?;
            let info = u32_at(type_data, pos + 4)?;
            let size_or_type = u32_at(type_data, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let members = members(type_data, pos, vlen, kind_flag)?;
                    pos += vlen * 12;
                    if kind == KIND_STRUCT && name_off != 0 {
                        let name = btf.string(name_off)?.to_owned();
                        // Keep the first definition: later ones with the same
                        // name are rare and would not differ for our purposes.
                        btf.structs.entry(name).or_insert(id);
                    }
                    Type::Aggregate(members)
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                _ => {
                    pos += trailing_len(kind, vlen).ok_or(BtfError::UnknownKind { kind, id })?;
                    Type::Other
                }
            };
            btf.types.push(ty);
        }
        if pos != type_data.len() {
            return Err(BtfError::Malformed("type section ends inside a type"));
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or(BtfError::Malformed("string offset out of bounds"))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::Malformed("unterminated string"))?;
        std::str::from_utf8(&rest[..end]).map_err(|_| BtfError::Malformed("non-UTF-8 name"))
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        // A bound on the chain guards against cycles in corrupt data.
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias(next) => id = *next,
                ty => return Some(ty),
            }
        }
        None
    }

    /// Finds `name` among `members`, looking inside anonymous structs and
    /// unions too; returns the member and its bit offset from the start.
    fn find_member(&self, members: &[Member], name: &str) -> Option<(Member, u32)> {
        for m in members {
            if m.name_off == 0 {
                if let Some(Type::Aggregate(inner)) = self.resolve(m.type_id)
                    && let Some((found, off)) = self.find_member(inner, name)
                {
                    return Some((found, m.bit_offset + off));
                }
            } else if self.string(m.name_off).ok() == Some(name) {
                return Some((*m, m.bit_offset));
            }
        }
        None
    }

    /// Byte offset of `path` (member names, outermost first) inside the struct
    /// named `strukt`: `member_offset("sock", &["__sk_common", "skc_net"])`.
    pub fn member_offset(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut members: &[Member] = match self.resolve(id) {
            Some(Type::Aggregate(m)) => m,
            _ => return Err(BtfError::NoStruct(strukt.to_owned())),
        };
        let mut where_ = strukt.to_owned();
        let mut bits = 0u32;
        for (i, name) in path.iter().enumerate() {
            let (member, off) =
                self.find_member(members, name)
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: where_.clone(),
                        member: (*name).to_owned(),
                    })?;
            if member.bitfield_size != 0 || off % 8 != 0 {
                return Err(BtfError::BitField {
                    strukt: where_,
                    member: (*name).to_owned(),
                });
            }
            bits += off;
            if i + 1 < path.len() {
                members = match self.resolve(member.type_id) {
                    Some(Type::Aggregate(m)) => m,
                    _ => {
                        return Err(BtfError::NotAggregate {
                            strukt: where_,
                            member: (*name).to_owned(),
                        });
                    }
                };
            }
            where_ = format!("{where_}.{name}");
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob by hand: the test knows every offset it should find.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(&mut self, words: &[u32]) -> u32 {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, size: u32) -> u32 {
            let n = self.name(name);
            self.push(&[n, KIND_INT << 24, size, size * 8])
        }
        fn ptr(&mut self, to: u32) -> u32 {
            self.push(&[0, KIND_PTR << 24, to])
        }
        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            let n = self.name(name);
            self.push(&[n, KIND_TYPEDEF << 24, to])
        }
        fn aggregate(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let n = self.name(name);
            let mut words = vec![n, (kind << 24) | members.len() as u32, size];
            for (mname, ty, bit_off) in members {
                let mn = self.name(mname);
                words.extend_from_slice(&[mn, *ty, *bit_off]);
            }
            self.push(&words)
        }
        fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&24u32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// `struct sock { struct sock_common __sk_common; }` with `skc_net`
    /// behind an anonymous union and a typedef, like the real kernel.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let u32_t = b.int("unsigned int", 4);
        let u64_t = b.int("long long unsigned int", 8);
        let net = b.aggregate(
            KIND_STRUCT,
            "net",
            64,
            &[("pad", u64_t, 0), ("inum", u32_t, 8 * 8)],
        );
        let net_ptr = b.ptr(net);
        let possible = b.aggregate(KIND_STRUCT, "", 8, &[("net", net_ptr, 0)]);
        let possible_t = b.typedef("possible_net_t", possible);
        let anon = b.aggregate(
            KIND_UNION,
            "",
            8,
            &[("skc_net", possible_t, 0), ("other", u64_t, 0)],
        );
        let common = b.aggregate(
            KIND_STRUCT,
            "sock_common",
            64,
            &[("skc_hash", u32_t, 0), ("", anon, 48 * 8)],
        );
        b.aggregate(
            KIND_STRUCT,
            "sock",
            128,
            &[("x", u64_t, 0), ("__sk_common", common, 16 * 8)],
        );
        b.finish()
    }

    #[test]
    fn finds_offsets_through_typedefs_and_anonymous_unions() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(
            btf.member_offset("sock", &["__sk_common", "skc_net", "net"])
                .unwrap(),
            64
        );
        assert_eq!(btf.member_offset("net", &["inum"]).unwrap(), 8);
    }

    #[test]
    fn missing_names_are_clear_errors() {
        let btf = Btf::parse(&sample()).expect("parse");
        let err = btf
            .member_offset("sock", &["__sk_common", "nope"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "struct `sock.__sk_common` has no member `nope` (BTF)"
        );
        assert!(matches!(
            btf.member_offset("socket", &["x"]),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.member_offset("sock", &["x", "y"]),
            Err(BtfError::NotAggregate { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0]).is_err());
        let mut truncated = sample();
        truncated.truncate(40);
        assert!(Btf::parse(&truncated).is_err());
    }

    /// The real kernel's BTF, where there is one (no root needed to read it).
    #[test]
    fn reads_the_running_kernel() {
        let Ok(btf) = Btf::from_kernel() else {
            eprintln!("SKIPPED: {VMLINUX_BTF} is not readable on this machine");
            return;
        };
        let net = btf
            .member_offset("sock", &["__sk_common", "skc_net", "net"])
            .unwrap();
        let inum = btf.member_offset("net", &["ns", "inum"]).unwrap();
        assert!(net > 0 && net < 256, "skc_net at {net}");
        assert!(inum > 0 && inum < 1024, "ns.inum at {inum}");
    }
}
