//! The engine's one integration-test binary (one module per topic links LLVM once).

mod library;
mod load;
