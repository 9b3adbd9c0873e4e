; Fuzz seed: IR features C does not show: aliases, ifuncs-free globals, atomics, exceptions-free
; intrinsics, a global constructor, target attributes, metadata, comdats.
target triple = "x86_64-pc-linux-gnu"

$c = comdat any
@g = global i64 0, align 8
@arr = internal constant [4 x i32] [i32 1, i32 2, i32 3, i32 4]
@c = linkonce_odr global i32 9, comdat
@alias_f = alias i64 (i64), ptr @f
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @ctor, ptr null }]

define internal void @ctor() {
  store i64 1, ptr @g
  ret void
}

define i64 @f(i64 %x) #0 {
entry:
  %old = atomicrmw add ptr @g, i64 %x seq_cst
  %p = getelementptr [4 x i32], ptr @arr, i64 0, i64 1
  %v = load i32, ptr %p
  %w = sext i32 %v to i64
  %c = call i64 @llvm.ctpop.i64(i64 %old)
  %r = add i64 %w, %c
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %n, %loop ]
  %n = add i64 %i, 1
  %done = icmp eq i64 %n, %x
  br i1 %done, label %exit, label %loop, !llvm.loop !0
exit:
  %s = select i1 %done, i64 %r, i64 0
  ret i64 %s
}

define <4 x float> @vec(<4 x float> %a, <4 x float> %b) {
  %m = fmul fast <4 x float> %a, %b
  %s = shufflevector <4 x float> %m, <4 x float> %a, <4 x i32> <i32 0, i32 5, i32 2, i32 7>
  ret <4 x float> %s
}

declare i64 @llvm.ctpop.i64(i64)

attributes #0 = { nounwind "target-cpu"="x86-64" "target-features"="+sse2" }
!0 = distinct !{!0, !1}
!1 = !{!"llvm.loop.unroll.disable"}
