/*
 * C test of the dws C ABI (dws-embedded/capi/include/dws.h).
 *
 * Usage: test_dws LABEL BAD_INPUT_FIXTURE_DIR FIXTURE_DIR...
 *
 * Runs every input of every fixture (model.dws + case.bin, and the int8
 * model.int8.dws + case_int8.bin and 16x8 model.16x8.dws + case_16x8.bin
 * where present) through dws_run_f32 and checks
 * it with dws_case_check, then feeds the API bad inputs (NULL
 * pointers, damaged blobs, short buffers, ...) built from BAD_INPUT_FIXTURE_DIR
 * and checks each gives its status code. Prints one line per case and closes
 * with "LABEL: N passed, M failed". Exit status 0 when nothing failed.
 */
#include "dws.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *label = "c";
static int passed = 0;
static int failed = 0;

static void report(int ok, const char *kind, const char *name, const char *detail)
{
    printf("%s %s %s %s%s%s\n", ok ? "ok  " : "FAIL", label, kind, name,
           detail[0] ? ": " : "", detail);
    if (ok) {
        passed++;
    } else {
        failed++;
    }
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint8_t *data; /* malloc'd: aligned for any type, so 4-byte aligned */
    size_t len;
} file_buf;

static int read_file(const char *path, file_buf *out)
{
    FILE *f = fopen(path, "rb");
    long n;
    out->data = NULL;
    out->len = 0;
    if (f == NULL) {
        return 0;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    out->len = (size_t)n;
    out->data = malloc(out->len ? out->len : 1);
    if (out->data == NULL || fread(out->data, 1, out->len, f) != out->len) {
        fclose(f);
        free(out->data);
        out->data = NULL;
        return 0;
    }
    fclose(f);
    return ((uintptr_t)out->data % 4) == 0;
}

static int load_files(const char *dir, const char *blob_file, const char *case_file,
                      file_buf *blob, file_buf *cas)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, blob_file);
    if (!read_file(path, blob)) {
        return 0;
    }
    snprintf(path, sizeof path, "%s/%s", dir, case_file);
    if (!read_file(path, cas)) {
        free(blob->data);
        blob->data = NULL;
        return 0;
    }
    return 1;
}

static int load_fixture(const char *dir, file_buf *blob, file_buf *cas)
{
    return load_files(dir, "model.dws", "case.bin", blob, cas);
}

static int file_exists(const char *dir, const char *file)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    f = fopen(path, "rb");
    if (f != NULL) {
        fclose(f);
    }
    return f != NULL;
}

static const char *base_name(const char *dir)
{
    const char *s = strrchr(dir, '/');
    return s ? s + 1 : dir;
}

/* Same CRC-32 as the blob container (zlib's). */
static uint32_t crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) {
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
    }
    return ~c;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                  */
/* ------------------------------------------------------------------------ */

/* Runs every input of one model/case pair; `kind` is "fixture" (f32 model
 * against upstream PyTorch), "fixture-int8" or "fixture-16x8" (quantized
 * model against the core's golden outputs, exact). */
