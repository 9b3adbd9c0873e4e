//! Which modules' code must stay loaded for the life of the process, whatever becomes of
//! their module objects.
//!
//! jitload frees a module's code once a reload replaced it and the last module object made
//! from it is gone (`jitload-pyinit`). That is only safe if nothing else can still reach the
//! code or data: a C `atexit` handler, a signal handler, a thread, an interpreter hook, a type
//! or function object that holds no reference to the module. CPython never unloads a `.so`,
//! so extension code registers such things freely; a module whose code calls any function
//! through which it can hand out such a pointer is therefore kept, as CPython keeps every
//! `.so`. The list errs on the side of keeping: a module kept needlessly costs memory, one
//! freed too early crashes the process (a handler in freed code at exit was the case found).

/// Functions and variables through which a module can leave a pointer into its own code or
/// data where no module object accounts for it.
const OUTLIVING: &[&str] = &[
    // Run at process exit, at fork or from another thread.
    "atexit",
    "at_quick_exit",
    "on_exit",
    "Py_AtExit",
    "PyUnstable_AtExit",
    "pthread_atfork",
    "__register_atfork",
    "pthread_create",
    "thrd_create",
    "pthread_key_create",
    "tss_create",
    "PyThread_start_new_thread",
    "PyThread_start_joinable_thread",
    "signal",
    "sigaction",
    "sigset",
    "bsd_signal",
    "sysv_signal",
    "__sysv_signal",
    "PyOS_setsig",
    // Interpreter-wide hooks.
    "Py_AddPendingCall",
    "PyEval_SetProfile",
    "PyEval_SetProfileAllThreads",
    "PyEval_SetTrace",
    "PyEval_SetTraceAllThreads",
    "PySys_AddAuditHook",
    "PyMem_SetAllocator",
    "PyObject_SetArenaAllocator",
    "PyOS_InputHook",
    "PyOS_ReadlineFunctionPointer",
    "PyImport_AppendInittab",
    "PyImport_ExtendInittab",
    "PyDict_AddWatcher",
    "PyType_AddWatcher",
    "PyCode_AddWatcher",
    "PyFunction_AddWatcher",
    "PyContext_AddWatcher",
    "PyRefTracer_SetTracer",
    "_PyInterpreterState_SetEvalFrameFunc",
    "PyFile_SetOpenCodeHook",
    // Objects that point into the code or data without keeping the module alive: types
    // (static, or heap types made without a module), free functions and descriptors, capsules,
    // memory views of static data, further modules made from the code's definitions.
    "PyType_Ready",
    "PyType_FromSpec",
    "PyType_FromSpecWithBases",
    "PyType_FromMetaclass",
    "PyStructSequence_InitType",
    "PyStructSequence_InitType2",
    "PyStructSequence_NewType",
    "PyCFunction_New",
    "PyCFunction_NewEx",
    "PyCMethod_New",
    "PyDescr_NewMethod",
    "PyDescr_NewClassMethod",
    "PyDescr_NewGetSet",
    "PyDescr_NewMember",
    "PyDescr_NewWrapper",
    "PyCapsule_New",
    "PyCapsule_SetPointer",
    "PyCapsule_SetDestructor",
    "PyCapsule_SetName",
    "PyCapsule_SetContext",
    "PyMemoryView_FromMemory",
    "PyModule_FromDefAndSpec2",
];

/// The first of a module's undefined symbols (`undefined`) that makes its code stay loaded
/// for the life of the process, if any.
pub fn pinning_symbol(undefined: &[String]) -> Option<&str> {
    undefined.iter().map(String::as_str).find(|s| OUTLIVING.contains(s))
}

/// Whether a module with these undefined symbols can register C exit handlers.
pub fn registers_exit_handler(undefined: &[String]) -> bool {
    const EXIT_HANDLERS: &[&str] = &["atexit", "at_quick_exit", "on_exit", "Py_AtExit", "PyUnstable_AtExit"];
    undefined.iter().any(|s| EXIT_HANDLERS.contains(&s.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_exit_handler_pins_the_module() {
        assert_eq!(pinning_symbol(&names(&["PyLong_FromLong", "Py_AtExit", "atexit"])), Some("Py_AtExit"));
    }

    #[test]
    fn plain_api_use_does_not() {
        assert_eq!(pinning_symbol(&names(&["PyModule_Create2", "PyLong_FromLong", "PyArg_ParseTuple", "malloc"])), None);
    }
}
