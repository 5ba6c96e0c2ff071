// SPDX-License-Identifier: GPL-2.0
/* lpdebug testbed livepatch: first of two patches of lpd_victim_work (func_stack depth 2); returns at once (stacked) */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/livepatch.h>
#include <linux/delay.h>
#include "lpd_common.h"

static noinline int livepatch_lpd_victim_work_a(int n)
{
	return n + 10;
}

static struct klp_func funcs[] = {
	{ .old_name = "lpd_victim_work", .new_func = livepatch_lpd_victim_work_a, },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "lpd_victim", .funcs = funcs, },
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
