# Used by tests/regressions/repro_symbol_pool_growth.py --trap (see its docstring).
set pagination off
set breakpoint pending on
handle SIGTRAP stop nopass
break LLVMOrcExecutionSessionIntern
commands 1
  silent
  set $session = $rdi
  disable 1
  continue
end
run
# Stopped by the script's SIGTRAP: drop the pool's dead entries, then let it measure again.
print $session
call (void) LLVMOrcSymbolStringPoolClearDeadEntries(((void *(*)(void *)) LLVMOrcExecutionSessionGetSymbolStringPool)($session))
continue
