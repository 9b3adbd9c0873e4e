//! Where a library's names lead: each strong function is a stub whose target (a body, a lazy
//! source, a provider, nothing) the library sets, and the resolution of a stub on its first
//! call (compiling a lazy body or asking a provider).

use super::*;

/// Where a stub leads.
pub(super) enum Target {
    /// Nowhere: reported as `Removed` when called.
    Unbound { what: String },
    Bound { address: u64, module: u64 },
    Lazy { module: u64, source: Arc<LazySource>, function: String },
    Provider(Arc<dyn Provider>),
}

pub(super) struct Stub {
    pub(super) name: String,
    /// The block holding this stub's code and slot (shared, so retargeting needs no table
    /// lock).
    pub(super) block: Arc<StubBlock>,
    pub(super) index: usize,
    pub(super) address: u64,
    pub(super) target: Mutex<Target>,
    /// The module the target belongs to (0: none), readable without the target's lock, which
    /// a resolution holds while it generates code (linking must never wait for it).
    pub(super) owner: AtomicU64,
    /// Whether the name has a definition (any target but `Unbound`); lock-free like `owner`.
    pub(super) live: AtomicBool,
    /// The thread resolving this stub right now (0: none), to catch a generator that calls
    /// the function it is generating.
    pub(super) resolving: AtomicU64,
}

impl Stub {
    /// Replaces the target (the caller holds `target`'s lock) and points the slot at it.
    fn retarget(&self, locked: &mut Target, target: Target, block: &StubBlock) {
        let (live, owner) = match &target {
            Target::Unbound { .. } => (false, 0),
            Target::Bound { module, .. } | Target::Lazy { module, .. } => (true, *module),
            Target::Provider(_) => (true, 0),
        };
        match &target {
            Target::Bound { address, .. } => block.bind(self.index, *address),
            _ => block.unbind(self.index),
        }
        self.owner.store(owner, Ordering::Release);
        self.live.store(live, Ordering::Release);
        *locked = target;
    }
}

#[derive(Default)]
pub(super) struct StubTable {
    pub(super) blocks: Vec<Arc<StubBlock>>,
    pub(super) by_name: HashMap<String, Arc<Stub>>,
    pub(super) by_slot: Vec<Arc<Stub>>,
}

impl Library {
    pub(super) fn stubs(&self) -> std::sync::RwLockReadGuard<'_, StubTable> {
        self.inner.stubs.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_target(&self, stub: &Stub, target: Target) {
        let mut current = blocking(|| stub.target.lock().unwrap_or_else(|e| e.into_inner()));
        self.retarget(stub, &mut current, target);
    }

    pub(super) fn retarget(&self, stub: &Stub, locked: &mut Target, target: Target) {
        stub.retarget(locked, target, &stub.block);
    }

    /// The stub for `name`, created (unbound) if new.
    pub(super) fn stub(&self, name: &str) -> Result<Arc<Stub>, EngineError> {
        if let Some(s) = self.stubs().by_name.get(name) {
            return Ok(s.clone());
        }
        let mut table = self.inner.stubs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = table.by_name.get(name) {
            return Ok(s.clone());
        }
        let slot = table.by_slot.len();
        let (block, index) = (slot / STUBS_PER_BLOCK, slot % STUBS_PER_BLOCK);
        if block == table.blocks.len() {
            let ctx: *const ResolverCtx = &*self.inner.resolver;
            if slot >= i32::MAX as usize {
                return Err(EngineError::Unsupported { what: format!("defining '{name}'"), reason: "too many functions in one library".into() });
            }
            let new_block = StubBlock::new(ctx, slot as u32)
                .map_err(|reason| EngineError::Unsupported { what: format!("defining '{name}'"), reason })?;
            table.blocks.push(Arc::new(new_block));
        }
        let stub = Arc::new(Stub {
            name: name.to_string(),
            block: table.blocks[block].clone(),
            index,
            address: table.blocks[block].stub_address(index),
            target: Mutex::new(Target::Unbound { what: format!("'{name}'") }),
            owner: AtomicU64::new(0),
            live: AtomicBool::new(false),
            resolving: AtomicU64::new(0),
        });
        table.by_slot.push(stub.clone());
        table.by_name.insert(name.to_string(), stub.clone());
        Ok(stub)
    }

    /// Definitions ORC asks for while linking: stubs of names with a target, then the
    /// library's dependent libraries (the process scope is searched after, in its own dylib).
    pub(super) fn resolve_for_link(&self, symbol: &str) -> Option<u64> {
        if let Some(stub) = self.stubs().by_name.get(symbol) {
            return stub.live.load(Ordering::Acquire).then_some(stub.address);
        }
        self.state().dependencies.iter().find_map(|l| l.symbol(symbol))
    }

