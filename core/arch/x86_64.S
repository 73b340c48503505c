/* core/arch/x86_64.S — the only assembly of the runtime on x86-64 (System V ABI).
 *
 * A suspended task's context lives on its own stack, pushed by ctx_switch:
 *     sp ->  [x87 control word], zero-extended to 8 bytes
 *            [mxcsr], zero-extended to 8 bytes
 *            r15 r14 r13 r12 rbx rbp   6 x 8 bytes
 *            return address            8 bytes
 * Only callee-saved state is saved: a switch is a call, so the caller already
 * assumes everything else is clobbered. The layout is shared with ctx_init (switch.c)
 * and with the stack mover, which relocates saved rbp/rsp values.
 */
        .text

/* Pops what ctx_switch and call_with_callee_saves push: rbp rbx r12 r13 r14 r15. */
.macro  callee_saved_pop
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
.endm

/* void ctx_switch(void **save_sp, void *load_sp)
 * Saves the current context at *save_sp and resumes the one at load_sp. The store to
 * *save_sp happens before the first load from the new stack; whoever publishes the
 * switched-out task to other Ms does so only after this returns on the new stack
 * ("switch, then release"), so no other M can resume a half-saved context. */
        .globl  ctx_switch
        .hidden ctx_switch
        .type   ctx_switch, @function
        .p2align 4
ctx_switch:
        .cfi_startproc
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $16, %rsp
        stmxcsr 8(%rsp)
        fnstcw  (%rsp)
        movl    8(%rsp), %eax
        movzwl  (%rsp), %ecx
        /* Whole words back: stmxcsr and fnstcw write 4 and 2 bytes, and the rest of
         * each slot kept an old stack word's upper half, so 0x00007fXX_00001f80 could
         * look like a stack address to the stack mover's conservative pass, which
         * "relocated" it into an mxcsr with reserved bits set: #GP at the ldmxcsr of
         * the next resume (test_guard normal_tasks, ~1 run in 200 under load). */
        movq    %rax, 8(%rsp)
        movq    %rcx, (%rsp)
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        /* ldmxcsr and fldcw serialise the FP control state (several cycles each, more
         * than a switch's whole budget): load only what differs, which is almost never
         * (rax, rcx: caller-saved, free at a call). */
        cmpl    8(%rsp), %eax
        jne     1f
2:      cmpw    (%rsp), %cx
        jne     3f
4:      addq    $16, %rsp
        callee_saved_pop
        ret
1:      ldmxcsr 8(%rsp)
        jmp     2b
3:      fldcw   (%rsp)
        jmp     4b
        .cfi_endproc
        .size   ctx_switch, .-ctx_switch

/* The first "return" of a new task lands here, with r12 = argument and r13 = entry
 * function (set by ctx_init). rbp = 0 ends the frame-pointer chain for walkers. The
 * entry function never returns. */
        .globl  ctx_entry
        .hidden ctx_entry
        .type   ctx_entry, @function
        .p2align 4
ctx_entry:
        .cfi_startproc
        .cfi_undefined rip
        xorl    %ebp, %ebp
        movq    %r12, %rdi
        andq    $-16, %rsp
        callq   *%r13
        ud2
        .cfi_endproc
        .size   ctx_entry, .-ctx_entry

/* A frame record (push rbp; rbp = rsp) with its unwind notes: unwinders and the stack
 * mover's frame-pointer chain walk through the functions below as through C code. */
.macro  frame_enter
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset rbp, 0
        movq    %rsp, %rbp
        .cfi_def_cfa_register rbp
.endm

/* void *stack_call_on(void *(*fn)(void *), void *arg, void *sp)
 * Calls fn(arg) with the stack pointer set to sp (16-byte aligned, on another stack)
 * and returns its result on the original stack. rbp keeps pointing into the caller's
 * frame, so a backtrace from fn shows the task's frames after the system-stack ones. */
        .globl  stack_call_on
        .hidden stack_call_on
        .type   stack_call_on, @function
        .p2align 4
stack_call_on:
        .cfi_startproc
        frame_enter
        movq    %rdi, %rax
        movq    %rsi, %rdi
        movq    %rdx, %rsp
        callq   *%rax
        movq    %rbp, %rsp
        popq    %rbp
        .cfi_def_cfa rsp, 8
        ret
        .cfi_endproc
        .size   stack_call_on, .-stack_call_on

/* uintptr_t call_with_callee_saves(fn, a, b, c, d)
 * Pushes rbx, rbp and r12-r15 as they were at the call, then returns
 * fn(a, b, c, d, sp) with sp the address of that block: [sp, ...) is the caller's live
 * stack with its callee-saved registers in it, and nothing of fn's frames. The leak
 * detector scans the calling task from there; a start inside its own frames would read
 * their uninitialised slots, stale words of earlier deeper calls (a planted channel
 * pointer, and its leak missed). */
        .globl  call_with_callee_saves
        .hidden call_with_callee_saves
        .type   call_with_callee_saves, @function
        .p2align 4
