#!/usr/bin/env bash
# The republish (issue 29 item 5): every command that makes the published result files under results/runs, in
# the order they run, most important first. Each is resumable: running the script again reuses every finished
# run and resumes an interrupted one from its last finished stage, so it can be stopped at any point and started
# again (it spans several sessions on a 2-core CPU: about 12 h of runs in all).
#
# One version, one commit, one thread count: every run with --threads 2 (results are bit-identical for a given
# count, and the count is part of a run's key), from a checkout of one commit that nobody edits meanwhile (each
# file records the commit, "-dirty" when the tree had changes: the provenance table of results/README.md shows
# them). Run it from that checkout's root with its clbench installed, the files going to RESULTS (default
# results/) and the generated sections to the pages under PAGES (default: this checkout):
#   RESULTS=/path/to/main/results PAGES=/path/to/main nohup bash results/republish.sh > republish.log 2>&1 &
# The 0.4.0 republish writes to main's republish/ folder, committed as it goes (republish/README.md: how it
# resumes and how its files then replace results/runs).
# The last command writes RESULTS' leaderboard.*, figures/ and the pages' generated sections.
set -euo pipefail
export HF_HUB_OFFLINE=1
RESULTS=${RESULTS:-results}
PAGES=${PAGES:-.}  # the checkout whose docs pages and README get the generated sections
R=(--results-dir "$RESULTS" --threads 2 --quiet)
FAILED=0
sweep() {  # a cell that fails is listed by the sweep; the script goes on with the others and stops before step 7
  clbench sweep "${R[@]}" "$@" || FAILED=1
}
# The default stream runs every strategy. The scale axis runs the strategies the mission names with the baselines
# a reader compares them with (MISSION); base seeds and the other streams run a smaller set (FEW) so that the
# whole fits about 12 h of runs on 2 cores. Left out for that reason: the streams five-modalities and
# vision-video-audio-points (published before at 3 seeds; about 3 h more at FEW x 3 seeds).
MISSION=moextend,mmer,full-ft,align-only,lora-per-modality,replay,joint
FEW=moextend,mmer,full-ft,lora-per-modality,joint

# 1. The default stream in full: every strategy, 5 seeds, the budget curves (0.5x, 1x, 2.25x the stage's steps).
sweep --stream vision-audio --strategies all --seeds 0,1,2,3,4 --budgets 1
sweep --stream vision-audio --strategies all --seeds 0,1,2,3,4 --budgets 0.5,2.25

# 2. Matched recipes (leaderboard.RECIPE_PAIRS): MoExtend's paper phases (2.25x the examples) and full fine-tuning
#    with MoExtend's alignment share, at the same examples per stage.
sweep --stream vision-audio --strategies moextend --set phases=paper --seeds 0,1,2,3,4
sweep --stream vision-audio --strategies full-ft --set align_fraction=0.4 --seeds 0,1,2,3,4
sweep --stream vision-audio --strategies full-ft --set align_fraction=0.4444 --budgets 2.25 \
  --seeds 0,1,2,3,4

# 3. Base seed as a level of the design: the shipped bases 1 and 2.
sweep --stream vision-audio --strategies "$FEW" --base-seeds 1,2 --seeds 0,1,2

# 4. The scale axis: the same strategies on the two larger presets (their shipped bases, base seed 0).
sweep --stream vision-audio --strategies "$MISSION" --model mixtral-small --seeds 0,1,2
sweep --stream vision-audio --strategies "$MISSION" --model mixtral-medium --seeds 0,1,2

# 5. The other streams and orders, 3 seeds.
sweep --stream two-tasks-per-modality --strategies "$FEW" --seeds 0,1,2
sweep --stream two-tasks-per-modality --strategies mmer,lora-per-modality --set route=task \
  --seeds 0,1,2
sweep --stream modality-questions --strategies "$FEW" --seeds 0,1,2
for scoring in teacher-forced generated; do  # the same runs scored both ways
  sweep --stream phrase-answers --strategies "$FEW" --scoring $scoring --seeds 0,1,2
done
sweep --stream audio-vision --strategies "$FEW" --seeds 0,1,2
sweep --stream audio-vision --order vision,audio --strategies "$FEW" --seeds 0,1,2

# 6. Ablations at the current defaults: MoExtend's, one option at a time, and MMER with and without its masks
#    (retention over each modality's own fine-tuned model).
#    Each writes its table into docs/strategies.md and its findings there and into the README.
python bench/ablations.py --seeds 0 1 2 --threads 2 --results-dir "$RESULTS/ablations" \
  --page "$PAGES/docs/strategies.md" --page "$PAGES/README.md"
python bench/mmer.py --seeds 0 1 2 3 4 --threads 2 --results-dir "$RESULTS/ablations" \
  --page "$PAGES/docs/strategies.md" --page "$PAGES/README.md"

if [ "$FAILED" != 0 ]; then
  echo "some cells failed (listed above with their logs); run the script again once they are fixed" >&2
  exit 1
fi

# 7. The leaderboard, figures and the pages' sections, from every file above (runs nothing new).
clbench publish --results-dir "$RESULTS" --threads 2 --stream vision-audio --seeds 0,1,2,3,4 --budgets 0.5,1,2.25 \
  --page "$PAGES/docs/leaderboard.md" --page "$PAGES/README.md" --page "$RESULTS/README.md"
