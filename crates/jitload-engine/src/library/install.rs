//! Putting a prepared module into the library (link its objects, bind its names, retire what
//! it replaces) and retiring removed code once no call can still run in it.

use super::*;

impl Library {
    /// Links a prepared module and binds its names. `resolving` is the stub (and its locked
    /// target) being generated, if this runs inside a `define_lazy` resolution.
    pub(super) fn install(
        &self,
        id: u64,
        path: &str,
        prepared: Prepared,
        replace: bool,
        resolving: Option<(&Stub, &mut Target)>,
    ) -> Result<u64, EngineError> {
        let skip = resolving.as_ref().map(|(s, _)| s.name.clone());
        let check: Vec<String> = prepared.functions.iter().filter(|f| Some(*f) != skip.as_ref()).cloned().collect();
        self.check_duplicates(&check, &prepared.direct, path, replace)?;
        let mut deps = Vec::new();
        for lib in &prepared.dependent_libraries {
            let opened = SharedLibrary::open(lib).map_err(|reason| EngineError::DependentLibrary {
                path: path.to_string(),
                library: lib.clone(),
                reason,
            })?;
            deps.push(Arc::new(opened));
        }
        {
            let mut state = self.state();
            for d in deps {
                if !state.dependencies.iter().any(|l| l.path == d.path) {
                    state.dependencies.push(d);
                }
            }
        }
        let own: std::collections::HashSet<&String> = prepared.functions.iter().chain(&prepared.direct).collect();
        let missing: Vec<String> =
            prepared.undefined.iter().filter(|s| !own.contains(s) && !self.can_resolve(s)).cloned().collect();
        if !missing.is_empty() {
            return Err(EngineError::Unresolved { path: format!("{path} (library '{}')", self.inner.name), symbols: missing });
        }

        let jit = self.session().jit();
        let module = Arc::new(ModuleCode {
            id,
            name: path.to_string(),
            functions: prepared.functions.clone(),
            direct: prepared.direct.clone(),
            tracker: Some(jit.create_tracker(self.inner.dylib)),
            destructors: OnceLock::new(),
            installed: AtomicBool::new(false),
            _keepalive: None,
        });
        let mut resolving = resolving;
        let in_resolution = resolving.is_some();
        // A lazy module's pieces (its constructors first of all) call its functions through
        // their stubs, so those must lead to the compiler before anything is linked.
        if let Some(source) = &prepared.lazy {
            self.state().modules.insert(id, module.clone());
            for f in &prepared.functions {
                let target = Target::Lazy { module: id, source: source.clone(), function: f.clone() };
                self.bind_new(f, target, &mut resolving)?;
            }
        }
        let tracker = module.tracker.as_ref().expect("JIT modules have a tracker");
        let by_name = match self.link_objects(tracker, id, path, &prepared) {
            Ok(found) => found,
            Err(e) => {
                if prepared.lazy.is_some() {
                    let _ = self.remove_module(id);
                } else {
                    let _ = tracker.remove();
                }
                return Err(e);
            }
        };
        if let Some(d) = &prepared.destructors {
            let _ = module.destructors.set(by_name[d]);
        }
        {
            let mut state = self.state();
            for d in &prepared.direct {
                state.direct.insert(d.clone(), (by_name[d], id));
            }
            state.modules.insert(id, module.clone());
        }
        if prepared.lazy.is_none() {
            for f in &prepared.functions {
                let target = Target::Bound { address: by_name[&body_name(f, id)], module: id };
                self.bind_new(f, target, &mut resolving)?;
            }
        }
        module.installed.store(true, Ordering::Release);
        if let Some(ctors) = &prepared.constructors {
            // SAFETY: the lowered constructor function of this module, `void()`, just linked.
            let f: extern "C" fn() = unsafe { std::mem::transmute(by_name[ctors] as usize) };
            f();
        }
        // Inside a resolution this stub's lock is held; superseded modules wait for the next add.
        if !in_resolution {
            self.retire_superseded();
        }
        Ok(id)
    }

    /// Adds the prepared objects under `tracker` and links them; returns the addresses of
    /// the bodies (eager modules), direct names and constructor functions.
    pub(super) fn link_objects(&self, tracker: &Tracker, id: u64, path: &str, prepared: &Prepared) -> Result<HashMap<String, u64>, EngineError> {
        let jit = self.session().jit();
        for object in &prepared.objects {
            jit.add_object(tracker, object, path).map_err(|message| {
                if let Some(name) = message.strip_prefix("Duplicate definition of symbol ") {
                    EngineError::Duplicate {
                        path: path.to_string(),
                        library: self.inner.name.clone(),
                        symbols: vec![name.trim_matches(|c| c == '\'' || c == '"').to_string()],
                    }
                } else {
                    EngineError::Link { path: path.to_string(), message }
                }
            })?;
        }
        // Link now by looking up every body (eager modules), direct name and init function.
        let mut wanted: Vec<String> = Vec::new();
        if prepared.lazy.is_none() {
            wanted.extend(prepared.functions.iter().map(|f| body_name(f, id)));
        }
        wanted.extend(prepared.direct.iter().cloned());
        wanted.extend(prepared.constructors.iter().cloned());
        wanted.extend(prepared.destructors.iter().cloned());
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let addresses = jit.lookup(self.inner.dylib, &names).map_err(|m| crate::session::link_error(path, m))?;
        let found: HashMap<String, u64> = wanted.into_iter().zip(addresses).collect();
        if jitload_runtime::debug::perf_map_enabled() {
            for object in &prepared.objects {
                jitload_runtime::debug::write_perf_map(&crate::objfile::function_addresses(object, &found));
            }
        }
        Ok(found)
    }

    /// Frees a module's memory once no call can be running in it.
    pub(super) fn retire(&self, module: Arc<ModuleCode>) {
        let session = self.inner.session.clone();
        jitload_codemem::grace::retire(move || {
            if let Some(&dtors) = module.destructors.get() {
                // SAFETY: the lowered destructor function of this module, `void()`, still
                // linked: its tracker is removed just below.
                let f: extern "C" fn() = unsafe { std::mem::transmute(dtors as usize) };
                f();
            }
            if let Some(tracker) = &module.tracker {
                if let Err(e) = tracker.remove() {
                    log::warn!("jitload: freeing module '{}' failed: {e}", module.name);
                }
            }
            // The module's unique body names are dead in ORC's symbol pool now; ORC keeps
            // dead entries until asked to drop them.
            session.jit().clear_dead_symbols();
        });
    }

    /// Retires modules whose every name now leads elsewhere (all replaced) and that define
    /// nothing directly.
    pub(super) fn retire_superseded(&self) {
        let candidates: Vec<Arc<ModuleCode>> = self
            .state()
            .modules
            .values()
            .filter(|m| m.direct.is_empty() && !m.functions.is_empty() && m.installed.load(Ordering::Acquire))
            .cloned()
            .collect();
        for module in candidates {
            let still_used = module.functions.iter().any(|n| self.owner_of(n) == Some(module.id));
            if !still_used {
                let removed = self.state().modules.remove(&module.id);
                if let Some(m) = removed {
                    self.retire(m);
                }
            }
        }
    }
}
