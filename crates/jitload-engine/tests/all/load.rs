use jitload_engine::{EngineError, LoadOptions, Session};

const ADD: &str = r#"
@counter = global i64 0
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]
define internal void @init() {
  store i64 41, ptr @counter
  ret void
}
define i64 @add(i64 %a, i64 %b) {
  %s = add i64 %a, %b
  %c = load i64, ptr @counter
  %r = add i64 %s, %c
  ret i64 %r
}
"#;

#[test]
fn ir_text_is_compiled_and_constructors_run() {
    let session = Session::new().expect("session");
    let opts = LoadOptions { required_symbol: Some("add".into()), ..Default::default() };
    let loaded = session.load_bytes(ADD.as_bytes(), "add.ll", &opts).expect("load");
    // SAFETY: the engine lowered the module's constructors into this `void()` function.
    let ctor: extern "C" fn() = unsafe { std::mem::transmute(loaded.constructors.expect("ctor") as usize) };
    ctor();
    // SAFETY: `add` is defined in the IR above as i64(i64, i64) and stays linked while `loaded` lives.
    let add: extern "C" fn(i64, i64) -> i64 = unsafe { std::mem::transmute(loaded.required_address.unwrap() as usize) };
    assert_eq!(add(1, 2), 44);
}

#[test]
fn all_unresolved_symbols_are_listed_at_once() {
    let session = Session::new().expect("session");
    let ir = "declare i64 @nope_one()\ndeclare i64 @nope_two()\ndefine i64 @f() {\n %a = call i64 @nope_one()\n %b = call i64 @nope_two()\n %c = add i64 %a, %b\n ret i64 %c\n}\n";
    let err = session.load_bytes(ir.as_bytes(), "m.ll", &LoadOptions::default()).err().expect("must fail");
    match &err {
        EngineError::Unresolved { symbols, .. } => assert_eq!(symbols, &["nope_one", "nope_two"]),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn process_symbols_resolve() {
    let session = Session::new().expect("session");
    let ir = "declare i64 @strlen(ptr)\n@s = private constant [4 x i8] c\"abc\\00\"\ndefine i64 @f() {\n %n = call i64 @strlen(ptr @s)\n ret i64 %n\n}\n";
    let opts = LoadOptions { required_symbol: Some("f".into()), ..Default::default() };
    let loaded = session.load_bytes(ir.as_bytes(), "s.ll", &opts).expect("load");
    // SAFETY: `f` is defined in the IR above as i64() and stays linked while `loaded` lives.
    let f: extern "C" fn() -> i64 = unsafe { std::mem::transmute(loaded.required_address.unwrap() as usize) };
    assert_eq!(f(), 3);
}

#[test]
fn syntax_errors_name_line_and_column() {
    let session = Session::new().expect("session");
    let err = session.load_bytes(b"define i64 @f( {\n", "bad.ll", &LoadOptions::default()).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, EngineError::IrSyntax { .. }), "{text}");
    assert!(text.contains("bad.ll:2:1: error: expected type"), "{text}");
}
