// SPDX-License-Identifier: GPL-2.0
/*
 * lpdebug testbed (stuck): kthread "lpd_stuck" sleeps forever inside lpd_stuck_func(), which lpd_stuck_patch
 * replaces, so that patch's transition can never finish.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include "lpd_common.h"

static struct task_struct *lpd_stuck_task;

noinline __attribute__((noipa)) int lpd_stuck_func(int n)
{
	msleep(LPD_LONG_SLEEP_MS);	/* uninterruptible: the livepatch fake signal does not wake it */
	return n + 1;
}

static int lpd_stuck_thread(void *arg)
{
	int n = 0;

	while (!kthread_should_stop())
		n = lpd_stuck_func(n);
	return n;
}

static int __init lpd_stuck_init(void)
{
	lpd_stuck_task = kthread_run(lpd_stuck_thread, NULL, "lpd_stuck");
	if (IS_ERR(lpd_stuck_task))
		return PTR_ERR(lpd_stuck_task);
	pr_info("stuck pid %d\n", lpd_stuck_task->pid);
	return 0;
}
module_init(lpd_stuck_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lpdebug testbed: a kthread asleep in a function being livepatched");
