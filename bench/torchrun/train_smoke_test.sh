#!/usr/bin/env bash
# train.py under torchrun (launch.py) with 2 workers on one node for 3 steps,
# a checkpoint at step 2, then again to 4 steps: the second run must resume
# at step 2 from that checkpoint. Skips (passes, saying so) where Debian's
# python3-torch is not installed: CI machines need not have it.
set -euo pipefail
python=/usr/bin/python3
if ! "$python" -c 'import torch' 2>/dev/null; then
  echo "SKIPPED: python3-torch is not installed for $python (apt-get install python3-torch)"
  exit 0
fi
here="$(dirname "$0")"
dir="${TEST_TMPDIR:-$(mktemp -d)}/smoke"
mkdir -p "$dir"
run() {
  LOGLEVEL=WARNING timeout 120 "$python" "$here/launch.py" --standalone --nnodes=1 --nproc_per_node=2 \
    --redirects=1 --tee=2 --log_dir="$dir/elastic-$1" "$here/train.py" --steps "$1" --ckpt-every 2 \
    --ckpt "$dir/ckpt.pt" --timeout-s 60 --log "$dir/events.log" >"$dir/agent-$1.log" 2>&1 || {
    echo "FAIL: torchrun --steps $1 exited with $?"; cat "$dir/agent-$1.log" "$dir/events.log"; exit 1; }
}
expect() {
  grep -q "$1" "$dir/events.log" || { echo "FAIL: no line '$1' in the log:"; cat "$dir/events.log"; exit 1; }
}
run 3
expect "rank 0 of 2: starting at step 0 (34048 parameters)"
expect "step 3 loss"
run 4
expect "rank 1 of 2: resuming at step 2 "
expect "step 4 loss"
echo "PASS: 2 workers trained 3 steps, then resumed at the step-2 checkpoint and trained to 4"
