# toc-corrupt: settled, then lpd_toc_corrupt writes wrong TOCs into the stacks of two sleeping kthreads
setup_settled
snapshot_tasks .nofgraph
load lpd_toc_corrupt
dmesg | grep -q "LPD_INJECT_DONE 2" || fail "lpd_toc_corrupt did not inject both records"
# no kick: waking the corrupted threads would run the bad TOCs; their stacks predate function_graph
fgraph_enable
finish
