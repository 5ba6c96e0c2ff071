// SPDX-License-Identifier: GPL-2.0
/*
 * lpdebug testbed (toc-corrupt): real TOC corruption in real memory, at load time.
 *
 * 1. frame_toc: in the stack of kthread "lpd_stub_sleep" (lpd_victim), the frame of lpd_victim_stub_sleep()
 *    whose LR slot (sp+16) holds the return address of its stub call to msleep, i.e. an `ld r2,24(r1)`:
 *    its TOC save slot (sp+24) gets the kernel TOC instead of lpd_victim's TOC.
 * 2. livepatch_stack_toc: the newest livepatch-stack entry of kthread "lpd_lp_victim" (asleep in a livepatch
 *    replacement): its saved-r2 word gets lpd_victim's TOC + 0x10000.
 *
 * Both threads sleep for a day, so nothing executes the bad values during a test. Each write is printed
 * as one line "lpd_toc_corrupt: LPD_INJECT {json}"; the guest collects them into truth/injected.json.
 * Load it before function_graph is switched on (the LR slots then still hold the real return addresses).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/sched.h>
#include <asm/paca.h>
#include "lpd_common.h"

extern struct task_struct *lpd_victim_lp_task, *lpd_victim_stub_task;
extern void lpd_victim_stub_sleep(void);

static void lpd_record(const char *kind, struct task_struct *p, const char *where_key, unsigned long where,
		       unsigned long slot, unsigned long expected, unsigned long written)
{
	pr_info("LPD_INJECT {\"kind\": \"%s\", \"pid\": %d, \"comm\": \"%s\", \"%s\": %lu, \"slot_address\": %lu, "
		"\"expected_toc\": %lu, \"written_value\": %lu}\n",
		kind, p->pid, p->comm, where_key, where, slot, expected, written);
}

static int __init lpd_toc_corrupt_init(void)
{
	struct task_struct *p = lpd_victim_stub_task;
	unsigned long sp, slot, expected, val;
	unsigned long *lsp, *base;
	int done = 0;

	/* 1. TOC save slot of a frame at a restore site */
	sp = lpd_find_restore_frame(p, (unsigned long)lpd_victim_stub_sleep, 0x200);
	if (sp) {
		slot = sp + LPD_STK_GOT;
		expected = *(unsigned long *)slot;
		val = local_paca->kernel_toc;
		*(unsigned long *)slot = val;
		lpd_record("frame_toc", p, "frame_sp", sp, slot, expected, val);
		done++;
	} else {
		pr_err("no restore-site frame found in pid %d\n", p->pid);
	}

	/* 2. saved-r2 word of the newest livepatch-stack entry */
	p = lpd_victim_lp_task;
	lsp = task_thread_info(p)->livepatch_sp;
	base = end_of_stack(p) + 1;
	if (lsp > base && lsp[-1] == STACK_END_MAGIC) {
		unsigned long *entry = lsp - 3;

		expected = entry[0];
		val = expected + 0x10000;
		entry[0] = val;
		lpd_record("livepatch_stack_toc", p, "entry_address", (unsigned long)entry, (unsigned long)entry,
			   expected, val);
		done++;
	} else {
		pr_err("pid %d has an empty livepatch stack\n", p->pid);
	}
	pr_info("LPD_INJECT_DONE %d\n", done);
	return 0;
}
module_init(lpd_toc_corrupt_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lpdebug testbed: writes wrong TOCs into sleeping threads' stacks");
