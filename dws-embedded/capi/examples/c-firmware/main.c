/*
 * C firmware example: runs the reference fixtures embedded in flash
 * (fixtures.S) through the dws C API on a Cortex-M4F, with one static arena
 * for input, output and scratch, and no heap use by dws. Output and exit go
 * through semihosting (newlib + rdimon), so it runs under
 *   qemu-system-arm -machine netduinoplus2 -semihosting-config enable=on,target=native
 * Prints one line per case and "N passed, M failed"; exits non-zero on failure.
 */
#include "dws.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From librdimon: sets up stdin/stdout/stderr over semihosting. */
extern void initialise_monitor_handles(void);

/* link.ld: the stack reserve, [_stack_limit, _stack_top). */
extern uint32_t _stack_limit[];
extern uint32_t _stack_top[];
#define STACK_PAINT 0xDEADBEEFu

/* Called by Fault_Handler (startup.S) with the exception number (IPSR). */
void fw_fault(uint32_t ipsr);

struct fixture {
    const char *name;
    const uint8_t *blob; /* 16-byte aligned, in flash */
    uint32_t blob_len;
    const uint8_t *case_bytes;
    uint32_t case_len;
    uint32_t precision; /* DWS_PRECISION_F32 or DWS_PRECISION_I8 */
};

/* fixtures.S */
extern const struct fixture dws_fixtures[];
extern const uint32_t dws_fixture_count;

/* Input, output and scratch for one inference, in floats (16 KiB). */
#ifndef ARENA_FLOATS
#define ARENA_FLOATS 4096
#endif
static float arena[ARENA_FLOATS];

/* Caller-owned dws storage: static, hence zero-initialized. */
static dws_model model;
static dws_case reference;

static int passed;
static int failed;

static void result(int ok, const char *kind, const char *name, const char *detail)
{
    printf("%s %s %s%s%s\n", ok ? "ok  " : "FAIL", kind, name, detail[0] ? ": " : "", detail);
    if (ok) {
        passed++;
    } else {
        failed++;
    }
}

/* x * 1000, rounded, without printf's float support (not linked in). */
static unsigned permille(float x)
{
    return x >= 0.0f && x < 4.0e6f ? (unsigned)(x * 1000.0f + 0.5f) : 9999999u;
}

static void run_fixture(const struct fixture *f)
{
    char detail[160] = "";
    size_t ni, no, ns, k, batch;
    float *input, *output, *scratch;
    dws_check_report rep;
    dws_info info;
    float worst = 0.0f;
    dws_status st;
    int ok = 0;
    const char *kind = f->precision == DWS_PRECISION_I8 ? "fixture-int8" : "fixture";

    if ((st = dws_model_open(&model, f->blob, f->blob_len)) != DWS_OK) {
        snprintf(detail, sizeof detail, "dws_model_open: %s", dws_status_string(st));
        goto done;
    }
    if ((st = dws_case_open(&reference, f->case_bytes, f->case_len)) != DWS_OK) {
        snprintf(detail, sizeof detail, "dws_case_open: %s", dws_status_string(st));
        goto done;
    }
    if ((st = dws_model_info(&model, &info)) != DWS_OK || info.precision != f->precision) {
        snprintf(detail, sizeof detail, "dws_model_info: %s, precision %u",
                 dws_status_string(st), (unsigned)info.precision);
        goto done;
    }
    ni = dws_model_input_len(&model);
    no = dws_model_output_len(&model);
    ns = dws_model_scratch_len(&model);
    batch = dws_case_batch(&reference);
    if (ni + no + ns > ARENA_FLOATS) {
        snprintf(detail, sizeof detail, "needs %u floats, the arena has %u",
                 (unsigned)(ni + no + ns), (unsigned)ARENA_FLOATS);
        goto done;
    }
    input = arena;
    output = arena + ni;
    scratch = arena + ni + no;
    for (k = 0; k < batch; k++) {
        if ((st = dws_case_input(&reference, k, input, ni)) != DWS_OK ||
            (st = dws_run_f32(&model, input, ni, scratch, ns, output, no)) != DWS_OK) {
            snprintf(detail, sizeof detail, "input %u: %s", (unsigned)k, dws_status_string(st));
            goto done;
        }
        if ((st = dws_case_check_detail(&reference, k, output, no, &rep)) != DWS_OK) {
            snprintf(detail, sizeof detail, "input %u: %s (element %u)", (unsigned)k,
                     dws_status_string(st), (unsigned)rep.index);
            goto done;
        }
        if (rep.worst > worst) {
            worst = rep.worst;
        }
    }
    ok = batch > 0;
    if (f->precision == DWS_PRECISION_I8) {
        snprintf(detail, sizeof detail, "bit-exact");
    } else {
        snprintf(detail, sizeof detail, "worst %u/1000 of tolerance", permille(worst));
    }
    snprintf(detail + strlen(detail), sizeof detail - strlen(detail),
             ", %u inputs, blob %lu bytes in flash, scratch %u bytes", (unsigned)batch,
             (unsigned long)f->blob_len, (unsigned)(ns * sizeof(float)));
done:
    result(ok, kind, f->name, detail);
}

