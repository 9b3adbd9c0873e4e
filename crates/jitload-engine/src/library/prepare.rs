//! Turning added IR or bitcode into a [`Prepared`] module: parse, check, rename function
//! bodies behind their stubs, compile (eagerly, in a child when isolated) or keep the module
//! for lazy per-function compilation.

use super::*;

/// A module compiled for a library but not linked yet.
pub(super) struct Prepared {
    pub(super) objects: Vec<Vec<u8>>,
    pub(super) functions: Vec<String>,
    pub(super) direct: Vec<String>,
    pub(super) undefined: Vec<String>,
    pub(super) dependent_libraries: Vec<String>,
    pub(super) constructors: Option<String>,
    pub(super) destructors: Option<String>,
    pub(super) lazy: Option<Arc<LazySource>>,
}

impl Prepared {
    /// Encodes an eager module's preparation for the trip from the compiler child.
    fn write(&self, w: &mut jitload_runtime::wire::Writer) {
        w.u32(self.objects.len() as u32);
        for object in &self.objects {
            w.bytes(object);
        }
        w.strs(&self.functions).strs(&self.direct).strs(&self.undefined).strs(&self.dependent_libraries);
        w.strs(self.constructors.as_slice()).strs(self.destructors.as_slice());
    }

    /// Decodes what [`Prepared::write`] wrote; `None` on malformed input.
    fn read(r: &mut jitload_runtime::wire::Reader<'_>) -> Option<Prepared> {
        let objects = (0..r.u32()?).map(|_| r.bytes()).collect::<Option<Vec<_>>>()?;
        let (functions, direct, undefined, dependent_libraries) = (r.strs()?, r.strs()?, r.strs()?, r.strs()?);
        let (constructors, destructors) = (r.strs()?.pop(), r.strs()?.pop());
        Some(Prepared { objects, functions, direct, undefined, dependent_libraries, constructors, destructors, lazy: None })
    }
}

/// A module kept in memory so a lazy library can compile its functions one at a time.
pub(super) struct LazySource {
    pub(super) module: Mutex<crate::kept::KeptModule>,
    pub(super) path: String,
}

impl Library {
    /// Parses and checks `bytes` and compiles them (eager library) or splits them for
    /// per-function compilation (lazy library).
    pub(super) fn prepare(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        if self.inner.options.lazy {
            self.prepare_lazy(bytes, path, id)
        } else {
            self.prepare_eager(bytes, path, id)
        }
    }

    /// Prepares `bytes` in a compiler child. An eager module comes back compiled (objects
    /// and the names the library needs). A lazy module must live in this process to be
    /// compiled piece by piece, so the child only shows that preparing it (parse, verify,
    /// retarget, compile the global variables) ends well within the limits, and it is then
    /// prepared again here; its pieces compile in-process, from an input already read once.
    pub(super) fn prepare_isolated(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        if !self.inner.options.lazy {
            return crate::isolate::compile_in_child(path, || self.prepare_eager(bytes, path, id), Prepared::write, Prepared::read);
        }
        // The child's prepared module is not disposed: the child exits right after.
        let checked = || self.prepare_lazy(bytes, path, id).map(std::mem::forget);
        crate::isolate::compile_in_child(path, checked, |_, _| {}, |_| Some(()))?;
        let (library, owned, label) = (self.clone(), bytes.to_vec(), path.to_string());
        crate::background::run(path, move || library.prepare_lazy(&owned, &label, id))
    }

    pub(super) fn prepare_eager(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        let session = self.session();
        crate::session::in_guarded_context(path, |ctx| {
            let mut module = ir::parse_content(ctx, bytes, path)?;
            let mut prepared = self.analyse(&mut module, path, id)?;
            // Calls inside the module stay direct; everyone else calls through the stubs.
            for f in &prepared.functions {
                module.rename(f, &body_name(f, id));
            }
            prepared.objects.extend(session.compile_objects(&mut module, self.inner.options.opt_level, path, &format!("jlp{id}"))?);
            Ok(prepared)
        })
    }

    /// Retargets the module, lowers its constructors and renames its stubbed functions.
    pub(super) fn analyse(&self, module: &mut Module<'_>, path: &str, id: u64) -> Result<Prepared, EngineError> {
        ir::retarget(module, self.session().host(), path)?;
        let ctors = format!("__jitload_ctors_{id}");
        let dtors = format!("__jitload_dtors_{id}");
        let constructors = module.lower_init_array("llvm.global_ctors", &ctors, false).then_some(ctors);
        let destructors = module.lower_init_array("llvm.global_dtors", &dtors, true).then_some(dtors);
        let symbols = module.symbols();
        // The target machine emits every thread-local as its emulated-TLS control object
        // (see `cxx`): that is the name the module defines or needs.
        let tls: std::collections::HashSet<&str> = symbols.iter().filter(|s| s.thread_local).map(|s| s.name.as_str()).collect();
        let undefined = ir::undefined_symbols(&symbols).into_iter().map(|n| if tls.contains(n.as_str()) { emutls_name(&n) } else { n }).collect();
        let mut functions = Vec::new();
        let mut direct = Vec::new();
        for s in symbols.iter().filter(|s| s.defined && s.exported) {
            // Constructors and destructors stay direct: they must run even while (or after)
            // the module's names are unbound.
            if s.thread_local {
                direct.push(emutls_name(&s.name));
            } else if s.kind == GlobalKind::Function && !s.weak_definition && !s.name.starts_with("__jitload_") {
                functions.push(s.name.clone());
            } else {
                direct.push(s.name.clone());
            }
        }
        Ok(Prepared {
            objects: Vec::new(),
            functions,
            direct,
            undefined,
            dependent_libraries: module.dependent_libraries(),
            constructors,
            destructors,
            lazy: None,
        })
    }