call_with_callee_saves:
        .cfi_startproc
        frame_enter
        pushq   %rbx
        .cfi_rel_offset rbx, -8
        pushq   %r12
        .cfi_rel_offset r12, -16
        pushq   %r13
        .cfi_rel_offset r13, -24
        pushq   %r14
        .cfi_rel_offset r14, -32
        pushq   %r15
        .cfi_rel_offset r15, -40
        movq    %rdi, %rax
        movq    %rsi, %rdi
        movq    %rdx, %rsi
        movq    %rcx, %rdx
        movq    %r8, %rcx
        movq    %rsp, %r8
        subq    $8, %rsp              /* 6 pushes after the return address: realign */
        callq   *%rax
        addq    $8, %rsp
        callee_saved_pop
        .cfi_def_cfa rsp, 8
        ret
        .cfi_endproc
        .size   call_with_callee_saves, .-call_with_callee_saves

/* The register block of gort_morestack and preempt_async_entry (their C halves read
 * it as an array, last pushed first): rax rcx rdx rsi rdi r8-r11 rbx, then rbp if
 * with_rbp (preempt_async_entry pushed rbp before rflags, as a frame record), then
 * r12-r15. One definition, so the two blocks and their readers cannot drift apart. */
.macro  regs_push with_rbp
        pushq   %rax
        pushq   %rcx
        pushq   %rdx
        pushq   %rsi
        pushq   %rdi
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        pushq   %rbx
.if \with_rbp
        pushq   %rbp
.endif
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
.endm

.macro  regs_pop with_rbp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
.if \with_rbp
        popq    %rbp
.endif
        popq    %rbx
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx
        popq    %rax
.endm

/* Every enabled xsave component (edx:eax = all ones) to or from the area at \area. */
.macro  xsave_all area
        movl    $-1, %eax
        movl    $-1, %edx
        xsave64 (\area)
.endm
.macro  xrstor_all area
        movl    $-1, %eax
        movl    $-1, %edx
        xrstor64 (\area)
.endm

/* gort_morestack — the slow path of GORT_FRAME. Entered by an inline-asm call made
 * 128 bytes below the caller's rsp (the red zone is left untouched), so every register
 * is live and must come back unchanged, except where the stack moved (then the saved
 * values were relocated in place by the mover). Saves all general registers and rflags
 * on the task stack, the vector state (xsave, every enabled component) in this M's
 * scratch area, and calls morestack_slow(regs, scratch), which returns, in rax:rdx,
 * where the register block now is (the stack may have moved) and the xsave area to
 * restore from (the task may resume on another M, with its state copied aside). */
        .globl  gort_morestack
        .type   gort_morestack, @function
        .globl  gort_morestack_rt_
        .hidden gort_morestack_rt_
        .p2align 4
gort_morestack:
gort_morestack_rt_: /* the runtime's own entry (RT_ENTRY_CHECK, rt.h): no PLT */
        .cfi_startproc
        pushfq
        regs_push 1
        movq    %rsp, %rbx
        andq    $-16, %rsp
        callq   morestack_xsave_scratch /* general-registers-only C: no vector use */
        movq    %rax, %r12
        xsave_all %r12
        movq    %rbx, %rdi
        movq    %r12, %rsi
        callq   morestack_slow
        movq    %rax, %rbx
        movq    %rdx, %r12
        xrstor_all %r12
        movq    %rbx, %rsp
        regs_pop 1
        popfq
        ret
        .cfi_endproc
        .size   gort_morestack, .-gort_morestack

/* preempt_async_entry — where a task stopped by SIGURG resumes after the handler
 * (preempt/signal.c). The handler left every register as the task had it, except:
 * rsp = the task's rsp - 128 - 8 (the red zone is left untouched) and [rsp] = the
 * interrupted PC, as if the PC had called here from below its red zone. The stub
 * builds a frame record {task rbp, interrupted PC} (so frame-pointer walkers such as
 * gort_dump_tasks see the interrupted function), saves rflags and every general
 * register on the task stack, the vector state (xsave, every enabled component) in the
 * task's own area (g->xsave, allocated before the signal), and calls
 * preempt_async_park(regs), which yields to the scheduler. When the task runs again,
 * possibly on another M, everything is restored and `ret $128` returns to the
 * interrupted PC with rsp as it was. Flags: only pushfq/popfq touch them around the
 * C calls (lea, not add, moves rsp). */
        .globl  preempt_async_entry
        .hidden preempt_async_entry
        .type   preempt_async_entry, @function
        .p2align 4
preempt_async_entry:
        .cfi_startproc
        .cfi_signal_frame
        .cfi_def_cfa rsp, 136
        .cfi_offset rip, -136
        pushq   %rbp
        .cfi_def_cfa rsp, 144
        .cfi_offset rbp, -144
        movq    %rsp, %rbp
        .cfi_def_cfa rbp, 144
        pushfq
        cld
        regs_push 0
        movq    %rsp, %rbx
        andq    $-16, %rsp
        callq   preempt_async_xsave_area /* general-registers-only C: no vector use */
        movq    %rax, %r12
        xsave_all %r12
        movq    %rbx, %rdi
        callq   preempt_async_park
        movq    %rax, %r12
        xrstor_all %r12
        movq    %rbx, %rsp
        regs_pop 0
        popfq
        popq    %rbp
        .cfi_def_cfa rsp, 136
        ret     $128
        .cfi_endproc
        .size   preempt_async_entry, .-preempt_async_entry

        .section .note.GNU-stack,"",@progbits
