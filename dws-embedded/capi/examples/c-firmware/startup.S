/*
 * Minimal Cortex-M4F startup: vector table and reset handler.
 * The reset handler enables the FPU before any code can use it, copies .data
 * from flash, zeroes .bss, then runs main() and exit()s with its result.
 */
    .syntax unified
    .cpu cortex-m4
    .fpu fpv4-sp-d16
    .thumb

    .section .isr_vector, "a", %progbits
    .align 2
    .global vector_table
vector_table:
    .word _stack_top            /* initial stack pointer */
    .word Reset_Handler
    .word Fault_Handler         /* NMI */
    .word Fault_Handler         /* HardFault */
    .word Fault_Handler         /* MemManage */
    .word Fault_Handler         /* BusFault */
    .word Fault_Handler         /* UsageFault */
    .word 0, 0, 0, 0
    .word Fault_Handler         /* SVCall */
    .word Fault_Handler         /* DebugMonitor */
    .word 0
    .word Fault_Handler         /* PendSV */
    .word Fault_Handler         /* SysTick */
    /* No peripheral interrupt is ever enabled: the table stops here. */

    .text
    .thumb_func
    .global Reset_Handler
    .type Reset_Handler, %function
Reset_Handler:
    /* CPACR |= 0xF << 20: full access to CP10 and CP11 (the FPU). */
    ldr r0, =0xE000ED88
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    dsb
    isb

    /* Copy .data from its load address in flash. */
    ldr r0, =_sdata
    ldr r1, =_edata
    ldr r2, =_sidata
1:  cmp r0, r1
    bhs 2f
    ldr r3, [r2], #4
    str r3, [r0], #4
    b 1b

    /* Zero .bss. */
2:  ldr r0, =_sbss
    ldr r1, =_ebss
    movs r3, #0
3:  cmp r0, r1
    bhs 4f
    str r3, [r0], #4
    b 3b

4:  bl main
    bl exit                     /* newlib + rdimon: semihosting exit with main's status */
5:  b 5b
    .size Reset_Handler, . - Reset_Handler

    /* Every exception lands here: report the exception number and stop. */
    .thumb_func
    .global Fault_Handler
    .type Fault_Handler, %function
Fault_Handler:
    mrs r0, ipsr
    b fw_fault
    .size Fault_Handler, . - Fault_Handler
