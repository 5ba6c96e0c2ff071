// SPDX-License-Identifier: GPL-2.0
/* lpdebug testbed livepatch: patch of lpd_victim_aux that the guest disables through sysfs (stacked) */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include <linux/module.h>
#include <linux/livepatch.h>
#include <linux/delay.h>
#include "lpd_common.h"

static noinline int livepatch_lpd_victim_aux_c(int n)
{
	return n * 4;
}

static struct klp_func funcs[] = {
	{ .old_name = "lpd_victim_aux", .new_func = livepatch_lpd_victim_aux_c, },
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
