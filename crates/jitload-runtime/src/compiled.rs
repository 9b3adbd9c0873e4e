//! A module compiled to objects, with what linking it needs: what the compiler (in-process
//! or in the isolated child) hands the linker, and what the object cache stores.

use crate::wire::{Reader, Writer};

/// The functions a compiled module's static constructors and destructors are lowered into.
/// The same in every module (each is linked on its own), so a cached object is valid whatever
/// id the module gets.
pub const CTORS: &str = "__jitload_ctors";
pub const DTORS: &str = "__jitload_dtors";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// One object, or several when code generation ran in parallel on pieces of the module.
    pub objects: Vec<Vec<u8>>,
    /// Symbols other modules may link against.
    pub exports: Vec<String>,
    /// Symbols the module uses but does not define (must resolve before linking).
    pub undefined: Vec<String>,
    pub dependent_libraries: Vec<String>,
    pub has_ctors: bool,
    pub has_dtors: bool,
}

/// Tag of a successful result (an error has its own tag, written by the engine).
pub const OK_TAG: u8 = 0;

impl Compiled {
    /// Appends the wire form (without the tag).
    pub fn write(&self, w: &mut Writer) {
        w.u32(self.objects.len() as u32);
        for object in &self.objects {
            w.bytes(object);
        }
        w.strs(&self.exports).strs(&self.undefined).strs(&self.dependent_libraries);
        w.u8(self.has_ctors as u8).u8(self.has_dtors as u8);
    }

    /// Reads what [`Compiled::write`] wrote; `None` for garbage.
    pub fn read(r: &mut Reader<'_>) -> Option<Compiled> {
        let n = r.u32()?;
        Some(Compiled {
            objects: (0..n).map(|_| r.bytes()).collect::<Option<Vec<_>>>()?,
            exports: r.strs()?,
            undefined: r.strs()?,
            dependent_libraries: r.strs()?,
            has_ctors: r.u8()? != 0,
            has_dtors: r.u8()? != 0,
        })
    }

    /// The object cache's payload: the tag, then the wire form.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(w.u8(OK_TAG));
        w.0
    }

    /// A cache payload back; `None` if it is not one (checksummed but from another format).
    pub fn from_payload(data: &[u8]) -> Option<Compiled> {
        let mut r = Reader::new(data);
        (r.u8()? == OK_TAG).then(|| Compiled::read(&mut r)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_refused() {
        let c = Compiled {
            objects: vec![vec![1, 2, 3], vec![]],
            exports: vec!["PyInit_m".into()],
            undefined: vec!["PyLong_FromLong".into()],
            dependent_libraries: vec!["m".into()],
            has_ctors: true,
            has_dtors: false,
        };
        let payload = c.to_payload();
        assert_eq!(Compiled::from_payload(&payload), Some(c));
        assert_eq!(Compiled::from_payload(&payload[..payload.len() - 1]), None);
        assert_eq!(Compiled::from_payload(&[1]), None);
    }
}
