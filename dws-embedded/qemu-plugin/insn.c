/*
 * insn: counts executed guest instructions (QEMU TCG plugin).
 *
 *   -plugin libinsn.so[,mark=0xADDR] -d plugin
 *
 * Without `mark` it prints the total at exit. With `mark`, every execution of
 * the translation block starting at ADDR (a function the firmware calls around
 * the code to measure) is a marker: odd markers start an interval, even ones
 * end it, and each interval is printed as `insn: interval K: N instructions`.
 * An interval counts every instruction from one marker block's start to the
 * next one's, so it is exact and deterministic for a single-core guest.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t insns;      /* bumped inline at the start of every block */
static uint64_t mark_addr;  /* 0: no marker */
static uint64_t started;    /* count at the last odd marker */
static unsigned marks;

static void on_mark(unsigned int vcpu, void *udata)
{
    char line[96];
    (void)vcpu;
    (void)udata;
    if (marks++ % 2 == 0) {
        started = insns;
        return;
    }
    snprintf(line, sizeof line, "insn: interval %u: %" PRIu64 " instructions\n",
             marks / 2, insns - started);
    qemu_plugin_outs(line);
}

static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                             &insns, qemu_plugin_tb_n_insns(tb));
    if (mark_addr != 0 && qemu_plugin_tb_vaddr(tb) == mark_addr) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_mark, QEMU_PLUGIN_CB_NO_REGS,
                                             NULL);
    }
}

static void on_quit(qemu_plugin_id_t id, void *udata)
{
    char line[96];
    (void)id;
    (void)udata;
    snprintf(line, sizeof line, "insn: total %" PRIu64 " instructions, %u marks\n",
             insns, marks);
    qemu_plugin_outs(line);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "mark=", 5) == 0) {
            /* Thumb symbols carry bit 0; blocks start at the even address. */
            mark_addr = strtoull(argv[i] + 5, NULL, 0) & ~(uint64_t)1;
        } else {
            fprintf(stderr, "insn: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    qemu_plugin_register_atexit_cb(id, on_quit, NULL);
    return 0;
}
