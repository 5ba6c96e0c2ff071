// SPDX-License-Identifier: GPL-2.0
/* lpdebug testbed livepatch: replaces lpd_scale_work; the replacement sleeps (scale-tasks) */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/livepatch.h>
#include <linux/delay.h>
#include "lpd_common.h"

static noinline int livepatch_lpd_scale_work(int n)
{
	msleep_interruptible(LPD_LONG_SLEEP_MS);	/* sleeps here (stub call); SIGUSR1 wakes it */
	return n + 2;
}

static struct klp_func funcs[] = {
	{ .old_name = "lpd_scale_work", .new_func = livepatch_lpd_scale_work, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "lpd_scale", .funcs = funcs, },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
	.replace = false,
};

static int __init lpd_patch_init(void)
{
	return klp_enable_patch(&patch);
}

static void __exit lpd_patch_exit(void)
{
}

module_init(lpd_patch_init);
module_exit(lpd_patch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
