//! A provider for tests: records every transition and what the kernel reports afterwards.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use crate::provider::{page_size, Provider};

/// A transition of a range of pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Map,
    Executable,
    ReadOnly,
    /// Moved from `from` over the event's range.
    MoveFrom(usize),
    Unmap,
}

/// One transition: the range, and the permissions `/proc/self/maps` lists for it afterwards
/// (`rw-p`, `r-xs`, ...; empty after an unmap).
#[derive(Debug, Clone)]
pub struct Event {
    pub op: Op,
    pub addr: usize,
    pub len: usize,
    pub observed: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Page {
    Writable,
    Executable,
    ReadOnly,
}

#[derive(Default)]
struct Log {
    events: Vec<Event>,
    pages: BTreeMap<usize, Page>,
    violations: Vec<String>,
}

/// Wraps `inner` (the provider that does the work) and records every call.
pub struct Recording {
    inner: &'static dyn Provider,
    log: Mutex<Log>,
}

impl Recording {
    pub fn new(inner: &'static dyn Provider) -> Recording {
        Recording { inner, log: Mutex::new(Log::default()) }
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.log().events.clone()
    }

    /// W^X violations seen so far: a range the kernel listed as writable and executable after
    /// a transition, or an executable page made writable again (mapped over without being
    /// unmapped first). Empty when W^X held.
    pub fn violations(&self) -> Vec<String> {
        self.log().violations.clone()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, op: Op, addr: usize, len: usize) {
        let observed = if op == Op::Unmap { Vec::new() } else { permissions(addr, len) };
        let mut log = self.log();
        for perms in &observed {
            if perms.contains('w') && perms.contains('x') {
                log.violations.push(format!("{op:?} {addr:#x}+{len:#x}: the kernel lists {perms}"));
            }
        }
        let page = page_size();
        let pages = (addr..addr + len).step_by(page);
        match op {
            Op::Map => {
                for p in pages {
                    if log.pages.insert(p, Page::Writable) == Some(Page::Executable) {
                        log.violations.push(format!("{op:?}: executable page {p:#x} became writable"));
                    }
                }
            }
            Op::Executable | Op::ReadOnly => {
                let state = if op == Op::Executable { Page::Executable } else { Page::ReadOnly };
                for p in pages {
                    log.pages.insert(p, state);
                }
            }
            Op::MoveFrom(from) => {
                for (i, p) in pages.enumerate() {
                    let state = log.pages.remove(&(from + i * page));
                    match state {
                        Some(s) => log.pages.insert(p, s),
                        None => log.pages.remove(&p),
                    };
                }
            }
            Op::Unmap => {
                for p in pages {
                    log.pages.remove(&p);
                }
            }
        }
        log.events.push(Event { op, addr, len, observed });
    }
}

impl Provider for Recording {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn make_executable(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        self.inner.make_executable(addr, len)?;
        self.record(Op::Executable, addr as usize, len);
        Ok(())
    }

    fn map(&self, len: usize, populate: bool) -> io::Result<*mut u8> {
        let p = self.inner.map(len, populate)?;
        self.record(Op::Map, p as usize, len);
        Ok(p)
    }

    fn make_readonly(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        self.inner.make_readonly(addr, len)?;
        self.record(Op::ReadOnly, addr as usize, len);
        Ok(())
    }

    fn move_over(&self, from: *mut u8, to: *mut u8, len: usize) -> io::Result<()> {
        self.inner.move_over(from, to, len)?;
        self.record(Op::MoveFrom(from as usize), to as usize, len);
        Ok(())
    }

    fn unmap(&self, addr: *mut u8, len: usize) {
        self.inner.unmap(addr, len);
        self.record(Op::Unmap, addr as usize, len);
    }
}

/// The permissions of every mapping in `/proc/self/maps` that overlaps `addr..addr+len`.
fn permissions(addr: usize, len: usize) -> Vec<String> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return Vec::new() };
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else { continue };
        if start < addr + len && addr < end {
            found.push(perms.to_string());
        }
    }
    found
}
