# settled: a victim kthread asleep in a livepatch replacement, another asleep in msleep reached through a
# module stub, the livepatch sample loaded, function_graph on.
setup_settled() {
	load lpd_victim
	load livepatch-sample
	wait_patched livepatch_sample
	load lpd_patch
	wait_patched lpd_patch
	LP=$(pid_of lpd_lp_victim); SS=$(pid_of lpd_stub_sleep)
	wait_for 60 "lpd_lp_victim asleep in the replacement" stack_has $LP livepatch_lpd_victim_work
	wait_for 60 "lpd_stub_sleep asleep in msleep" stack_has $SS msleep
	say "lpd_lp_victim=$LP lpd_stub_sleep=$SS"
}