static void run_fixture(const char *dir, const char *blob_file, const char *case_file,
                        const char *kind, uint32_t precision)
{
    const char *name = base_name(dir);
    char detail[512] = "";
    char case_name[128];
    file_buf blob, cas;
    dws_model model;
    dws_case c;
    dws_info info;
    dws_check_report rep;
    float *input = NULL, *scratch = NULL, *output = NULL;
    size_t k, ni, no, ns, batch;
    float worst = 0.0f;
    dws_status st;
    int ok = 0;

    memset(&model, 0, sizeof model);
    memset(&c, 0, sizeof c);
    if (!load_files(dir, blob_file, case_file, &blob, &cas)) {
        snprintf(detail, sizeof detail, "cannot read %s/%s and %s", dir, blob_file, case_file);
        report(0, kind, name, detail);
        return;
    }
    if ((st = dws_model_open(&model, blob.data, blob.len)) != DWS_OK) {
        snprintf(detail, sizeof detail, "dws_model_open: %s", dws_status_string(st));
        goto done;
    }
    if ((st = dws_case_open(&c, cas.data, cas.len)) != DWS_OK) {
        snprintf(detail, sizeof detail, "dws_case_open: %s", dws_status_string(st));
        goto done;
    }
    if ((st = dws_model_info(&model, &info)) != DWS_OK) {
        snprintf(detail, sizeof detail, "dws_model_info: %s", dws_status_string(st));
        goto done;
    }
    if ((st = dws_case_name(&c, case_name, sizeof case_name)) != DWS_OK ||
        strcmp(case_name, name) != 0) {
        snprintf(detail, sizeof detail, "case name '%s' (%s)", case_name,
                 dws_status_string(st));
        goto done;
    }
    ni = dws_model_input_len(&model);
    no = dws_model_output_len(&model);
    ns = dws_model_scratch_len(&model);
    batch = dws_case_batch(&c);
    if (ni != dws_case_input_len(&c) || no != dws_case_output_len(&c) || batch == 0 ||
        ni != info.input_len || no != info.output_len || ns != info.scratch_len ||
        info.precision != precision ||
        (info.is_classifier ? info.num_classes != no : info.output_features == 0)) {
        snprintf(detail, sizeof detail,
                 "model and case disagree: model in %zu out %zu precision %u, case in %zu out "
                 "%zu batch %zu",
                 ni, no, (unsigned)info.precision, dws_case_input_len(&c),
                 dws_case_output_len(&c), batch);
        goto done;
    }
    input = malloc(ni * sizeof *input);
    scratch = malloc((ns ? ns : 1) * sizeof *scratch);
    output = malloc(no * sizeof *output);
    if (input == NULL || scratch == NULL || output == NULL) {
        snprintf(detail, sizeof detail, "out of memory");
        goto done;
    }
    for (k = 0; k < batch; k++) {
        if ((st = dws_case_input(&c, k, input, ni)) != DWS_OK) {
            snprintf(detail, sizeof detail, "dws_case_input %zu: %s", k, dws_status_string(st));
            goto done;
        }
        st = dws_run_f32(&model, input, ni, scratch, ns, output, no);
        if (st != DWS_OK) {
            snprintf(detail, sizeof detail, "dws_run_f32 input %zu: %s", k,
                     dws_status_string(st));
            goto done;
        }
        st = dws_case_check_detail(&c, k, output, no, &rep);
        if (st != DWS_OK) {
            snprintf(detail, sizeof detail,
                     "input %zu: %s (tensor %zu element %zu: diff %g > allowed %g)", k,
                     dws_status_string(st), rep.tensor, rep.index, (double)rep.diff,
                     (double)rep.allowed);
            goto done;
        }
        if (rep.worst > worst) {
            worst = rep.worst;
        }
    }
    ok = 1;
    if (precision == DWS_PRECISION_I8) {
        snprintf(detail, sizeof detail, "bit-exact");
    } else {
        snprintf(detail, sizeof detail, "worst %.3f of tolerance", (double)worst);
    }
    snprintf(detail + strlen(detail), sizeof detail - strlen(detail),
             ", %zu inputs, %s, %u weight matrices, in %zu out %zu scratch %zu floats", batch,
             info.is_classifier ? "classifier" : "weight space", info.num_weight_matrices, ni,
             no, ns);
done:
    report(ok, kind, name, detail);
    free(input);
    free(scratch);
    free(output);
    free(blob.data);
    free(cas.data);
}

/* ------------------------------------------------------------------------ */
/* Bad inputs                                                                */
/* ------------------------------------------------------------------------ */

static void expect(const char *name, dws_status got, dws_status want)
{
    char detail[256] = "";
    if (got != want) {
        snprintf(detail, sizeof detail, "got %d (%s), want %d (%s)", (int)got,
                 dws_status_string(got), (int)want, dws_status_string(want));
    } else {
        snprintf(detail, sizeof detail, "%d (%s)", (int)got, dws_status_string(got));
    }
    report(got == want, "bad-input", name, detail);
}

static void expect_true(const char *name, int cond, const char *what)
{
    report(cond, "bad-input", name, cond ? "as expected" : what);
}

/* A copy of the blob with one edit, in a fresh malloc'd buffer. */
static uint8_t *copy_of(const file_buf *b, size_t extra)
{
    uint8_t *p = malloc(b->len + extra);
    if (p != NULL) {
        memcpy(p, b->data, b->len);
        memset(p + b->len, 0, extra);
    }
    return p;
}

