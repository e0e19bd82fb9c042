/*
 * pcprof: where the instructions of marked intervals go (QEMU TCG plugin).
 *
 *   -plugin libpcprof.so,mark=0xADDR,out=FILE -d plugin
 *
 * Marks and intervals as in insn.c, with the same `insn: interval K: N
 * instructions` lines (and `insn: total ...` at exit) on the plugin log.
 * Besides, every translated block keeps its own execution counter (an inline
 * add, like the instruction count), and at the end of each interval the
 * plugin writes the blocks that ran in it to FILE:
 *
 *   interval K N          interval K: N instructions
 *   ID COUNT              block ID ran COUNT times in it (one line per block)
 *
 * and at exit the guest address of every instruction of those blocks:
 *
 *   block ID PC PC ...
 *
 * The instructions of a block run as often as the block (a single-core guest
 * without interrupts leaves a block only at its end), so a PC's count in an
 * interval is the sum of the counts of the blocks that hold it, and the
 * counts times the blocks' lengths add up to N.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* One translated block (QEMU may translate an address more than once). */
struct block {
    uint64_t runs;   /* bumped inline each time the block runs */
    uint64_t at_mark; /* `runs` at the last marker */
    bool listed;     /* written in an interval: its PCs go out at exit */
    size_t n;        /* instructions */
    uint64_t *pcs;   /* their guest addresses */
};

static struct block **blocks;
static size_t n_blocks, cap_blocks;
static uint64_t insns;      /* bumped inline at the start of every block */
static uint64_t mark_addr;
static uint64_t started;    /* `insns` at the last odd marker */
static unsigned marks;
static FILE *out;
static bool failed;         /* out of memory or a write error: reported at exit */

static void on_mark(unsigned int vcpu, void *udata)
{
    char line[96];
    (void)vcpu;
    (void)udata;
    if (marks++ % 2 == 0) {
        started = insns;
        for (size_t i = 0; i < n_blocks; i++) {
            blocks[i]->at_mark = blocks[i]->runs;
        }
        return;
    }
    snprintf(line, sizeof line, "insn: interval %u: %" PRIu64 " instructions\n",
             marks / 2, insns - started);
    qemu_plugin_outs(line);
    fprintf(out, "interval %u %" PRIu64 "\n", marks / 2, insns - started);
    for (size_t i = 0; i < n_blocks; i++) {
        struct block *b = blocks[i];
        if (b->runs != b->at_mark) {
            fprintf(out, "%zu %" PRIu64 "\n", i, b->runs - b->at_mark);
            b->listed = true;
        }
    }
}

static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    struct block *b;
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                             &insns, n);
    if (mark_addr != 0 && qemu_plugin_tb_vaddr(tb) == mark_addr) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_mark, QEMU_PLUGIN_CB_NO_REGS,
                                             NULL);
    }
    if (n_blocks == cap_blocks) {
        size_t cap = cap_blocks ? 2 * cap_blocks : 4096;
        struct block **grown = realloc(blocks, cap * sizeof *blocks);
        if (grown == NULL) {
            failed = true;
            return;
        }
        blocks = grown;
        cap_blocks = cap;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL || (b->pcs = malloc(n * sizeof *b->pcs)) == NULL) {
        free(b);
        failed = true;
        return;
    }
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        b->pcs[i] = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
    }
    /* The block's counter is new, so a marker between now and its first run
     * leaves `at_mark` at 0 as it should. */
    blocks[n_blocks++] = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                             &b->runs, 1);
}

static void on_quit(qemu_plugin_id_t id, void *udata)
{
    char line[128];
    (void)id;
    (void)udata;
    for (size_t i = 0; i < n_blocks; i++) {
        if (!blocks[i]->listed) {
            continue;
        }
        fprintf(out, "block %zu", i);
        for (size_t k = 0; k < blocks[i]->n; k++) {
            fprintf(out, " %#" PRIx64, blocks[i]->pcs[k]);
        }
        fputc('\n', out);
    }
    if (ferror(out) | fclose(out)) {
        failed = true;
    }
    snprintf(line, sizeof line, "insn: total %" PRIu64 " instructions, %u marks%s\n",
             insns, marks, failed ? "; pcprof: INCOMPLETE profile (out of memory or write error)" : "");
    qemu_plugin_outs(line);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "mark=", 5) == 0) {
            /* Thumb symbols carry bit 0; blocks start at the even address. */
            mark_addr = strtoull(argv[i] + 5, NULL, 0) & ~(uint64_t)1;
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        } else {
            fprintf(stderr, "pcprof: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (mark_addr == 0 || path == NULL) {
        fprintf(stderr, "pcprof: needs mark=ADDR and out=FILE\n");
        return -1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        fprintf(stderr, "pcprof: %s: %s\n", path, strerror(errno));
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    qemu_plugin_register_atexit_cb(id, on_quit, NULL);
    return 0;
}
