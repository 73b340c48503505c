/* trackheap/switch.S — th_switch_call(arg, fn, top): calls fn(arg) with the stack
 * pointer at top (16-aligned), then returns on the caller's stack. The frame-pointer
 * chain and the CFI lead back to the caller, so backtraces cross the switch. In the
 * layer's section: a task is never stopped here (trackheap/th.h). */
    .section gort_trackheap_text,"ax",@progbits
    .globl th_switch_call
    .hidden th_switch_call
    .type th_switch_call,@function
    .p2align 4
th_switch_call:
    .cfi_startproc
    pushq %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    movq %rsp, %rbp
    .cfi_def_cfa_register %rbp
    movq %rdx, %rsp
    call *%rsi
    movq %rbp, %rsp
    popq %rbp
    .cfi_def_cfa %rsp, 8
    ret
    .cfi_endproc
    .size th_switch_call, .-th_switch_call
    .section .note.GNU-stack,"",@progbits
