/* core/arch/text_begin.S — first code of the runtime. The build links every runtime
 * object between this file and text_end.S into one relocatable object (ld -r), compiled
 * so that all of it stays in .text: [gort_text_begin_, gort_text_end_) is then exactly
 * the runtime's code, in a static link too, for the preemption safe-PC policy. */
        .text
        .globl  gort_text_begin_
        .hidden gort_text_begin_
gort_text_begin_:
        .section .note.GNU-stack,"",@progbits
