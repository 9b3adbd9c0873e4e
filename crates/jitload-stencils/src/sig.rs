//! C types of a signature, by the names `jitload.signature` uses.

use crate::Error;

/// A C type a wrapper converts or a thunk boxes. The numbering is the stencils' `K_*`
/// (`stencils/stencils.h`), which the slow paths receive as `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CType {
    Void = 0,
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    /// `void *`: None/int/buffer/ctypes object in, int or None out.
    Ptr,
    /// A buffer-protocol object passed as a pointer to its (writable) memory.
    Buffer,
    /// `PyObject *`: borrowed in, a new reference out.
    PyObject,
}

impl CType {
    /// The type named `name` (canonical names of `jitload.signature.TYPES` and its aliases).
    pub fn from_name(name: &str) -> Option<CType> {
        use CType::*;
        Some(match name {
            "void" => Void,
            "bool" | "_Bool" => Bool,
            "int8" | "i8" | "char" | "schar" => I8,
            "int16" | "i16" | "short" => I16,
            "int32" | "i32" | "int" => I32,
            "int64" | "i64" | "long" | "longlong" | "ssize_t" | "intptr_t" => I64,
            "uint8" | "u8" | "uchar" => U8,
            "uint16" | "u16" | "ushort" => U16,
            "uint32" | "u32" | "uint" => U32,
            "uint64" | "u64" | "ulong" | "ulonglong" | "size_t" | "uintptr_t" => U64,
            "float" | "f32" => F32,
            "double" | "f64" => F64,
            "ptr" | "void*" | "char*" => Ptr,
            "buffer" => Buffer,
            "pyobject" | "PyObject*" => PyObject,
            _ => return None,
        })
    }

    /// The kind code the stencils use.
    pub fn kind(self) -> u64 {
        self as u8 as u64
    }

    /// The type for a kind code.
    pub fn from_kind(kind: u64) -> Option<CType> {
        use CType::*;
        const ALL: [CType; 15] = [Void, Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64, Ptr, Buffer, PyObject];
        ALL.get(kind as usize).copied()
    }

    /// Passed in an SSE register (SysV class SSE) rather than an integer one.
    pub fn is_sse(self) -> bool {
        matches!(self, CType::F32 | CType::F64)
    }

    /// `(min, max)` of an integer type.
    pub fn int_range(self) -> Option<(i128, i128)> {
        use CType::*;
        Some(match self {
            Bool => (0, 1),
            I8 => (i8::MIN as i128, i8::MAX as i128),
            I16 => (i16::MIN as i128, i16::MAX as i128),
            I32 => (i32::MIN as i128, i32::MAX as i128),
            I64 => (i64::MIN as i128, i64::MAX as i128),
            U8 => (0, u8::MAX as i128),
            U16 => (0, u16::MAX as i128),
            U32 => (0, u32::MAX as i128),
            U64 => (0, u64::MAX as i128),
            _ => return None,
        })
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        use CType::*;
        match self {
            Void => "void",
            Bool => "bool",
            I8 => "int8",
            I16 => "int16",
            I32 => "int32",
            I64 => "int64",
            U8 => "uint8",
            U16 => "uint16",
            U32 => "uint32",
            U64 => "uint64",
            F32 => "float",
            F64 => "double",
            Ptr => "ptr",
            Buffer => "buffer",
            PyObject => "pyobject",
        }
    }
}

/// A C function type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    pub result: CType,
    pub args: Vec<CType>,
}

impl Signature {
    /// From type names; `void` only as the result.
    pub fn from_names(result: &str, args: &[&str]) -> Result<Signature, Error> {
        let result = CType::from_name(result).ok_or_else(|| Error::Signature(format!("unknown type {result:?}")))?;
        let args = args
            .iter()
            .map(|a| match CType::from_name(a) {
                Some(CType::Void) => Err(Error::Signature("void is only allowed as the result".into())),
                Some(t) => Ok(t),
                None => Err(Error::Signature(format!("unknown type {a:?}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signature { result, args })
    }

    /// Parses `"result(arg, ...)"` (the grammar of `jitload.signature`, without names).
    pub fn parse(text: &str) -> Result<Signature, Error> {
        let bad = || Error::Signature(format!("signature {text:?}: expected 'result(arg, ...)', e.g. 'int64(int64, int64)'"));
        let t = text.trim();
        let open = t.find('(').ok_or_else(bad)?;
        if !t.ends_with(')') || t.matches('(').count() != 1 || t.matches(')').count() != 1 {
            return Err(bad());
        }
        let inner = t[open + 1..t.len() - 1].trim();
        let args: Vec<&str> = if inner.is_empty() || inner == "void" { Vec::new() } else { inner.split(',').map(str::trim).collect() };
        Signature::from_names(t[..open].trim(), &args)
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let args: Vec<&str> = self.args.iter().map(|a| a.name()).collect();
        write!(f, "{}({})", self.result.name(), args.join(", "))
    }
}
