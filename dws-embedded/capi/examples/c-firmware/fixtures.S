/*
 * Reference fixtures embedded in flash: for each model, the blob (16-byte
 * aligned; dws_model_open needs 4) and its case file, plus the table main.c
 * walks: { name, blob, blob_len, case, case_len, precision } per entry.
 * f32 models are checked against upstream PyTorch (model.dws + case.bin),
 * int8 models bit-exactly against the core's golden outputs
 * (model.int8.dws + case_int8.bin).
 * Paths are relative to tests/fixtures (run.sh passes -Wa,-I<that folder>).
 */
    .syntax unified

    /* fixture NAME, TAG, BLOB_FILE, CASE_FILE */
    .macro fixture name, tag, blob_file, case_file
    .section .rodata.dws_fixture_\name\()_\tag, "a", %progbits
    .balign 16
\name\()_\tag\()_blob:
    .incbin "\name/\blob_file"
\name\()_\tag\()_blob_end:
    .balign 4
\name\()_\tag\()_case:
    .incbin "\name/\case_file"
\name\()_\tag\()_case_end:
    .endm

    /* entry NAME, TAG, PRECISION (0 = DWS_PRECISION_F32, 1 = DWS_PRECISION_I8) */
    .macro entry name, tag, precision
    .word \name\()_str
    .word \name\()_\tag\()_blob
    .word \name\()_\tag\()_blob_end - \name\()_\tag\()_blob
    .word \name\()_\tag\()_case
    .word \name\()_\tag\()_case_end - \name\()_\tag\()_case
    .word \precision
    .endm

    .macro name_string name
\name\()_str:
    .asciz "\name"
    .endm

    /* Small models: blobs in flash, scratch within the 16 KiB arena. */
    .irp name, clf_nobias_sab, clf_ds_max_6mats_f2, dws_diagonal_5mats, dws_downsample_ds
    fixture \name, f32, model.dws, case.bin
    fixture \name, i8, model.int8.dws, case_int8.bin
    .endr

    .section .rodata.dws_fixture_names, "a", %progbits
    .irp name, clf_nobias_sab, clf_ds_max_6mats_f2, dws_diagonal_5mats, dws_downsample_ds
    name_string \name
    .endr

    .section .rodata.dws_fixtures, "a", %progbits
    .balign 4
    .global dws_fixtures
dws_fixtures:
    .irp name, clf_nobias_sab, clf_ds_max_6mats_f2, dws_diagonal_5mats, dws_downsample_ds
    entry \name, f32, 0
    entry \name, i8, 1
    .endr
    .global dws_fixture_count
dws_fixture_count:
    .word (dws_fixture_count - dws_fixtures) / 24