static void expect(const char *name, dws_status got, dws_status want)
{
    char detail[160];
    if (got == want) {
        snprintf(detail, sizeof detail, "%s", dws_status_string(got));
    } else {
        snprintf(detail, sizeof detail, "got %d (%s), want %d", (int)got,
                 dws_status_string(got), (int)want);
    }
    result(got == want, "bad-input", name, detail);
}

static void run_bad_inputs(const struct fixture *f)
{
    static dws_model unopened; /* zeroed, never opened */
    size_t ni, no, ns;
    float *input, *output, *scratch;

    if (dws_model_open(&model, f->blob, f->blob_len) != DWS_OK ||
        dws_case_open(&reference, f->case_bytes, f->case_len) != DWS_OK) {
        result(0, "bad-input", "setup", "the first fixture does not open");
        return;
    }
    ni = dws_model_input_len(&model);
    no = dws_model_output_len(&model);
    ns = dws_model_scratch_len(&model);
    input = arena;
    output = arena + ni;
    scratch = arena + ni + no;
    dws_case_input(&reference, 0, input, ni);

    expect("open-null-blob", dws_model_open(&unopened, NULL, f->blob_len), DWS_ERR_NULL);
    expect("open-misaligned-blob", dws_model_open(&unopened, f->blob + 1, f->blob_len - 1),
           DWS_ERR_MISALIGNED);
    expect("open-truncated", dws_model_open(&unopened, f->blob, f->blob_len - 4),
           DWS_ERR_TRUNCATED);
    expect("open-bad-magic", dws_model_open(&unopened, f->blob + 16, f->blob_len - 16),
           DWS_ERR_BAD_MAGIC);
    expect("run-unopened", dws_run_f32(&unopened, input, ni, scratch, ns, output, no),
           DWS_ERR_NOT_OPEN);
    expect("run-short-scratch", dws_run_f32(&model, input, ni, scratch, ns - 1, output, no),
           DWS_ERR_SCRATCH_TOO_SMALL);
    expect("run-wrong-input-len", dws_run_f32(&model, input, ni + 1, scratch, ns, output, no),
           DWS_ERR_INPUT_LENGTH);
    expect("run-overlap", dws_run_f32(&model, input, ni, scratch, ns, scratch, no),
           DWS_ERR_OVERLAP);
    input[0] = NAN;
    expect("run-nan-input", dws_run_f32(&model, input, ni, scratch, ns, output, no),
           DWS_ERR_NON_FINITE_INPUT);
    dws_case_input(&reference, 0, input, ni);
    expect("run-ok", dws_run_f32(&model, input, ni, scratch, ns, output, no), DWS_OK);
    output[0] += 1.0f + fabsf(output[0]);
    expect("check-perturbed", dws_case_check(&reference, 0, output, no), DWS_ERR_MISMATCH);
}

/* Fills the unused part of the stack reserve, to measure the high-water mark. */
static void paint_stack(void)
{
    uint32_t *p = _stack_limit;
    uint32_t *sp = (uint32_t *)__builtin_frame_address(0) - 64; /* keep clear of this frame */
    while (p < sp) {
        *p++ = STACK_PAINT;
    }
}

/* Bytes of the stack reserve that were ever used since paint_stack(). */
static size_t stack_used(void)
{
    const uint32_t *p = _stack_limit;
    while (p < _stack_top && *p == STACK_PAINT) {
        p++;
    }
    return (size_t)(_stack_top - p) * sizeof(uint32_t);
}

void fw_fault(uint32_t ipsr)
{
    printf("FAIL firmware: exception %lu (fault)\n", (unsigned long)(ipsr & 0x1FF));
    printf("%d passed, %d failed\n", passed, failed + 1);
    exit(3);
}

int main(void)
{
    uint32_t i;
    size_t stack, max_stack = 0, reserve = (size_t)(_stack_top - _stack_limit) * sizeof(uint32_t);
    char detail[96];
    initialise_monitor_handles();
    printf("dws %s C firmware on Cortex-M4F: %lu fixtures, arena %u bytes, "
           "sizeof(dws_model) %u\n",
           dws_version(), (unsigned long)dws_fixture_count, (unsigned)sizeof arena,
           (unsigned)sizeof(dws_model));
    for (i = 0; i < dws_fixture_count; i++) {
        paint_stack();
        run_fixture(&dws_fixtures[i]);
        stack = stack_used();
        printf("     stack high-water %u bytes\n", (unsigned)stack);
        max_stack = stack > max_stack ? stack : max_stack;
    }
    paint_stack();
    run_bad_inputs(&dws_fixtures[0]);
    stack = stack_used();
    max_stack = stack > max_stack ? stack : max_stack;
    /* Everything above ran on the stack reserve: check it kept a margin. */
    snprintf(detail, sizeof detail, "high-water %u of %u bytes", (unsigned)max_stack,
             (unsigned)reserve);
    result(max_stack + 1024 <= reserve, "stack", "reserve", detail);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
