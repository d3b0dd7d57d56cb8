#!/usr/bin/env bash
# Resume the 0.4.0 republish in the background from main's root (a new session: nothing of the last one runs):
#   bash republish/resume.sh
# Makes, where missing, a checkout of 727eb3c beside main (../republish), its venv (../republish-venv, about
# 5 minutes) and a scratch copy for the pages (../republish-pages), then starts results/republish.sh with its files
# going to this folder, and a loop that commits this folder on main every 10 minutes. Logs: ../logs/.
set -euo pipefail
MAIN=$(git rev-parse --show-toplevel)
UP=$(dirname "$MAIN")
COMMIT=727eb3c
if pgrep -f "results/republish.sh" > /dev/null; then echo "the republish is running already"; exit 1; fi
mkdir -p "$UP/logs"
git -C "$MAIN" worktree prune  # a checkout registered by an earlier machine but gone
[ -d "$UP/republish" ] || git -C "$MAIN" worktree add -q --detach "$UP/republish" "$COMMIT"
[ -d "$UP/republish-pages" ] || git -C "$MAIN" worktree add -q --detach "$UP/republish-pages" "$COMMIT"
if [ ! -x "$UP/republish-venv/bin/clbench" ]; then
  python3 -m venv "$UP/republish-venv"
  (cd "$UP/republish" && "$UP/republish-venv/bin/pip" install -q -e ".[test]")
fi
cd "$UP/republish"
PATH="$UP/republish-venv/bin:$PATH" RESULTS="$MAIN/republish" PAGES="$UP/republish-pages" \
  nohup bash results/republish.sh >> "$UP/logs/republish.log" 2>&1 &
cd "$MAIN"
nohup bash -c 'while sleep 600; do n=$(find republish -name "*.json" | wc -l); git add republish \
  && git commit -q -m "Republish (in progress): result files so far ($n files)" -- republish \
  && echo "$(date +%H:%M) committed $n"; done' >> "$UP/logs/commit-loop.log" 2>&1 &
echo "started; tail -f $UP/logs/republish.log"