static void run_bad_inputs(const char *dir)
{
    file_buf blob, cas;
    dws_model model, zero_model, copy;
    dws_case c, zero_case;
    dws_check_report rep;
    float *input, *scratch, *output, *big;
    uint8_t *p, *raw;
    size_t ni, no, ns, i;
    char name_buf[4];
    dws_status st;

    if (!load_fixture(dir, &blob, &cas)) {
        report(0, "bad-input", "setup", "cannot read the bad-input fixture");
        return;
    }
    memset(&zero_model, 0, sizeof zero_model);
    memset(&zero_case, 0, sizeof zero_case);
    memset(&model, 0, sizeof model);
    memset(&c, 0, sizeof c);
    if (dws_model_open(&model, blob.data, blob.len) != DWS_OK ||
        dws_case_open(&c, cas.data, cas.len) != DWS_OK) {
        report(0, "bad-input", "setup", "the bad-input fixture does not open");
        free(blob.data);
        free(cas.data);
        return;
    }
    ni = dws_model_input_len(&model);
    no = dws_model_output_len(&model);
    ns = dws_model_scratch_len(&model);
    input = malloc(ni * sizeof *input);
    scratch = malloc(ns * sizeof *scratch);
    output = malloc(no * sizeof *output);
    big = malloc((ni + ns + no + 8) * sizeof *big);
    if (input == NULL || scratch == NULL || output == NULL || big == NULL ||
        dws_case_input(&c, 0, input, ni) != DWS_OK) {
        report(0, "bad-input", "setup", "out of memory");
        goto done;
    }

    /* Library facts. */
    expect_true("version", dws_version() != NULL && strlen(dws_version()) > 0,
                "dws_version() is empty");
    expect_true("blob-format-version",
                dws_blob_format_version() == DWS_BLOB_FORMAT_VERSION &&
                    dws_blob_format_version() == (uint16_t)(blob.data[4] | (blob.data[5] << 8)),
                "library, header and blob disagree on the format version");
    {
        int distinct = 1;
        dws_status a, b;
        for (a = DWS_OK; a <= DWS_ERR_UNKNOWN; a++) {
            for (b = DWS_OK; b < a; b++) {
                if (strcmp(dws_status_string(a), dws_status_string(b)) == 0) {
                    distinct = 0;
                }
            }
        }
        expect_true("status-strings",
                    distinct && dws_status_string(-1) != NULL &&
                        dws_status_string(12345) != NULL &&
                        strcmp(dws_status_string(-1), dws_status_string(DWS_OK)) != 0,
                    "status strings are missing or not distinct");
    }
    expect_true("storage-size", sizeof(dws_model) == DWS_MODEL_SIZE &&
                                    sizeof(dws_case) == DWS_CASE_SIZE,
                "sizeof does not match the header constants");

    /* Opening models. */
    expect("open-null-out", dws_model_open(NULL, blob.data, blob.len), DWS_ERR_NULL);
    expect("open-null-blob", dws_model_open(&copy, NULL, blob.len), DWS_ERR_NULL);
    expect("open-empty", dws_model_open(&copy, blob.data, 0), DWS_ERR_TRUNCATED);
    expect("open-header-only", dws_model_open(&copy, blob.data, 16), DWS_ERR_TRUNCATED);
    expect("open-again", dws_model_open(&copy, blob.data, blob.len), DWS_OK);
    expect("open-truncated", dws_model_open(&copy, blob.data, blob.len - 1), DWS_ERR_TRUNCATED);
    expect_true("open-failure-closes",
                dws_model_input_len(&copy) == 0 &&
                    dws_run_f32(&copy, input, ni, scratch, ns, output, no) == DWS_ERR_NOT_OPEN,
                "storage is still usable after a failed open");

    if ((p = copy_of(&blob, 8)) != NULL) {
        expect("open-trailing-bytes", dws_model_open(&copy, p, blob.len + 4),
               DWS_ERR_TRAILING_BYTES);
        p[blob.len - 3] ^= 0x40; /* a parameter byte: only the checksum notices */
        expect("open-corrupted-byte", dws_model_open(&copy, p, blob.len), DWS_ERR_CHECKSUM);
        p[blob.len - 3] ^= 0x40;
        p[0] = 'X';
        expect("open-bad-magic", dws_model_open(&copy, p, blob.len), DWS_ERR_BAD_MAGIC);
        p[0] = blob.data[0];
        p[4] = 0x7F; /* format version 127 */
        expect("open-future-version", dws_model_open(&copy, p, blob.len),
               DWS_ERR_UNSUPPORTED_VERSION);
        p[4] = blob.data[4];
        p[6] = 0x7F; /* precision flags no build knows */
        expect("open-unknown-precision", dws_model_open(&copy, p, blob.len),
               DWS_ERR_WRONG_PRECISION);
        p[6] = blob.data[6];
        put_u32(p + 12, 0x7FFFFFF0u); /* parameter section longer than the blob */
        expect("open-param-len-too-large", dws_model_open(&copy, p, blob.len),
               DWS_ERR_TRUNCATED);
        memcpy(p + 12, blob.data + 12, 4);
        /* d_0 one larger, with a valid checksum: decodes, but the shapes no longer
         * match the parameters, so validation must reject it. (Byte 32 is the
         * varint length of dims, byte 33 the varint d_0.) */
        if (p[32] < 0x80 && p[33] < 0x7F) {
            p[33]++;
            put_u32(p + 16, crc32(p + 32, blob.len - 32));
            expect("open-invalid-plan", dws_model_open(&copy, p, blob.len),
                   DWS_ERR_INVALID_PLAN);
            p[33]--;
        } else {
            report(0, "bad-input", "open-invalid-plan", "unexpected plan encoding");
        }
        /* Garbage plan bytes with a valid checksum. */
        for (i = 32; i < 64 && i < blob.len; i++) {
            p[i] = 0xFF;
        }
        put_u32(p + 16, crc32(p + 32, blob.len - 32));
        expect("open-garbage-plan", dws_model_open(&copy, p, blob.len), DWS_ERR_DECODE);
        free(p);
    } else {
        report(0, "bad-input", "copies", "out of memory");
    }
    if ((raw = malloc(blob.len + 8)) != NULL) {
        memcpy(raw + 1, blob.data, blob.len);
        expect("open-misaligned-blob", dws_model_open(&copy, raw + 1, blob.len),
               DWS_ERR_MISALIGNED);
        memcpy(raw + 2, blob.data, blob.len);
        expect("open-misaligned-blob-2", dws_model_open(&copy, raw + 2, blob.len),
               DWS_ERR_MISALIGNED);
        free(raw);
    }
    expect("open-misaligned-storage",
           dws_model_open((dws_model *)(void *)((char *)big + 4), blob.data, blob.len),
           DWS_ERR_MISALIGNED);

    /* Queries on bad models. */
    expect_true("query-null-model",
                dws_model_input_len(NULL) == 0 && dws_model_output_len(NULL) == 0 &&
                    dws_model_scratch_len(NULL) == 0,
                "length queries on NULL are not 0");
    expect_true("query-unopened-model",
                dws_model_input_len(&zero_model) == 0 && dws_model_scratch_len(&zero_model) == 0,
                "length queries on zeroed storage are not 0");
    {
        dws_info info;
        expect("info-null-model", dws_model_info(NULL, &info), DWS_ERR_NULL);
        expect("info-null-out", dws_model_info(&model, NULL), DWS_ERR_NULL);
        expect("info-unopened", dws_model_info(&zero_model, &info), DWS_ERR_NOT_OPEN);
    }

    /* Running. */
    expect("run-ok", dws_run_f32(&model, input, ni, scratch, ns, output, no), DWS_OK);
    copy = model;
    expect("run-copied-model", dws_run_f32(&copy, input, ni, scratch, ns, output, no), DWS_OK);
    expect("run-null-model", dws_run_f32(NULL, input, ni, scratch, ns, output, no),
           DWS_ERR_NULL);
    expect("run-null-input", dws_run_f32(&model, NULL, ni, scratch, ns, output, no),
           DWS_ERR_NULL);
    expect("run-null-scratch", dws_run_f32(&model, input, ni, NULL, ns, output, no),
           DWS_ERR_NULL);
    expect("run-null-output", dws_run_f32(&model, input, ni, scratch, ns, NULL, no),
           DWS_ERR_NULL);
    expect("run-unopened-model", dws_run_f32(&zero_model, input, ni, scratch, ns, output, no),
           DWS_ERR_NOT_OPEN);
    memset(&copy, 0xA5, sizeof copy);
    expect("run-garbage-model", dws_run_f32(&copy, input, ni, scratch, ns, output, no),
           DWS_ERR_NOT_OPEN);
    expect("run-input-too-short", dws_run_f32(&model, input, ni - 1, scratch, ns, output, no),
           DWS_ERR_INPUT_LENGTH);
    expect("run-input-too-long", dws_run_f32(&model, big, ni + 1, scratch, ns, output, no),
           DWS_ERR_INPUT_LENGTH);
    expect("run-short-scratch", dws_run_f32(&model, input, ni, scratch, ns - 1, output, no),
           DWS_ERR_SCRATCH_TOO_SMALL);
    expect("run-empty-scratch", dws_run_f32(&model, input, ni, scratch, 0, output, no),
           DWS_ERR_SCRATCH_TOO_SMALL);
    expect("run-short-output", dws_run_f32(&model, input, ni, scratch, ns, output, no - 1),
           DWS_ERR_OUTPUT_TOO_SMALL);
    expect("run-misaligned-input",
           dws_run_f32(&model, (const float *)(const void *)((const char *)big + 2), ni, scratch,
                       ns, output, no),
           DWS_ERR_MISALIGNED);
    expect("run-misaligned-output",
           dws_run_f32(&model, input, ni, scratch, ns, (float *)(void *)((char *)big + 1), no),
           DWS_ERR_MISALIGNED);
    memcpy(big, input, ni * sizeof *input);
    expect("run-overlap-input-scratch",
           dws_run_f32(&model, big, ni, big + ni - 1, ns, output, no), DWS_ERR_OVERLAP);
    expect("run-overlap-scratch-output",
           dws_run_f32(&model, input, ni, big, ns, big + ns - 1, no), DWS_ERR_OVERLAP);
    expect("run-input-is-output", dws_run_f32(&model, big, ni, scratch, ns, big, no),
           DWS_ERR_OVERLAP);
    /* Scratch or output over the blob or the model storage would corrupt them. */
    expect("run-scratch-in-blob",
           dws_run_f32(&model, input, ni, (float *)(void *)blob.data, ns, output, no),
           DWS_ERR_OVERLAP);
    expect("run-output-in-model",
           dws_run_f32(&model, input, ni, scratch, ns, (float *)(void *)&model, no),
           DWS_ERR_OVERLAP);
    {
        /* An int8 entry point on this f32 model, and absurd scale counts. */
        static const float scales[2] = {1.0f, 1.0f};
        expect("run-i8-on-f32-model",
               dws_run_i8(&model, (const int8_t *)(const void *)input, ni, scales, 2, scratch, ns,
                          output, no),
               DWS_ERR_WRONG_PRECISION);
    }
    {
        float keep = input[ni / 2];
        input[ni / 2] = NAN;
        expect("run-nan-input", dws_run_f32(&model, input, ni, scratch, ns, output, no),
               DWS_ERR_NON_FINITE_INPUT);
        input[ni / 2] = -INFINITY;
        expect("run-inf-input", dws_run_f32(&model, input, ni, scratch, ns, output, no),
               DWS_ERR_NON_FINITE_INPUT);
        input[ni / 2] = keep;
    }
    /* Extra room is fine: only the model's lengths are used (input_len is exact). */
    expect("run-larger-buffers", dws_run_f32(&model, input, ni, big, ns + 3, output, no), DWS_OK);

    /* Case files. */
    expect("case-open-null-out", dws_case_open(NULL, cas.data, cas.len), DWS_ERR_NULL);
    expect("case-open-null-bytes", dws_case_open(&zero_case, NULL, cas.len), DWS_ERR_NULL);
    expect("case-open-truncated", dws_case_open(&zero_case, cas.data, cas.len / 2),
           DWS_ERR_DECODE);
    st = dws_case_open(&zero_case, blob.data, blob.len);
    expect_true("case-open-blob-as-case", st != DWS_OK, "a model blob opened as a case");
    if ((p = copy_of(&cas, 4)) != NULL) {
        expect("case-open-trailing", dws_case_open(&zero_case, p, cas.len + 1),
               DWS_ERR_TRAILING_BYTES);
        p[0] = 9; /* case format version 9 */
        expect("case-open-future-version", dws_case_open(&zero_case, p, cas.len),
               DWS_ERR_UNSUPPORTED_VERSION);
        free(p);
    }
    memset(&zero_case, 0, sizeof zero_case);
    expect("case-null", dws_case_check(NULL, 0, output, no), DWS_ERR_NULL);
    expect_true("case-null-queries",
                dws_case_batch(NULL) == 0 && dws_case_input_len(NULL) == 0 &&
                    dws_case_output_len(NULL) == 0,
                "queries on a NULL case are not 0");
    expect("case-unopened", dws_case_input(&zero_case, 0, input, ni), DWS_ERR_NOT_OPEN);
    expect("case-input-null-out", dws_case_input(&c, 0, NULL, ni), DWS_ERR_NULL);
    expect("case-input-index", dws_case_input(&c, dws_case_batch(&c), input, ni),
           DWS_ERR_INDEX_OUT_OF_RANGE);
    expect("case-input-short", dws_case_input(&c, 0, input, ni - 1), DWS_ERR_BUFFER_TOO_SMALL);
    expect("case-name-short", dws_case_name(&c, name_buf, sizeof name_buf),
           DWS_ERR_BUFFER_TOO_SMALL);
    expect_true("case-name-truncated", strlen(name_buf) == sizeof name_buf - 1,
                "a truncated name is not NUL-terminated");
    expect("case-name-null", dws_case_name(&c, NULL, 10), DWS_ERR_NULL);
    expect("case-name-empty-buffer", dws_case_name(&c, name_buf, 0), DWS_ERR_BUFFER_TOO_SMALL);

    /* Checking results. */
    expect("run-for-check", dws_run_f32(&model, input, ni, scratch, ns, output, no), DWS_OK);
    expect("check-ok", dws_case_check(&c, 0, output, no), DWS_OK);
    expect("check-null-actual", dws_case_check(&c, 0, NULL, no), DWS_ERR_NULL);
    expect("check-short", dws_case_check(&c, 0, output, no - 1), DWS_ERR_BUFFER_TOO_SMALL);
    expect("check-index", dws_case_check(&c, dws_case_batch(&c), output, no),
           DWS_ERR_INDEX_OUT_OF_RANGE);
    expect("check-wrong-input", dws_case_batch(&c) > 1 ? dws_case_check(&c, 1, output, no)
                                                       : DWS_ERR_MISMATCH,
           DWS_ERR_MISMATCH);
    output[no - 1] += 1.0f + fabsf(output[no - 1]);
    st = dws_case_check_detail(&c, 0, output, no, &rep);
    expect("check-perturbed", st, DWS_ERR_MISMATCH);
    expect_true("check-perturbed-report", rep.index == no - 1 && rep.diff > rep.allowed,
                "the report does not name the perturbed element");
    output[no - 1] = NAN;
    expect("check-nan-output", dws_case_check(&c, 0, output, no), DWS_ERR_MISMATCH);

done:
    free(input);
    free(scratch);
    free(output);
    free(big);
    free(blob.data);
    free(cas.data);
}

