//! tracefs: making sure it is mounted (aya attaches tracepoints through it)
//! and reading a tracepoint's record layout from its `format` file.

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

/// Where tracefs lives: the modern mount point first, then the debugfs one.
const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0}; \
         mount it (`mount -t tracefs tracefs /sys/kernel/tracing`) or run tracer with CAP_SYS_ADMIN"
    )]
    Mount(io::Error),
    #[error(
        "tracefs at {0} is not readable (permission denied): run tracer as root or with \
         CAP_DAC_READ_SEARCH"
    )]
    Unreadable(String),
    #[error(
        "tracepoint {category}:{name} not found under {root}: the kernel is older than 4.16 \
         or was built without it (CONFIG_INET and CONFIG_TRACEPOINTS are needed)"
    )]
    NoTracepoint {
        category: String,
        name: String,
        root: String,
    },
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: io::Error },
    #[error("{path}: field `{field}` is missing or malformed")]
    Field { path: String, field: String },
}

/// A tracefs root with events under it (an empty mount point does not count).
fn mounted_root() -> Option<PathBuf> {
    MOUNT_POINTS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Returns the tracefs root, mounting tracefs on `/sys/kernel/tracing` first
/// when no mount is found (a fresh boot of some distributions has none).
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(root) = mounted_root() {
        return Ok(root);
    }
    // Mounted but closed to us (tracefs is root-only): mounting again
    // would only fail with EBUSY, so say what is really wrong.
    for dir in MOUNT_POINTS {
        if let Err(e) = std::fs::read_dir(dir)
            && e.kind() == io::ErrorKind::PermissionDenied
        {
            return Err(TracefsError::Unreadable(dir.to_owned()));
        }
    }
    let target = MOUNT_POINTS[0];
    let c = |s: &str| CString::new(s).map_err(|e| TracefsError::Mount(io::Error::other(e)));
    let (source, dir, fstype) = (c("tracefs")?, c(target)?, c("tracefs")?);
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(io::Error::last_os_error()));
    }
    log::info!("mounted tracefs on {target}");
    mounted_root().ok_or_else(|| {
        TracefsError::Mount(io::Error::other(
            "mounted, but no events directory appeared",
        ))
    })
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The layout of a tracepoint's record, from `events/CATEGORY/NAME/format`.
#[derive(Debug, Clone, Default)]
pub struct Format {
    pub fields: HashMap<String, Field>,
    /// The `print fmt:` line, which names the values of enum fields.
    pub print_fmt: String,
}

impl Format {
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
        let dir = root.join("events").join(category).join(name);
        if !dir.is_dir() {
            return Err(TracefsError::NoTracepoint {
                category: category.to_owned(),
                name: name.to_owned(),
                root: root.display().to_string(),
            });
        }
        let path = dir.join("format");
        let text = std::fs::read_to_string(&path).map_err(|error| TracefsError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Ok(Format::parse(&text))
    }

    /// Parses lines such as
    /// `field:__u8 saddr[4]; offset:32; size:4; signed:0;` (tab-separated).
    /// Lines that do not look like that are skipped.
    pub fn parse(text: &str) -> Format {
        let mut fields = HashMap::new();
        let mut print_fmt = String::new();
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("print fmt:") {
                print_fmt = p.trim().to_owned();
                continue;
            }
            let mut decl = None;
            let (mut offset, mut size) = (None, None);
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                continue;
            };
            let Some(last) = decl.split_whitespace().last() else {
                continue;
            };
            let name = last
                .split('[')
                .next()
                .unwrap_or(last)
                .trim_start_matches('*');
            fields.insert(name.to_owned(), Field { offset, size });
        }
        Format { fields, print_fmt }
    }

    /// The names `print fmt` gives the numeric values of `field`
    /// (`__print_symbolic(REC->field, { 0, "NOT_SPECIFIED" }, ...)`; the
    /// kernel writes enum constants as numbers there). Entries written
    /// with a name instead of a number are skipped.
    pub fn symbols(&self, field: &str) -> Vec<(u32, String)> {
        let start = format!("__print_symbolic(REC->{field},");
        let Some(at) = self.print_fmt.find(&start) else {
            return Vec::new();
        };
        let mut rest = &self.print_fmt[at + start.len()..];
        let mut found = Vec::new();
        while let Some(open) = rest.trim_start().strip_prefix('{') {
            let Some(close) = open.find('}') else { break };
            let entry = &open[..close];
            rest = open[close + 1..].trim_start().trim_start_matches(',');
            let Some((number, name)) = entry.split_once(',') else {
                continue;
            };
            if let Ok(n) = number.trim().parse::<u32>() {
                found.push((n, name.trim().trim_matches('"').to_owned()));
            }
        }
        found
    }

    /// End of the last field: how much of the record the program must copy.
    pub fn record_size(&self) -> u32 {
        self.fields
            .values()
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format file of Linux 6.18, copied from tracefs.
    const FORMAT_6_18: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s ...\"
";

    #[test]
    fn parses_the_6_18_layout() {
        let f = Format::parse(FORMAT_6_18);
        assert_eq!(f.fields["skaddr"], Field { offset: 8, size: 8 });
        assert_eq!(
            f.fields["protocol"],
            Field {
                offset: 30,
                size: 2
            }
        );
        assert_eq!(
            f.fields["saddr_v6"],
            Field {
                offset: 40,
                size: 16
            }
        );
        assert_eq!(
            f.fields["daddr"],
            Field {
                offset: 36,
                size: 4
            }
        );
        assert_eq!(f.record_size(), 72);
        assert_eq!(f.fields.len(), 15);
    }

    #[test]
    fn ignores_noise() {
        let f = Format::parse(
            "garbage\nfield:int x;\toffset:zz;\tsize:4;\n\tfield:char *p;\toffset:8;\tsize:8;\n",
        );
        assert_eq!(f.fields.len(), 1);
        assert_eq!(f.fields["p"], Field { offset: 8, size: 8 });
    }

    #[test]
    fn names_the_values_of_an_enum_field() {
        let f = Format::parse(
            "print fmt: \"state=%s reason=%s\", REC->state ? __print_symbolic(REC->state, \
             { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }) : \"UNKNOWN\", \
             __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, { 1, \"NO_SOCKET\" }, \
             { 2, \"TCP_INVALID_ACK_SEQUENCE\" })\n",
        );
        assert_eq!(
            f.symbols("reason"),
            [
                (0, "NOT_SPECIFIED".to_owned()),
                (1, "NO_SOCKET".to_owned()),
                (2, "TCP_INVALID_ACK_SEQUENCE".to_owned())
            ]
        );
        // Written with names, not numbers: nothing to map.
        assert!(f.symbols("state").is_empty());
        assert!(f.symbols("absent").is_empty());
    }
}
