#!/usr/bin/env bash
# README command 1, twice in a row under a pseudo-terminal, as a user would type it: the first run
# makes everything; the second must reuse everything (dataset, models, finished trials) and redo nothing.
# The checks are on what each run did, not on how long it took; the durations are printed for the log.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
for run in 1 2; do
  started=$SECONDS
  # `script` gives the command a pty (progress bars, colours) and keeps the exit status (-e).
  COLUMNS=200 script -qec "bash scripts/quickstart.sh" "$logs/raw$run.txt" >/dev/null
  echo "quickstart run $run: $(( SECONDS - started )) s (log: $logs/run$run.txt)"
  # What a person read: colours and the bars' carriage-return redraws removed.
  sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\r$//' -e 's/.*\r//' "$logs/raw$run.txt" > "$logs/run$run.txt"
done
expect() {  # expect RUN PATTERN WHAT
  if ! grep -qE "$2" "$logs/run$1.txt"; then
    echo "quickstart run $1 did not $3 (no line matching '$2'); its log:" >&2
    tail -n 60 "$logs/run$1.txt" >&2
    exit 1
  fi
}
expect 1 "made local/pointmaze/umaze-dense-d4rl-v0" "make the dataset"
expect 1 "dynamics \(reverse\): trained" "train the reverse model"
expect 2 "already made local/pointmaze/umaze-dense-d4rl-v0" "reuse the dataset"
expect 2 "dynamics \(reverse\): loaded" "reuse the reverse model"
expect 2 "dynamics \(forward\): loaded" "reuse the forward model"
expect 2 "plan: 0 trials \(3 of 3 already finished\)" "keep the finished trials"
expect 2 "== done in" "finish"
if grep -qE "dynamics \((reverse|forward)\): trained" "$logs/run2.txt"; then
  echo "quickstart run 2 trained a model again" >&2; exit 1
fi
for run in 1 2; do  # the shell's own complaints (a typo in the script, a word taken for a command)
  if grep -qE "command not found|syntax error|unbound variable" "$logs/run$run.txt"; then
    echo "quickstart run $run: the shell complained:" >&2
    grep -E "command not found|syntax error|unbound variable" "$logs/run$run.txt" >&2; exit 1
  fi
done
echo "quickstart: second run reused everything"