/* dws_run_i8 or, with `wide`, dws_run_i16 on `input` (int8 or int16 values). */
static dws_status run_q(const dws_model *model, int wide, const void *input, size_t ni,
                        const float *scales, size_t nt, float *scratch, size_t ns, float *output,
                        size_t no)
{
    if (wide) {
        return dws_run_i16(model, (const int16_t *)input, ni, scales, nt, scratch, ns, output, no);
    }
    return dws_run_i8(model, (const int8_t *)input, ni, scales, nt, scratch, ns, output, no);
}

/* dws_run_i8 on the int8 model of `dir` (`wide` 0) or dws_run_i16 on its
 * 16x8 model (`wide` 1): scale counts and values, alignment, the other
 * entry point. */
static void run_bad_q_inputs(const char *dir, int wide)
{
    const char *blob_file = wide ? "model.16x8.dws" : "model.int8.dws";
    const char *case_file = wide ? "case_16x8.bin" : "case_int8.bin";
    size_t elem = wide ? sizeof(int16_t) : sizeof(int8_t);
    file_buf blob, cas;
    dws_model model;
    dws_info info;
    float *scales = NULL, *scratch = NULL, *output = NULL;
    unsigned char *input = NULL;
    size_t ni, ns, no, nt, i;
    char name[64];

#define Q_CASE(what) (snprintf(name, sizeof name, "run-%s-%s", wide ? "i16" : "i8", what), name)
    if (!load_files(dir, blob_file, case_file, &blob, &cas)) {
        report(0, "bad-input", Q_CASE("setup"), "cannot read the quantized bad-input fixture");
        return;
    }
    memset(&model, 0, sizeof model);
    if (dws_model_open(&model, blob.data, blob.len) != DWS_OK ||
        dws_model_info(&model, &info) != DWS_OK) {
        report(0, "bad-input", Q_CASE("setup"), "the quantized bad-input fixture does not open");
        goto done;
    }
    expect_true(Q_CASE("precision"),
                info.precision == (wide ? DWS_PRECISION_I16X8 : DWS_PRECISION_I8),
                "dws_model_info names another precision");
    ni = dws_model_input_len(&model);
    ns = dws_model_scratch_len(&model);
    no = dws_model_output_len(&model);
    nt = 2 * (size_t)info.num_weight_matrices;
    /* One element more, for a misaligned int16 input. */
    input = calloc(ni + 1, elem);
    scales = malloc(nt * sizeof *scales);
    scratch = malloc(ns * sizeof *scratch);
    output = malloc(no * sizeof *output);
    if (input == NULL || scales == NULL || scratch == NULL || output == NULL) {
        report(0, "bad-input", Q_CASE("setup"), "out of memory");
        goto done;
    }
    for (i = 0; i < ni; i++) {
        int v = (int)(i * 37 % 255) - 127;
        if (wide) {
            ((int16_t *)(void *)input)[i] = (int16_t)(v * 200);
        } else {
            ((int8_t *)(void *)input)[i] = (int8_t)v;
        }
    }
    for (i = 0; i < nt; i++) {
        scales[i] = wide ? 0.00005f : 0.01f;
    }
    expect(Q_CASE("ok"), run_q(&model, wide, input, ni, scales, nt, scratch, ns, output, no),
           DWS_OK);
    expect(Q_CASE("other-entry-point"),
           run_q(&model, !wide, input, ni, scales, nt, scratch, ns, output, no),
           DWS_ERR_WRONG_PRECISION);
    expect(Q_CASE("too-few-scales"),
           run_q(&model, wide, input, ni, scales, nt - 1, scratch, ns, output, no),
           DWS_ERR_INPUT_LENGTH);
    expect(Q_CASE("huge-scale-count"),
           run_q(&model, wide, input, ni, scales, SIZE_MAX / 4 + 2, scratch, ns, output, no),
           DWS_ERR_INPUT_LENGTH);
    if (wide) {
        expect(Q_CASE("misaligned-input"),
               run_q(&model, wide, input + 1, ni, scales, nt, scratch, ns, output, no),
               DWS_ERR_MISALIGNED);
    }
    scales[nt - 1] = NAN;
    expect(Q_CASE("nan-scale"), run_q(&model, wide, input, ni, scales, nt, scratch, ns, output, no),
           DWS_ERR_NON_FINITE_INPUT);
    scales[nt - 1] = 0.01f;
    expect(Q_CASE("output-in-model"),
           run_q(&model, wide, input, ni, scales, nt, scratch, ns, (float *)(void *)&model, no),
           DWS_ERR_OVERLAP);
#undef Q_CASE

done:
    free(input);
    free(scales);
    free(scratch);
    free(output);
    free(blob.data);
    free(cas.data);
}

