//! A module kept beyond the call that read it, with the context it lives in: what a lazy
//! library and a tiered import compile their functions from, one at a time, later.

use crate::error::EngineError;
use crate::llvm::context::Context;
use crate::llvm::guard::guarded;
use crate::llvm::module::Module;

/// A module and its own context, disposed together (the module first).
pub struct KeptModule {
    // Field order matters: the module is disposed before its context.
    module: Option<Module<'static>>,
    _context: Box<Context>,
}

// SAFETY: the module and its context are used by one thread at a time (the owners keep a
// `KeptModule` behind a Mutex) and LLVM contexts may move between threads.
unsafe impl Send for KeptModule {}

impl KeptModule {
    /// Runs `work` in a fresh context under crash recovery and keeps the module it returns.
    /// After an error the context is disposed under the guard (after a failed parse that can
    /// crash); after a crash it is abandoned.
    pub fn build<T>(path: &str, work: impl FnOnce(&'static Context) -> Result<(Module<'static>, T), EngineError>) -> Result<(KeptModule, T), EngineError> {
        let context = Box::new(Context::new());
        // SAFETY: the module borrows the boxed context, which KeptModule keeps at a stable
        // heap address and disposes after the module.
        let ctx: &'static Context = unsafe { &*(&*context as *const Context) };
        match guarded(|| work(ctx)) {
            Ok(Ok((module, value))) => Ok((KeptModule { module: Some(module), _context: context }, value)),
            Ok(Err(e)) => {
                let _ = guarded(move || drop(context));
                Err(e)
            }
            Err(reason) => {
                std::mem::forget(context);
                Err(EngineError::LlvmCrash { path: path.to_string(), reason })
            }
        }
    }

    pub fn module(&self) -> Option<&Module<'static>> {
        self.module.as_ref()
    }
}

impl Drop for KeptModule {
    fn drop(&mut self) {
        self.module = None;
    }
}