    /// Whether `symbol` will resolve when a module of this library is linked.
    pub(super) fn can_resolve(&self, symbol: &str) -> bool {
        if self.resolve_for_link(symbol).is_some() || self.state().direct.contains_key(symbol) {
            return true;
        }
        let links = self.state().links.clone();
        links.iter().any(|l| l.resolve_for_link(symbol).is_some() || l.state().direct.contains_key(symbol))
            || self.session().process_scope_resolve(symbol).is_some()
    }

    /// Called by the stub trampoline for a stub whose slot leads to the resolver.
    pub(super) fn resolve_slot(&self, slot: usize) -> u64 {
        let stub = self.stubs().by_slot.get(slot).cloned();
        let Some(stub) = stub else {
            return stubs::failed_call_address();
        };
        match self.resolve_stub(&stub) {
            Ok(address) => address,
            Err(error) => {
                stubs::set_call_error(error);
                stubs::failed_call_address()
            }
        }
    }

    pub(super) fn resolve_stub(&self, stub: &Stub) -> Result<u64, EngineError> {
        let me = thread_token();
        if stub.resolving.load(Ordering::Acquire) == me {
            return Err(EngineError::Generator {
                library: self.inner.name.clone(),
                symbol: stub.name.clone(),
                message: "it was called while its own code was being generated".into(),
            });
        }
        // Another thread may be generating this function: wait for it without the GIL.
        let mut target = match stub.target.try_lock() {
            Ok(guard) => guard,
            Err(_) => blocking(|| stub.target.lock().unwrap_or_else(|e| e.into_inner())),
        };
        stub.resolving.store(me, Ordering::Release);
        let result = self.resolve_target(stub, &mut target);
        stub.resolving.store(0, Ordering::Release);
        result
    }

    pub(super) fn resolve_target(&self, stub: &Stub, target: &mut Target) -> Result<u64, EngineError> {
        match target {
            Target::Bound { address, .. } => Ok(*address),
            Target::Unbound { what } => Err(EngineError::Removed { library: self.inner.name.clone(), what: what.clone() }),
            Target::Lazy { module, source, function } => {
                let (module, source, function) = (*module, source.clone(), function.clone());
                let address = self.compile_lazy(module, &source, &function)?;
                self.retarget(stub, target, Target::Bound { address, module });
                Ok(address)
            }
            Target::Provider(provider) => {
                let provider = provider.clone();
                // Whatever goes wrong while generating is reported as the generator's failure.
                self.generate(stub, target, provider.as_ref()).map_err(|e| match e {
                    g @ EngineError::Generator { .. } => g,
                    other => EngineError::Generator {
                        library: self.inner.name.clone(),
                        symbol: stub.name.clone(),
                        message: other.to_string(),
                    },
                })
            }
        }
    }

    /// Runs `provider` for the stub being resolved, compiles and links what it returns and
    /// binds the stub (whose lock the caller holds as `target`).
    pub(super) fn generate(&self, stub: &Stub, target: &mut Target, provider: &dyn Provider) -> Result<u64, EngineError> {
        let failure = |message: String| EngineError::Generator {
            library: self.inner.name.clone(),
            symbol: stub.name.clone(),
            message,
        };
        let bytes = match provider.generate(&stub.name)? {
            Generated::Ir(bytes) => bytes,
            Generated::Object(_) => {
                return Err(failure("it returned an object file; generators must return IR text or bitcode".into()))
            }
        };
        let path = format!("<code generated for {}>", stub.name);
        let id = self.session().next_id();
        let prepared = self.prepare_eager(&bytes, &path, id)?;
        if !prepared.functions.contains(&stub.name) {
            return Err(failure(format!("the generated code does not define a function named '{}'", stub.name)));
        }
        self.install(id, &path, prepared, true, Some((stub, &mut *target)))?;
        match target {
            Target::Bound { address, .. } => Ok(*address),
            _ => Err(failure("the generated code was linked but did not bind the function".into())),
        }
    }

    /// Points `name` at `target`; the stub being resolved (whose lock the caller holds) is
    /// updated through its guard.
    pub(super) fn bind_new(&self, name: &str, target: Target, resolving: &mut Option<(&Stub, &mut Target)>) -> Result<(), EngineError> {
        match resolving.as_mut() {
            Some((stub, locked)) if stub.name == name => self.retarget(stub, locked, target),
            _ => {
                let stub = self.stub(name)?;
                self.set_target(&stub, target);
            }
        }
        Ok(())
    }
}