int main(int argc, char **argv)
{
    int i;
    if (argc < 3) {
        fprintf(stderr, "usage: %s LABEL BAD_INPUT_FIXTURE_DIR FIXTURE_DIR...\n", argv[0]);
        return 2;
    }
    label = argv[1];
    printf("%s: dws %s, blob format %u\n", label, dws_version(),
           (unsigned)dws_blob_format_version());
    for (i = 3; i < argc; i++) {
        run_fixture(argv[i], "model.dws", "case.bin", "fixture", DWS_PRECISION_F32);
        if (file_exists(argv[i], "model.int8.dws") && file_exists(argv[i], "case_int8.bin")) {
            run_fixture(argv[i], "model.int8.dws", "case_int8.bin", "fixture-int8",
                        DWS_PRECISION_I8);
        }
        if (file_exists(argv[i], "model.16x8.dws") && file_exists(argv[i], "case_16x8.bin")) {
            run_fixture(argv[i], "model.16x8.dws", "case_16x8.bin", "fixture-16x8",
                        DWS_PRECISION_I16X8);
        }
    }
    run_bad_inputs(argv[2]);
    if (file_exists(argv[2], "model.int8.dws")) {
        run_bad_q_inputs(argv[2], 0);
    }
    if (file_exists(argv[2], "model.16x8.dws")) {
        run_bad_q_inputs(argv[2], 1);
    }
    printf("%s: %d passed, %d failed\n", label, passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
