// SPDX-License-Identifier: GPL-2.0
/*
 * lpdebug testbed victim module.
 *
 * kthread "lpd_lp_victim" calls lpd_victim_work() (a traceable function of this module, called from this
 * module's own code) in a loop. The livepatch modules lpd_patch / lpd_stack_* replace it; their replacements
 * sleep, so the thread ends up asleep inside a livepatch replacement entered through livepatch_handler.
 *
 * kthread "lpd_stub_sleep" sleeps in msleep_interruptible() (vmlinux) called from lpd_victim_stub_sleep() through this
 * module's stub, so the return address saved for msleep is a TOC restore `ld r2,24(r1)`.
 *
 * Both sleep interruptibly and accept SIGUSR1: `kill -USR1 PID` makes a thread return from its sleep and
 * enter the same sleep again (the guest does so after switching on function_graph, so that the new frames
 * are hooked by the graph tracer while /proc/PID/stack taken before stays the oracle).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched/signal.h>
#include "lpd_common.h"

struct task_struct *lpd_victim_lp_task, *lpd_victim_stub_task;
EXPORT_SYMBOL_GPL(lpd_victim_lp_task);
EXPORT_SYMBOL_GPL(lpd_victim_stub_task);

volatile int lpd_victim_calls;

/* Replaced by lpd_patch (settled) or lpd_stack_a / lpd_stack_b (stacked). */
noinline __attribute__((noipa)) int lpd_victim_work(int n)
{
	lpd_victim_calls++;
	return n + 1;
}

/* Replaced by lpd_stack_r and lpd_stack_c (stacked); called by nobody. */
noinline __attribute__((noipa)) int lpd_victim_aux(int n)
{
	return n * 2;
}

noinline __attribute__((noipa)) void lpd_victim_stub_sleep(void)
{
	msleep_interruptible(LPD_LONG_SLEEP_MS);	/* call through the module's stub: returns to ld r2,24(r1) */
}
EXPORT_SYMBOL_GPL(lpd_victim_stub_sleep);

static int lpd_lp_thread(void *arg)
{
	int n = 0;

	allow_signal(SIGUSR1);
	while (!kthread_should_stop()) {
		n = lpd_victim_work(n);
		flush_signals(current);
		msleep(50);
	}
	return n;
}

static int lpd_stub_thread(void *arg)
{
	allow_signal(SIGUSR1);
	while (!kthread_should_stop()) {
		lpd_victim_stub_sleep();
		flush_signals(current);
	}
	return 0;
}

static int __init lpd_victim_init(void)
{
	lpd_victim_lp_task = kthread_run(lpd_lp_thread, NULL, "lpd_lp_victim");
	if (IS_ERR(lpd_victim_lp_task))
		return PTR_ERR(lpd_victim_lp_task);
	lpd_victim_stub_task = kthread_run(lpd_stub_thread, NULL, "lpd_stub_sleep");
	if (IS_ERR(lpd_victim_stub_task))
		return PTR_ERR(lpd_victim_stub_task);
	pr_info("lp_victim pid %d, stub_sleep pid %d\n", lpd_victim_lp_task->pid, lpd_victim_stub_task->pid);
	return 0;
}
module_init(lpd_victim_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lpdebug testbed: victim kthreads");
