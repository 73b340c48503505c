/* core/arch/text_end.S — last code of the runtime; see text_begin.S. */
        .text
        .globl  gort_text_end_
        .hidden gort_text_end_
gort_text_end_:
        .section .note.GNU-stack,"",@progbits
