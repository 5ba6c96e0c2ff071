/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the lpdebug testbed modules. */
#ifndef LPD_COMMON_H
#define LPD_COMMON_H

#include <linux/sched.h>
#include <linux/sched/task_stack.h>

/* msleep long enough that the sleeper never wakes during a test run (about 27 hours). */
#define LPD_LONG_SLEEP_MS 100000000U

#define LPD_PPC_INST_LD_TOC 0xe8410018U	/* ld r2,24(r1) */
#define LPD_STK_GOT 24			/* ELFv2 TOC save slot */
#define LPD_STK_LR 16			/* LR save slot */

static inline int lpd_on_stack(struct task_struct *p, unsigned long sp, unsigned long len)
{
	unsigned long lo = (unsigned long)task_stack_page(p);

	return sp >= lo && sp + len <= lo + THREAD_SIZE;
}

/*
 * Walk the back chain of sleeping task p from its saved kernel SP. Return the SP of the first (innermost)
 * frame whose saved return address (the LR slot of that frame, written by its callee) lies in
 * [fn, fn + fn_len) and points at `ld r2,24(r1)`: a TOC restore site after a call through a module stub.
 * Returns 0 if none.
 */
static inline unsigned long lpd_find_restore_frame(struct task_struct *p, unsigned long fn,
						   unsigned long fn_len)
{
	unsigned long sp = p->thread.ksp;
	int i;

	for (i = 0; i < 32 && lpd_on_stack(p, sp, 32); i++) {
		unsigned long caller = *(unsigned long *)sp;	/* back chain */
		unsigned long ra;

		if (!lpd_on_stack(p, caller, 32) || caller <= sp)
			break;
		ra = *(unsigned long *)(caller + LPD_STK_LR);
		if (ra >= fn && ra < fn + fn_len && *(u32 *)ra == LPD_PPC_INST_LD_TOC)
			return caller;
		sp = caller;
	}
	return 0;
}

#endif
