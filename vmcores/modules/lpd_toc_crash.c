// SPDX-License-Identifier: GPL-2.0
/*
 * lpdebug testbed (toc-crash): a thread returns through a corrupted TOC and uses it.
 *
 * kthread "lpd_crash" calls lpd_crash_victim(), which waits in wait_for_completion() (vmlinux, reached
 * through this module's stub, so the return address is `ld r2,24(r1)`) and then loads a global variable
 * relative to r2.
 *   echo 1 > /sys/module/lpd_toc_crash/parameters/inject   writes a bad TOC into the TOC save slot of
 *        lpd_crash_victim's frame and prints "lpd_toc_crash: LPD_INJECT {json}";
 *   echo 1 > /sys/module/lpd_toc_crash/parameters/trigger  completes the wait: the thread restores the bad
 *        TOC, its r2-relative load faults, the kernel oopses (and panics with panic_on_oops).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/completion.h>
#include "lpd_common.h"

#define LPD_BAD_TOC 0xc00000deadb00000UL	/* looks like a linear-map address, far beyond RAM */

static DECLARE_COMPLETION(lpd_go);
static struct task_struct *lpd_crash_task;
/* not static, and no section anchors (Kbuild): its address is loaded through r2 after the call */
volatile int lpd_crash_counter = 42;

noinline __attribute__((noipa)) int lpd_crash_victim(void)
{
	wait_for_completion(&lpd_go);		/* returns to ld r2,24(r1) */
	return lpd_crash_counter + 1;		/* TOC-relative load through the restored r2 */
}

static int lpd_crash_thread(void *arg)
{
	int n = lpd_crash_victim();

	pr_info("survived: %d\n", n);
	while (!kthread_should_stop())
		schedule_timeout_interruptible(HZ);
	return 0;
}

static int lpd_set_inject(const char *val, const struct kernel_param *kp)
{
	struct task_struct *p = lpd_crash_task;
	unsigned long sp, slot, expected;

	sp = lpd_find_restore_frame(p, (unsigned long)lpd_crash_victim, 0x200);
	if (!sp) {
		pr_err("no restore-site frame found in pid %d\n", p->pid);
		return -ENOENT;
	}
	slot = sp + LPD_STK_GOT;
	expected = *(unsigned long *)slot;
	*(unsigned long *)slot = LPD_BAD_TOC;
	pr_info("LPD_INJECT {\"kind\": \"frame_toc\", \"pid\": %d, \"comm\": \"%s\", \"frame_sp\": %lu, "
		"\"slot_address\": %lu, \"expected_toc\": %lu, \"written_value\": %lu}\n",
		p->pid, p->comm, sp, slot, expected, LPD_BAD_TOC);
	return 0;
}

static int lpd_set_trigger(const char *val, const struct kernel_param *kp)
{
	pr_info("trigger: waking pid %d\n", lpd_crash_task->pid);
	complete(&lpd_go);
	return 0;
}

static const struct kernel_param_ops lpd_inject_ops = { .set = lpd_set_inject };
static const struct kernel_param_ops lpd_trigger_ops = { .set = lpd_set_trigger };
module_param_cb(inject, &lpd_inject_ops, NULL, 0200);
module_param_cb(trigger, &lpd_trigger_ops, NULL, 0200);

static int __init lpd_toc_crash_init(void)
{
	lpd_crash_task = kthread_run(lpd_crash_thread, NULL, "lpd_crash");
	if (IS_ERR(lpd_crash_task))
		return PTR_ERR(lpd_crash_task);
	pr_info("crash pid %d\n", lpd_crash_task->pid);
	return 0;
}
module_init(lpd_toc_crash_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lpdebug testbed: returns through a corrupted TOC and oopses");
