use std::sync::Arc;

use jitload_engine::{EngineError, Generated, Library, LibraryOptions, OptLevel, Provider, Session};

fn session() -> Arc<Session> {
    Arc::new(Session::new().expect("session"))
}

fn call2(lib: &Library, name: &str, a: i64, b: i64) -> i64 {
    let address = lib.address(name).expect("address");
    // SAFETY: (test) the IR below defines these as i64(i64, i64).
    let f: extern "C" fn(i64, i64) -> i64 = unsafe { std::mem::transmute(address as usize) };
    f(a, b)
}

const MATH: &str = r#"
@counter = global i64 0
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]
define internal void @init() {
  store i64 100, ptr @counter
  ret void
}
define i64 @add(i64 %a, i64 %b) {
  %s = add i64 %a, %b
  ret i64 %s
}
define i64 @twice_add(i64 %a, i64 %b) {
  %s = call i64 @add(i64 %a, i64 %b)
  %t = mul i64 %s, 2
  ret i64 %t
}
"#;

const USER: &str = r#"
declare i64 @add(i64, i64)
define i64 @use_add(i64 %a, i64 %b) {
  %s = call i64 @add(i64 %a, i64 %b)
  %t = add i64 %s, 1000
  ret i64 %t
}
"#;

const ADD_V2: &str = "define i64 @add(i64 %a, i64 %b) {\n  %s = sub i64 %a, %b\n  ret i64 %s\n}\n";

#[test]
fn add_lookup_call_and_constructors() {
    let lib = Library::new(session(), "math", LibraryOptions::default()).unwrap();
    lib.add_ir(MATH.as_bytes(), "math.ll", false).unwrap();
    assert_eq!(call2(&lib, "add", 2, 3), 5);
    assert_eq!(call2(&lib, "twice_add", 2, 3), 10);
    let counter = lib.address("counter").unwrap() as *const i64;
    // SAFETY: (test) counter is an i64 global of the module.
    assert_eq!(unsafe { *counter }, 100, "constructor ran");
    assert_eq!(lib.symbols(), vec!["add", "counter", "twice_add"]);
}

#[test]
fn replace_reaches_callers_in_other_modules() {
    let lib = Library::new(session(), "r", LibraryOptions::default()).unwrap();
    lib.add_ir(MATH.as_bytes(), "math.ll", false).unwrap();
    lib.add_ir(USER.as_bytes(), "user.ll", false).unwrap();
    assert_eq!(call2(&lib, "use_add", 5, 3), 1008);
    let dup = lib.add_ir(ADD_V2.as_bytes(), "v2.ll", false).unwrap_err();
    assert!(matches!(dup, EngineError::Duplicate { .. }), "{dup}");
    lib.add_ir(ADD_V2.as_bytes(), "v2.ll", true).unwrap();
    assert_eq!(call2(&lib, "add", 5, 3), 2);
    assert_eq!(call2(&lib, "use_add", 5, 3), 1002, "the other module's call reaches the new body");
}

#[test]
fn remove_unbinds_and_reports() {
    let lib = Library::new(session(), "rm", LibraryOptions::default()).unwrap();
    let math = lib.add_ir(MATH.as_bytes(), "math.ll", false).unwrap();
    lib.add_ir(USER.as_bytes(), "user.ll", false).unwrap();
    lib.remove_module(math).unwrap();
    assert!(matches!(lib.address("add"), Err(EngineError::Removed { .. })));
    assert!(matches!(lib.address("counter"), Err(EngineError::NotFound { .. })));
    // The other module still links to `add`'s stub: the call fails cleanly.
    assert_eq!(call2(&lib, "use_add", 1, 1), 1000, "add returned 0 through the failure path");
    let err = jitload_engine::stubs::take_call_error().expect("call error recorded");
    assert!(err.to_string().contains("'add'"), "{err}");
    assert!(matches!(lib.remove_module(math), Err(EngineError::Removed { .. })));
    // Adding `add` again rebinds the same stub.
    lib.add_ir(ADD_V2.as_bytes(), "v2.ll", false).unwrap();
    assert_eq!(call2(&lib, "use_add", 5, 3), 1002);
}

