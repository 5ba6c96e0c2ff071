// SPDX-License-Identifier: GPL-2.0
/*
 * lpdebug testbed (scale-tasks): thousands of kthreads, on demand.
 *
 *   echo N > /sys/module/lpd_scale/parameters/spawn_lp      N kthreads "lpds_lp/I" calling lpd_scale_work()
 *        in a loop; lpd_scale_patch replaces it with a function that sleeps, so each ends up asleep
 *        inside a livepatch replacement (a livepatch-stack entry each);
 *   echo N > /sys/module/lpd_scale/parameters/spawn_sleep   N kthreads "lpds_sl/I" asleep in
 *        msleep_interruptible() called through this module's stub;
 *   echo S > /sys/module/lpd_scale/parameters/kick          SIGUSR1 to every S-th of them (1: all), in the
 *        order they were spawned: each returns from its sleep and sleeps again at the same point (under
 *        function_graph: with hooked returns);
 *   cat /sys/module/lpd_scale/parameters/calls              sleeps entered so far (the guest waits on it).
 *
 * Load lpd_scale_patch before spawning lpds_lp threads: unpatched, lpd_scale_work() returns at once.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/sched/signal.h>
#include "lpd_common.h"

#define LPD_SCALE_MAX 20000

static struct task_struct **lpd_scale_tasks;
static int lpd_scale_count;
static DEFINE_MUTEX(lpd_scale_lock);
static atomic_t lpd_scale_calls = ATOMIC_INIT(0);

/* Replaced by lpd_scale_patch, whose replacement sleeps. */
noinline __attribute__((noipa)) int lpd_scale_work(int n)
{
	return n + 1;
}

noinline __attribute__((noipa)) void lpd_scale_stub_sleep(void)
{
	msleep_interruptible(LPD_LONG_SLEEP_MS);	/* call through the module's stub */
}

static int lpd_scale_lp_thread(void *arg)
{
	int n = 0;

	allow_signal(SIGUSR1);
	while (!kthread_should_stop()) {
		atomic_inc(&lpd_scale_calls);
		n = lpd_scale_work(n);
		flush_signals(current);
		msleep(50);
	}
	return n;
}

static int lpd_scale_sleep_thread(void *arg)
{
	allow_signal(SIGUSR1);
	while (!kthread_should_stop()) {
		atomic_inc(&lpd_scale_calls);
		lpd_scale_stub_sleep();
		flush_signals(current);
	}
	return 0;
}

static int lpd_scale_spawn(int (*fn)(void *), const char *fmt, const char *val)
{
	int n, i, err;

	err = kstrtoint(val, 0, &n);
	if (err)
		return err;
	mutex_lock(&lpd_scale_lock);
	for (i = 0; i < n && lpd_scale_count < LPD_SCALE_MAX; i++) {
		struct task_struct *t = kthread_run(fn, NULL, fmt, lpd_scale_count);

		if (IS_ERR(t)) {
			err = PTR_ERR(t);
			break;
		}
		lpd_scale_tasks[lpd_scale_count++] = t;
	}
	mutex_unlock(&lpd_scale_lock);
	pr_info("%d kthreads (%d asked: %s)\n", lpd_scale_count, n, fmt);
	return err;
}

static int lpd_scale_set_lp(const char *val, const struct kernel_param *kp)
{
	return lpd_scale_spawn(lpd_scale_lp_thread, "lpds_lp/%d", val);
}

static int lpd_scale_set_sleep(const char *val, const struct kernel_param *kp)
{
	return lpd_scale_spawn(lpd_scale_sleep_thread, "lpds_sl/%d", val);
}

static int lpd_scale_set_kick(const char *val, const struct kernel_param *kp)
{
	int i, step, err;

	err = kstrtoint(val, 0, &step);
	if (err)
		return err;
	if (step < 1)
		return -EINVAL;
	mutex_lock(&lpd_scale_lock);
	for (i = 0; i < lpd_scale_count; i += step)
		send_sig(SIGUSR1, lpd_scale_tasks[i], 1);
	mutex_unlock(&lpd_scale_lock);
	return 0;
}

static int lpd_scale_get_calls(char *buf, const struct kernel_param *kp)
{
	return sprintf(buf, "%d\n", atomic_read(&lpd_scale_calls));
}

static const struct kernel_param_ops lpd_lp_ops = { .set = lpd_scale_set_lp };
static const struct kernel_param_ops lpd_sleep_ops = { .set = lpd_scale_set_sleep };
static const struct kernel_param_ops lpd_kick_ops = { .set = lpd_scale_set_kick };
static const struct kernel_param_ops lpd_calls_ops = { .get = lpd_scale_get_calls };
module_param_cb(spawn_lp, &lpd_lp_ops, NULL, 0200);
module_param_cb(spawn_sleep, &lpd_sleep_ops, NULL, 0200);
module_param_cb(kick, &lpd_kick_ops, NULL, 0200);
module_param_cb(calls, &lpd_calls_ops, NULL, 0444);

static int __init lpd_scale_init(void)
{
	lpd_scale_tasks = kcalloc(LPD_SCALE_MAX, sizeof(*lpd_scale_tasks), GFP_KERNEL);
	return lpd_scale_tasks ? 0 : -ENOMEM;
}
module_init(lpd_scale_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lpdebug testbed: thousands of kthreads, some asleep in a livepatch replacement");
