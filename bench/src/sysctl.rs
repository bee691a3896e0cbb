//! Kernel settings the bench changes, each restored when the guard drops:
//! on success, on error and after Ctrl-C (see `stop`). Only a SIGKILL can
//! leave one behind; the bench prints every change so it can be undone by
//! hand.

use std::path::PathBuf;

use anyhow::Context as _;

#[derive(Default)]
pub struct Sysctls {
    /// (name, value before the bench), in the order they were changed.
    saved: Vec<(String, String)>,
}

fn path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// The current value (whitespace-separated fields joined by one space).
pub fn read(name: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path(name)).with_context(|| format!("reading {name}"))?;
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The current value of a one-number setting.
pub fn read_u64(name: &str) -> anyhow::Result<u64> {
    let value = read(name)?;
    value
        .parse()
        .with_context(|| format!("{name} = `{value}` is not a number"))
}

fn write(name: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(path(name), value).with_context(|| format!("setting {name} = {value}"))
}

impl Sysctls {
    /// Sets `name` for the length of the bench.
    pub fn set(&mut self, name: &str, value: &str) -> anyhow::Result<()> {
        let old = read(name)?;
        if old == value {
            return Ok(());
        }
        write(name, value)?;
        eprintln!("bench: {name} = {value} (was {old}; restored at the end)");
        self.saved.push((name.to_owned(), old));
        Ok(())
    }

    /// Raises a one-number setting to at least `min`; a higher value stays.
    pub fn raise(&mut self, name: &str, min: u64) -> anyhow::Result<()> {
        if read_u64(name)? < min {
            self.set(name, &min.to_string())?;
        }
        Ok(())
    }
}

impl Drop for Sysctls {
    fn drop(&mut self) {
        for (name, old) in self.saved.drain(..).rev() {
            match write(&name, &old) {
                Ok(()) => eprintln!("bench: restored {name} = {old}"),
                Err(e) => eprintln!("bench: WARNING: {e:#}; set it back by hand"),
            }
        }
    }
}