#[test]
fn link_order_between_libraries() {
    let s = session();
    let base = Library::new(s.clone(), "base", LibraryOptions::default()).unwrap();
    base.add_ir(MATH.as_bytes(), "math.ll", false).unwrap();
    let app = Library::new(s, "app", LibraryOptions::default()).unwrap();
    let err = app.add_ir(USER.as_bytes(), "user.ll", false).unwrap_err();
    assert!(matches!(err, EngineError::Unresolved { .. }), "{err}");
    app.link(&base).unwrap();
    app.add_ir(USER.as_bytes(), "user.ll", false).unwrap();
    assert_eq!(call2(&app, "use_add", 1, 2), 1003);
}

#[test]
fn lazy_library_compiles_on_first_call() {
    let lib = Library::new(session(), "lazy", LibraryOptions { lazy: true, opt_level: OptLevel::O2, ..Default::default() }).unwrap();
    let ir = format!("{MATH}\ndefine internal i64 @helper(i64 %x) {{\n %y = mul i64 %x, 3\n ret i64 %y\n}}\ndefine i64 @triple(i64 %a, i64 %b) {{\n %y = call i64 @helper(i64 %a)\n ret i64 %y\n}}\n");
    lib.add_ir(ir.as_bytes(), "lazy.ll", false).unwrap();
    assert_eq!(call2(&lib, "twice_add", 2, 3), 10);
    assert_eq!(call2(&lib, "triple", 7, 0), 21);
    let counter = lib.address("counter").unwrap() as *const i64;
    // SAFETY: (test) counter is an i64 global of the module.
    assert_eq!(unsafe { *counter }, 100);
}

struct Gen;
impl Provider for Gen {
    fn generate(&self, symbol: &str) -> Result<Generated, EngineError> {
        match symbol {
            "gen_mul" => Ok(Generated::Ir(b"define i64 @gen_mul(i64 %a, i64 %b) {\n %m = mul i64 %a, %b\n ret i64 %m\n}\n".to_vec())),
            _ => Ok(Generated::Ir(b"define i64 @something_else() {\n ret i64 0\n}\n".to_vec())),
        }
    }
}

#[test]
fn define_lazy_generates_on_first_call() {
    let lib = Library::new(session(), "gen", LibraryOptions::default()).unwrap();
    lib.define_lazy("gen_mul", Arc::new(Gen), false).unwrap();
    lib.define_lazy("gen_bad", Arc::new(Gen), false).unwrap();
    lib.add_ir(
        b"declare i64 @gen_mul(i64, i64)\ndefine i64 @caller(i64 %a, i64 %b) {\n %m = call i64 @gen_mul(i64 %a, i64 %b)\n ret i64 %m\n}\n",
        "c.ll",
        false,
    )
    .unwrap();
    let r = call2(&lib, "caller", 6, 7);
    assert_eq!(r, 42, "{:?}", jitload_engine::stubs::take_call_error().map(|e| e.to_string()));
    assert_eq!(call2(&lib, "gen_mul", 2, 3), 6);
    assert_eq!(call2(&lib, "gen_bad", 2, 3), 0);
    let err = jitload_engine::stubs::take_call_error().expect("error");
    assert!(matches!(err, EngineError::Generator { .. }), "{err}");
}

#[test]
fn missing_symbol_suggests_close_names() {
    let lib = Library::new(session(), "m", LibraryOptions::default()).unwrap();
    lib.add_ir(MATH.as_bytes(), "math.ll", false).unwrap();
    match lib.address("ad") {
        Err(EngineError::NotFound { close, .. }) => assert!(close.contains(&"add".to_string()), "{close:?}"),
        other => panic!("{:?}", other.map_err(|e| e.to_string())),
    }
}