    pub(super) fn prepare_lazy(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        let work = |ctx: &'static Context| -> Result<(Module<'static>, (Prepared, Vec<u8>)), EngineError> {
            let mut module = ir::parse_content(ctx, bytes, path)?;
            let aliases = module.function_aliases();
            if !aliases.is_empty() {
                return Err(EngineError::Unsupported {
                    what: format!("{path}: lazy compilation of a module with function aliases ({})", aliases.join(", ")),
                    reason: "add it to a library created with lazy=False".into(),
                });
            }
            module.drop_used_lists();
            module.promote_locals(&format!("jl{id}"));
            let mut prepared = self.analyse(&mut module, path, id)?;
            // Promoted (hidden) functions are stubbed too: pieces call each other through stubs.
            for s in module.symbols() {
                if s.defined && s.kind == GlobalKind::Function && !s.exported && !s.name.contains(".jitload.") && !s.name.starts_with("__jitload_") {
                    prepared.functions.push(s.name.clone());
                }
            }
            let mut globals = module.clone_part(None);
            let object = self.session().compile(&mut globals, self.inner.options.opt_level, path)?;
            Ok((module, (prepared, object)))
        };
        let (kept, (mut prepared, globals_object)) = crate::kept::KeptModule::build(path, work)?;
        prepared.objects.push(globals_object);
        prepared.lazy = Some(Arc::new(LazySource { module: Mutex::new(kept), path: path.to_string() }));
        Ok(prepared)
    }

    /// Compiles the body of one function of a lazy module and links it.
    pub(super) fn compile_lazy(&self, module_id: u64, source: &LazySource, function: &str) -> Result<u64, EngineError> {
        let body = body_name(function, module_id);
        let path = &source.path;
        let object = {
            let guard = blocking(|| source.module.lock().unwrap_or_else(|e| e.into_inner()));
            let Some(module) = guard.module() else {
                return Err(EngineError::Removed { library: self.inner.name.clone(), what: format!("the source of '{function}'") });
            };
            let opt = self.inner.options.opt_level;
            let session = self.session();
            match guarded(|| -> Result<Vec<u8>, EngineError> {
                // Only this piece calls the body by its private name; the other pieces (compiled
                // or not) reach it through the stub.
                let Some(mut part) = module.extract_function(function, &body) else {
                    return Err(EngineError::Link { path: path.clone(), message: format!("no definition of '{function}' to compile") });
                };
                session.compile(&mut part, opt, path)
            }) {
                Ok(result) => result?,
                Err(reason) => return Err(EngineError::LlvmCrash { path: path.clone(), reason }),
            }
        };
        let removed = || EngineError::Removed { library: self.inner.name.clone(), what: format!("'{function}'") };
        let owner = self.state().modules.get(&module_id).cloned();
        let Some(tracker) = owner.as_ref().and_then(|m| m.tracker.as_ref()) else {
            return Err(removed());
        };
        let jit = self.session().jit();
        // Another thread may remove the module (or the library) while this body links: its
        // siblings' symbols are then gone, and the failure to report is that removal, not the
        // undefined symbols it caused.
        let removed_meanwhile = |error: EngineError| {
            if self.inner.removed.load(Ordering::Acquire) || !self.state().modules.contains_key(&module_id) {
                removed()
            } else {
                error
            }
        };
        jit.add_object(tracker, &object, path).map_err(|message| removed_meanwhile(EngineError::Link { path: path.clone(), message }))?;
        let addresses = jit.lookup(self.inner.dylib, &[&body]).map_err(|m| removed_meanwhile(crate::session::link_error(path, m)))?;
        if jitload_runtime::debug::perf_map_enabled() {
            let known = HashMap::from([(body.clone(), addresses[0])]);
            jitload_runtime::debug::write_perf_map(&crate::objfile::function_addresses(&object, &known));
        }
        Ok(addresses[0])
    }

    pub(super) fn check_duplicates(&self, functions: &[String], direct: &[String], path: &str, replace: bool) -> Result<(), EngineError> {
        let mut clashes = Vec::new();
        if !replace {
            for f in functions {
                if self.stubs().by_name.get(f).is_some_and(|s| s.live.load(Ordering::Acquire)) {
                    clashes.push(f.clone());
                }
            }
        }
        let state = self.state();
        for d in direct {
            // A thread-local and a plain variable of the same name clash too.
            let plain = user_name(d);
            if state.direct.contains_key(d) || state.direct.contains_key(plain) || state.direct.contains_key(&emutls_name(plain)) {
                clashes.push(plain.to_string());
            }
        }
        drop(state);
        if clashes.is_empty() {
            return Ok(());
        }
        clashes.sort();
        Err(EngineError::Duplicate { path: path.to_string(), library: self.inner.name.clone(), symbols: clashes })
    }
}
