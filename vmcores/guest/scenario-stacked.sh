# stacked: a cumulative (replace) patch, two patches on lpd_victim_work (func_stack depth 2), the sample,
# and one patch disabled through sysfs.
load lpd_victim
load lpd_stack_r
wait_patched lpd_stack_r
load livepatch-sample
wait_patched livepatch_sample
load lpd_stack_a
wait_patched lpd_stack_a
load lpd_stack_b
wait_patched lpd_stack_b
LP=$(pid_of lpd_lp_victim); SS=$(pid_of lpd_stub_sleep)
wait_for 60 "lpd_lp_victim asleep in lpd_stack_b" stack_has $LP livepatch_lpd_victim_work_b
load lpd_stack_c
wait_patched lpd_stack_c
echo 0 > /sys/kernel/livepatch/lpd_stack_c/enabled || fail "cannot disable lpd_stack_c"
gone() { [ ! -e /sys/kernel/livepatch/lpd_stack_c ]; }
wait_for 60 "lpd_stack_c disabled" gone
say "lpd_stack_c disabled; lpd_lp_victim=$LP lpd_stub_sleep=$SS"
function_graph_on
finish
