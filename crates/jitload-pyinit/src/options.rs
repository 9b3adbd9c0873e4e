//! jitload's settings seen from Python (`jitload.config`, `python -m jitload options`): the
//! values `jitload-options` parsed, what did not parse, and setting one at run time.
//! Registered in both native modules, since each has its own copy of the settings.

use jitload_options::{Kind, Value};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Every setting: name -> (value or None, whether it was given, kind, default, meaning).
/// Flags are bools, counts ints, seconds floats, the others strings.
#[pyfunction]
fn options(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let all = jitload_options::get();
    let out = PyDict::new(py);
    for (setting, value, given) in all.values() {
        let value: Option<Py<PyAny>> = match value {
            None => None,
            Some(Value::Flag(b)) => Some(b.into_pyobject(py)?.to_owned().into_any().unbind()),
            Some(Value::Count(n)) => Some(n.into_pyobject(py)?.into_any().unbind()),
            Some(Value::Seconds(s)) => Some(s.into_pyobject(py)?.into_any().unbind()),
            Some(Value::Choice(c)) => Some(c.into_pyobject(py)?.into_any().unbind()),
            Some(Value::Text(t)) => Some(t.into_pyobject(py)?.into_any().unbind()),
        };
        let kind = match setting.kind {
            Kind::Flag => "flag",
            Kind::Count { .. } => "count",
            Kind::Seconds { .. } => "seconds",
            Kind::Choice(_) => "choice",
            Kind::Text => "text",
        };
        out.set_item(setting.name, (value, given, kind, setting.default, setting.doc))?;
    }
    out.set_item("cache_dir", all.cache_dir.as_ref().map(|d| d.to_string_lossy().into_owned()))?;
    Ok(out)
}

/// What did not parse when the environment was read, one sentence each naming the variable.
#[pyfunction]
fn option_problems() -> Vec<String> {
    jitload_options::get().problems.clone()
}

/// Sets one setting for the rest of the process (ValueError naming the problem).
#[pyfunction]
fn set_option(name: &str, value: &str) -> PyResult<()> {
    jitload_options::set(name, value).map_err(PyValueError::new_err)?;
    crate::configure_code_memory();
    Ok(())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(pyo3::wrap_pyfunction!(options, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(option_problems, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(set_option, m)?)?;
    Ok(())
}
