#!/usr/bin/env bash
# The issue-#15 campaign: every target for SECONDS_PER_TARGET (default 600) one after the
# other, from its corpus, at low priority, each log kept in fuzz/logs/<target>.log and one
# summary line per target (executions, cov, ft, corpus, crashes) in fuzz/logs/summary.tsv.
# Run after `cargo fuzz build -s none --codegen-units 8` and ./seed.sh.
set -uo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-600}"
bin=target/x86_64-unknown-linux-gnu/release
mkdir -p logs
printf 'target\tseconds\texecutions\tcov\tft\tcorpus\tcrash_files\texit\n' > logs/summary.tsv
for t in ${TARGETS:-resource_json search_query fhirpath fhirpath_patch json_patch bundle jwt dns arm}; do
    mkdir -p "artifacts/$t" "corpus/$t"
    start=$(date +%s)
    nice -n 19 "$bin/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" -rss_limit_mb=2048 \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 > "logs/$t.log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "logs/$t.log" | awk '{print $2}')
    [ -z "$execs" ] && execs=$(grep -o '^#[0-9]*' "logs/$t.log" | tail -1 | tr -d '#')
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | grep 'cov:' | tail -1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.*corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")
    crashes=$(ls "artifacts/$t" | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$took" "$execs" "$cov" "$ft" "$corp" "$crashes" "$rc" >> logs/summary.tsv
done
